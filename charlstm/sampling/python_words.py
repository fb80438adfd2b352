"""Python's words as the constrained lexer sees them: which keywords begin statements, which may
follow an operand, which end a line unfinished, and which block each compound statement opens
(the tables python_rules.py's StatementRules reads)."""

from __future__ import annotations

import keyword

HARD_KEYWORDS = frozenset(keyword.kwlist)
OPERAND_KEYWORDS = frozenset({"None", "True", "False"})
# Keywords that begin a statement and appear nowhere else.
STATEMENT_ONLY = frozenset(
    {
        "assert",
        "break",
        "class",
        "continue",
        "def",
        "del",
        "elif",
        "except",
        "finally",
        "global",
        "import",
        "nonlocal",
        "pass",
        "raise",
        "return",
        "try",
        "while",
        "with",
    }
)
BLOCK_CONTINUATIONS = frozenset({"else", "elif", "except", "finally"})
# Words that may follow an operand.
AFTER_OPERAND = frozenset({"if", "else", "in", "not", "is", "and", "or", "for", "as", "from", "async", "import"})
# Keywords that need an operand before them (at a statement's start, or after an operator or keyword).
BINARY_ONLY = frozenset({"and", "or", "is", "as", "if", "else"})
STATEMENT_BINARY = frozenset({"and", "or", "is", "as", "in"})  # ... cannot begin a statement
STRING_PREFIXES = frozenset(
    "".join(p)
    for base in ("r", "u", "b", "f", "br", "rb", "fr", "rf")
    for p in __import__("itertools").product(*[(c, c.upper()) for c in base])
)
SOFT_KEYWORDS = frozenset({"match", "case"})  # a name at a statement's start that a name may follow
NO_ASSIGN = HARD_KEYWORDS - {
    "lambda",
    "None",
    "True",
    "False",
}  # a statement led by one holds no lone '=' outside brackets
# Statements whose ':' outside brackets ends a head, after which a statement may begin (elsewhere it
# is an annotation's or a lambda's).
COMPOUND_HEADS = frozenset(
    {"if", "elif", "else", "while", "for", "try", "except", "finally", "with", "def", "class", "async", "match", "case"}
)
DANGLING_WORDS = frozenset(
    {
        "and",
        "or",
        "not",
        "in",
        "is",
        "if",
        "elif",
        "while",
        "for",
        "with",
        "assert",
        "del",
        "import",
        "from",
        "as",
        "global",
        "nonlocal",
        "await",
        "else",
        "try",
        "except",
        "finally",
        "lambda",
        "class",
        "def",
        "async",
    }
)
DANGLING_CHARS = frozenset("=+-/%&|^<>~@!")  # a line cannot end right after one of these
# Outside brackets an import statement holds only names, dots, commas (and after a from-import's
# 'import', '(' or '*').
IMPORT_BEFORE, IMPORT_AFTER = "()[]{}=+-/%&|^<>~@!:*'\"", "[]{}=+-/%&|^<>~@!:.'\""
FOR_TARGET = "=<>!%&|^/+-*@:~;"  # impossible in a for statement's target, outside brackets
OPERATOR_CHARS = frozenset("=<>!/%&|^*+-@:~.")  # one of these may make a longer operator with the next
ENDINGS = frozenset("\n\r#;")
QUOTES = frozenset("'\"")
NO_LONE_EQ_AFTER = frozenset("=<>!:+-*/%&|^@")


def _prefixes(words) -> frozenset[str]:
    return frozenset(w[:i] for w in words for i in range(1, len(w) + 1))


# Sets of words one of which must (or may) come next, and their prefixes.
_IN_BRACKETS = AFTER_OPERAND - {"import"}  # 'import' follows an operand only in a from-import
_OUTSIDE = _IN_BRACKETS - {"for", "async"}  # a comprehension's 'for' only inside brackets
_TEXT_PREFIXES = frozenset(p for p in STRING_PREFIXES if "b" not in p.lower())  # a str may follow only a str,
_BYTES_PREFIXES = STRING_PREFIXES - _TEXT_PREFIXES  # bytes only bytes
WORD_SETS = {
    "op": _IN_BRACKETS,
    "op0": _OUTSIDE,
    "str": _IN_BRACKETS | _TEXT_PREFIXES,
    "str0": _OUTSIDE | _TEXT_PREFIXES,
    "bytes": _IN_BRACKETS | _BYTES_PREFIXES,
    "bytes0": _OUTSIDE | _BYTES_PREFIXES,
    "from": frozenset({"import"}),
    "import": frozenset({"as"}),
    "not": frozenset({"in"}),
    "deco": frozenset({"def", "class", "async"}),
    "handler": frozenset({"except", "finally"}),
}
# 'as' follows an operand only in a with, except, import or case statement: the sets without it end in '!'.
WORD_SETS.update({name + "!": words - {"as"} for name, words in list(WORD_SETS.items()) if "as" in words})
# 'from' follows an operand only in a raise statement: the sets without it end in '~'.
WORD_SETS.update({name + "~": words - {"from"} for name, words in list(WORD_SETS.items()) if "from" in words})
AS_STATEMENTS = frozenset({"with", "except", "import", "from", "case", "async"})
WORD_PREFIXES = {name: _prefixes(words) for name, words in WORD_SETS.items()}
# Compound statements whose head must end with ':' on its logical line (def and class: their own rules).
HEAD_KEYWORDS = frozenset({"if", "elif", "else", "while", "for", "try", "except", "finally", "with"})

# Where a word begins.
LINE, STMT, DOT, AFTER, OTHER, NUM, SOFT = "line", "stmt", "dot", "after", "other", "num", "soft"


# The kinds of statement `else`, `elif`, `except` and `finally` may follow, by the line's first word.
FOLLOWS = {
    "else": ("if", "loop", "except"),
    "elif": ("if",),
    "except": ("try", "except"),
    "finally": ("try", "except", "tryelse"),
}
BLOCK_KINDS = {
    "if": "if",
    "elif": "if",
    "for": "loop",
    "while": "loop",
    "async": "loop",
    "try": "try",
    "except": "except",
}


def block_kind(first_word: str, before: str | None) -> str:
    """The kind of a finished logical line at its indentation, by its first word (`before`: the
    kind of the statement before it there)."""
    if first_word == "else":
        return "tryelse" if before == "except" else "other"
    return BLOCK_KINDS.get(first_word, "other")
