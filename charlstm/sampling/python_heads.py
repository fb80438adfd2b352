"""The grammar of a Python `def` or `class` head, followed a character at a time (python_rules.py):
a name that is not a keyword; for a function, a parameter list of names with `*args`, `**kwargs`,
`/`, annotations and defaults (no non-default parameter after a default, nothing after
`**kwargs`), then `:` or `->` and an annotation; for a class, `(` and its arguments, or `:`.
Strict states say exactly what may come next; in the others (annotations, defaults, a class's
arguments, a return annotation) an expression runs free under the word rules.
"""

from __future__ import annotations

import keyword

HARD_KEYWORDS = frozenset(keyword.kwlist)
_IDENT: dict[str, bool] = {}


def is_ident(ch: str) -> bool:
    """May `ch` continue an identifier (or a number)?"""
    known = _IDENT.get(ch)
    if known is None:
        known = _IDENT[ch] = len(ch) == 1 and ("a" + ch).isidentifier()
    return known


NAME_PRE, NAME, NAME_POST = "name_pre", "name", "name_post"
P_START, P_STAR1, P_STAR2, P_NAME, P_POST = "p_start", "p_star1", "p_star2", "p_name", "p_post"
P_ANNOT, P_DEFAULT, AFTER_PARAMS, ARROW, RET = "p_annot", "p_default", "after_params", "arrow", "ret"
ARGS, CLASS_AFTER = "args", "class_after"
STRICT = frozenset(
    {NAME_PRE, NAME, NAME_POST, P_START, P_STAR1, P_STAR2, P_NAME, P_POST, AFTER_PARAMS, ARROW, CLASS_AFTER}
)


class HeadRules:
    """The def/class head part of PythonLexer's state (a mixin; python_rules.StatementRules sets
    `hdr` when a `def` or `class` begins a statement)."""

    def _header_char(self, ch: str) -> None:
        """A character (not part of a word) inside a def/class head."""
        hdr, depth = self.hdr, len(self.brackets)
        if hdr == NAME_POST or hdr == NAME:
            if ch == "(":
                self.hdr = P_START if self.hdr_kind == "def" else ARGS
            elif ch == ":":
                self.hdr = None
        elif hdr in (P_START, P_POST, P_STAR1, P_ANNOT, P_DEFAULT) and depth == 1 and ch in ",)":
            if hdr == P_STAR1:
                self.star_seen = True
            self.hdr, self.star = (P_START if ch == "," else AFTER_PARAMS), 0
        elif hdr == P_START and ch == "*":
            self.hdr, self.star = P_STAR1, 1
        elif hdr == P_START and ch == "/":  # '/' is no parameter: marked like a starred one (no '=' after it)
            self.hdr, self.star = P_POST, 3
        elif hdr == P_STAR1 and ch == "*":
            self.hdr, self.star = P_STAR2, 2
        elif (hdr == P_POST or hdr == P_ANNOT) and depth == 1 and ch == "=":
            self.hdr = P_DEFAULT
            self.default_seen = self.default_seen or self.star == 0
        elif hdr == P_POST and ch == ":":
            self.hdr = P_ANNOT
        elif hdr == AFTER_PARAMS:
            self.hdr = None if ch == ":" else ARROW if ch == "-" else hdr
        elif hdr == ARROW and ch == ">":
            self.hdr = RET
        elif (hdr == RET or hdr == CLASS_AFTER) and depth == 0 and ch == ":":
            self.hdr = None
        elif hdr == ARGS and depth == 1 and ch == ")":
            self.hdr = CLASS_AFTER

    def _needs_default(self) -> bool:
        return self.default_seen and not self.star_seen and self.star == 0

    def _header_key(self) -> tuple:
        hdr = self.hdr
        if hdr == NAME or hdr == P_NAME:
            kw = self.word in HARD_KEYWORDS
        else:
            kw = False
        return ("hdr", hdr, self.hdr_kind, kw, self.star, self._needs_default(), self.dstar)


def header_forbidden(rule: tuple, symbols: list[str]) -> set[str]:
    _, hdr, kind, kw, star, need_default, dstar = rule
    idents = {s for s in symbols if is_ident(s)}
    starts = {s for s in idents if s.isidentifier()}
    space, lines = {" ", "\t", "\\"}, {" ", "\t", "\\", "\n", "\r", "#"}
    if hdr == NAME_PRE:
        allowed = space | starts
    elif hdr in (NAME, NAME_POST):
        allowed = idents if hdr == NAME else set()
        if not kw:
            allowed = allowed | space | ({"("} if kind == "def" else {"(", ":"})
    elif hdr == P_START:
        allowed = lines | {")"} | (set() if dstar else starts | {"*", "/"})
    elif hdr == P_STAR1:
        allowed = lines | starts | {"*", ","}
    elif hdr == P_STAR2:
        allowed = lines | starts
    elif hdr in (P_NAME, P_POST):
        allowed = idents if hdr == P_NAME else set()
        if not kw:
            allowed = (
                allowed | lines | {":"} | ({"="} if star == 0 else set()) | (set() if need_default else {",", ")"})
            )
    elif hdr == AFTER_PARAMS:
        allowed = space | {":", "-"}
    elif hdr == ARROW:
        allowed = {">"}
    else:  # CLASS_AFTER
        allowed = space | {":"}
    return {s for s in symbols if s not in allowed}
