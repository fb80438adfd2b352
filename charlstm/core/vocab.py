"""The character vocabulary shared by datasets, checkpoints, sampling and inspection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import CharlstmError

# Two reserved symbols come first in every vocabulary. ASCII's own "file separator" marks the
# boundary between documents, so the model learns where files start; the Unicode replacement
# character stands for rare characters and for bytes that were not valid UTF-8.
DOC_SEP = "\x1c"
UNK = "\ufffd"
SPECIALS = (DOC_SEP, UNK)
NEWLINE_MARK = "↵"  # how every view marks a newline (the terminal, the pages, --watch)


class Vocab:
    """An ordered list of symbols (single characters) and the lookups both ways."""

    def __init__(self, symbols: Sequence[str]):
        symbols = list(symbols)
        odd = [s for s in symbols if not (isinstance(s, str) and len(s) == 1)]
        if odd:
            raise CharlstmError(f"vocabulary symbols must be single characters, got {odd[0]!r}")
        lone = [s for s in symbols if "\ud800" <= s <= "\udfff"]
        if lone:  # no UTF-8 text holds one: it could be neither read nor written (an edited file)
            raise CharlstmError(f"vocabulary holds a lone surrogate {lone[0]!r}, which no UTF-8 text can contain")
        if symbols[: len(SPECIALS)] != list(SPECIALS):
            raise CharlstmError("vocabulary does not start with the reserved symbols")
        if len(set(symbols)) != len(symbols):
            raise CharlstmError("vocabulary has duplicate symbols")
        self.symbols = symbols
        self.index = {s: i for i, s in enumerate(symbols)}
        self.doc_sep = self.index[DOC_SEP]
        self.unk = self.index[UNK]

    @classmethod
    def from_counts(cls, counts: dict[str, int], min_count: int = 1) -> Vocab:
        """Specials, then every character seen at least `min_count` times, by code point."""
        kept = sorted(ch for ch, n in counts.items() if n >= min_count and ch not in SPECIALS)
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.symbols)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.symbols == other.symbols

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned type that holds every token id."""
        return np.dtype(np.uint8) if len(self) <= 256 else np.dtype(np.uint16)

    def encode(self, text: str) -> np.ndarray:
        """Token ids for `text`; characters outside the vocabulary become UNK."""
        get, unk = self.index.get, self.unk
        return np.fromiter((get(ch, unk) for ch in text), dtype=np.int64, count=len(text))

    def unknown_chars(self, text: str) -> list[str]:
        """Distinct characters of `text` the vocabulary does not know, in order of appearance."""
        return list(dict.fromkeys(ch for ch in text if ch not in self.index))

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.symbols[i] for i in ids)
