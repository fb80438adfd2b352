"""Per-character features of source code: the hypotheses a neuron's activation is compared with.

Every feature maps a text to one number per character, ``values[t]`` describing the text *as read
up to and including character t* (a recurrent network only ever sees the past, so the features do
not look ahead either):

- ``indent``   indentation of the current line in columns. Inside the leading whitespace it is the
               indentation reached so far; from the first non-blank character to the newline it is
               the line's indentation. A tab advances to the next multiple of ``TAB_WIDTH`` columns.
- ``column``   the character's column in its line, 0-based (tabs expanded the same way).
- ``string``   1 inside a string literal (quotes and prefixes included), else 0.
- ``comment``  1 inside a comment, else 0.
- ``brackets`` nesting depth of (), [] and {} after the character, counting only brackets outside
               strings and comments (never below 0, so unbalanced excerpts still work).
- ``spaces``   position within a run of spaces: 1 at a run's first space, 2 at its second, …; 0 on
               any other character.
- ``regex:PATTERN``  1 on characters inside a match of PATTERN (Python syntax, MULTILINE), else 0.

Strings and comments come from the Pygments lexer of the corpus's language, run separately on each
document (documents are joined by the DOC_SEP symbol).
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from ..core.errors import CharlstmError
from ..core.vocab import DOC_SEP

TAB_WIDTH = 4
FEATURES = ("indent", "column", "string", "comment", "brackets", "spaces")
BINARY = frozenset({"string", "comment"})  # plus every regex: feature
OPEN, CLOSE = "([{", ")]}"


def feature_names_help() -> str:
    return ", ".join(FEATURES) + ", regex:PATTERN"


def is_binary(name: str) -> bool:
    return name in BINARY or name.startswith("regex:")


def validate_feature(name: str) -> str:
    """Return `name` if it is a known feature (a regex must compile), else raise a clear error."""
    if name.startswith("regex:"):
        pattern = name[len("regex:") :]
        if not pattern:
            raise CharlstmError("regex: needs a pattern, e.g. regex:\\bif\\b")
        try:
            re.compile(pattern, re.MULTILINE)
        except re.error as exc:
            raise CharlstmError(f"invalid regex {pattern!r}: {exc}") from None
        return name
    if name not in FEATURES:
        raise CharlstmError(f"unknown feature {name!r}; choose one of {feature_names_help()}")
    return name


def compute_feature(name: str, text: str, language: str | None = None) -> np.ndarray:
    """One float per character of `text` (see the module docstring for each feature)."""
    validate_feature(name)
    if name == "indent":
        return indent(text)
    if name == "column":
        return column(text)
    if name == "spaces":
        return spaces(text)
    if name.startswith("regex:"):
        return regex(text, name[len("regex:") :])
    labels = syntax_labels(text, language)
    if name == "string":
        return (labels == STRING).astype(np.float32)
    if name == "comment":
        return (labels == COMMENT).astype(np.float32)
    return brackets(text, labels)


# ----- layout features ---------------------------------------------------------------------------


def advance_column(col: int, ch: str) -> int:
    """The column after `ch` at column `col` (a tab stops at the next multiple of TAB_WIDTH)."""
    return (col // TAB_WIDTH + 1) * TAB_WIDTH if ch == "\t" else col + 1


def column(text: str) -> np.ndarray:
    out = []
    col = 0
    for ch in text:
        out.append(col)
        col = 0 if ch in ("\n", DOC_SEP) else advance_column(col, ch)
    return np.array(out, dtype=np.float32)


def indent(text: str) -> np.ndarray:
    out = []
    width, leading = 0, True  # indentation so far; still inside the leading whitespace?
    for ch in text:
        if leading and ch in " \t":
            width = advance_column(width, ch)
        else:
            leading = False
        out.append(width)
        if ch in ("\n", DOC_SEP):
            width, leading = 0, True
    return np.array(out, dtype=np.float32)


def spaces(text: str) -> np.ndarray:
    out = []
    run = 0
    for ch in text:
        run = run + 1 if ch == " " else 0
        out.append(run)
    return np.array(out, dtype=np.float32)


def regex(text: str, pattern: str) -> np.ndarray:
    out = np.zeros(len(text), dtype=np.float32)
    for m in re.finditer(pattern, text, re.MULTILINE):
        out[m.start() : m.end()] = 1.0
    return out


# ----- syntax features (Pygments) ----------------------------------------------------------------

CODE, STRING, COMMENT = 0, 1, 2


@lru_cache(maxsize=8)
def _lexer(language: str | None):
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    # stripnl/ensurenl off: token offsets must line up with our characters exactly.
    for name in (language, "python"):
        if not name:
            continue
        try:
            return get_lexer_by_name(name, stripnl=False, ensurenl=False, stripall=False, tabsize=0)
        except ClassNotFound:
            continue
    raise CharlstmError("no Pygments lexer available")  # unreachable: Pygments always has python


def lexer_name(language: str | None, text: str = "") -> str:
    """The Pygments lexer used for `language`: itself when Pygments knows it, else a guess from
    the text if it names a common programming language, else python. (Pygments' guess for a short
    excerpt of code is often a rare lexer: TeraTerm macros for a Python function.)"""
    from pygments.lexers import get_lexer_by_name, guess_lexer
    from pygments.util import ClassNotFound

    from ..corpus.sources import LANGUAGES

    if language:
        try:
            get_lexer_by_name(language)
            return language
        except ClassNotFound:
            pass
    if text.strip():
        try:
            guessed = guess_lexer(text[:20000])
            if guessed.aliases and guessed.aliases[0] in LANGUAGES.values():
                return guessed.aliases[0]
        except ClassNotFound:
            pass
    return "python"


def syntax_labels(text: str, language: str | None = None) -> np.ndarray:
    """CODE / STRING / COMMENT for every character, from the lexer for `language` (read-only).

    The last few texts' labels are kept: the explorer asks for string, comment and brackets over
    one text, and lexing is the slow part of each (seconds for 100k characters)."""
    return _syntax_labels(text, language)


@lru_cache(maxsize=2)  # one int8 per character of a text the caller holds anyway
def _syntax_labels(text: str, language: str | None) -> np.ndarray:
    from pygments.token import Comment, String

    lexer = _lexer(lexer_name(language, text))
    labels = np.zeros(len(text), dtype=np.int8)
    start = 0
    for doc in text.split(DOC_SEP):  # a new file starts outside any string or comment
        for offset, token, value in lexer.get_tokens_unprocessed(doc):
            if token in String:
                labels[start + offset : start + offset + len(value)] = STRING
            elif token in Comment and token not in Comment.Preproc and token not in Comment.PreprocFile:
                labels[start + offset : start + offset + len(value)] = COMMENT
        start += len(doc) + 1
    labels.flags.writeable = False
    return labels


def brackets(text: str, labels: np.ndarray | None = None) -> np.ndarray:
    if labels is None:
        labels = syntax_labels(text)
    out = []  # a list, then one array: setting numpy elements one by one costs more than the loop
    depth = 0
    for ch, code in zip(text, (labels == CODE).tolist(), strict=True):
        if ch == DOC_SEP:
            depth = 0
        elif code:
            if ch in OPEN:
                depth += 1
            elif ch in CLOSE:
                depth = max(depth - 1, 0)
        out.append(depth)
    return np.array(out, dtype=np.float32)
