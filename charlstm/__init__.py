"""charlstm: character-level recurrent networks that learn to write code."""

__version__ = "0.1.0"
