"""Incremental lexers that follow generated code a character at a time and say which next
characters would make it lexically impossible.

Each lexer tracks strings (quotes, escapes, triple quotes), comments and the bracket stack; the
Python one also tracks the indentation stack. `key()` names what the lexer forbids right now in a
small hashable value, so a mask row can be built once per key and reused (`LexicalMask`): the
per-character cost is a few attribute updates and a dictionary lookup. `at_rest` says whether the
text could end here with every unit closed; `boundary` reports where a top-level unit ended.

They judge lexical form (a string closed, a bracket matched, a dedent to a level that exists); the
Python one also follows words and statements (python_rules.py, python_heads.py) and forbids what
no continuation could make valid. Whether a unit parses is syntax.py's question.
"""

from __future__ import annotations

import re

from ..core.vocab import DOC_SEP, UNK
from .python_rules import StatementRules, rule_forbidden
from .python_words import block_kind

CODE, STRING, TRIPLE, COMMENT, BLOCK_COMMENT = "code", "string", "triple", "comment", "block"
OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = frozenset(OPENERS.values())
NEWLINES = frozenset("\n\r")
NEVER_FIRST = ":=<>!%&|^,;/"  # characters no Python statement begins with
# A Python line at column 0 that starts a top-level unit (a decorator joins the def or class below it).
PYTHON_UNIT_HEAD = re.compile(r"(?:@|def\b|class\b|async\s+def\b)")
PYTHON_DECORATOR = re.compile(r"@")
TAB = 8  # columns a tab advances to, as Python's tokenizer counts them

# Keys with nothing to forbid but the file separator, which is allowed only at rest.
FREE, FREE_AT_REST = ("free", False), ("free", True)


def _one_line_string_step(lexer, ch: str) -> str:
    """One character inside a one-line string (either lexer's): "quote" when it closes the string,
    "newline" when a line ends it unterminated (only a prime can do this), both back in code;
    otherwise "" and `run` counts the characters since the string opened."""
    if lexer.escaped:
        lexer.escaped = False
    elif ch == "\\":
        lexer.escaped = True
    elif ch == lexer.quote:
        lexer.mode, lexer.empty_quote = CODE, ch if lexer.run == 0 else ""
        return "quote"
    elif ch in NEWLINES:
        lexer.mode = CODE
        return "newline"
    lexer.run += 1
    return ""


def _triple_closed(lexer, ch: str) -> bool:
    """One character inside a triple-quoted string (Python's, Java's text block): True when it is
    the third closing quote in a row, which returns the lexer to code."""
    if lexer.escaped:
        lexer.escaped, lexer.run = False, 0
    elif ch == "\\":
        lexer.escaped, lexer.run = True, 0
    elif ch == lexer.quote:
        lexer.run += 1
        if lexer.run == 3:
            lexer.mode = CODE
            return True
    else:
        lexer.run = 0
    return False


class PythonLexer(StatementRules):
    """Python's lexical state: strings, comments, brackets, line continuations and indentation.

    Indentation is judged as Python's tokenizer does: a line may dedent only to a level on the
    stack, indent only after a line that ended with ':', and must indent after one. The rules on
    words and statements (python_rules.py) ride on the same state.
    """

    language = "python"

    def __init__(self):
        self.mode = CODE
        self.quote = ""  # the open string's quote character
        self.escaped = False  # the previous character was a backslash inside a string
        self.run = 0  # closing quotes seen in a row inside a triple-quoted string
        self.empty_quote = ""  # the last two characters were an empty string of this quote: a third opens a triple
        self.backslash = False  # a backslash in code: the line continues
        self.brackets: list[str] = []  # the closers expected, innermost last
        self.indents = [0]
        self.blocks: list[str | None] = [None]  # the kind of the last statement at each indentation
        self.line_start = True  # in the leading whitespace of a logical line
        self.column = 0  # its width so far
        self.expect_indent = False  # the last logical line ended with ':'
        self.last_code = ""  # the last non-blank code character of the logical line
        self.comment_line = False  # a comment that is the whole line: indentation does not count
        self.line_first = ""  # the first code character of the logical line
        self.after_decorator = False  # the last logical line was a decorator: a definition must follow
        # Unit tracking: where the current logical line began (if at column 0, at rest) and its head.
        self.position = 0
        self.line_began = -1  # position of its first character when it began at column 0; else -1
        self.head = ""  # its first few characters
        self.decorated = False  # the last top-level line was a decorator: the def below joins it
        self.boundary: int | None = None  # set by feed: a unit starts at this position (a finished line's start)
        self.line_ended = False  # set by feed: a logical line of code ended with this character
        self._rules_reset()

    def clone(self) -> PythonLexer:
        other = object.__new__(PythonLexer)
        other.__dict__.update(self.__dict__)
        other.brackets, other.indents, other.blocks = list(self.brackets), list(self.indents), list(self.blocks)
        return other

    @property
    def at_rest(self) -> bool:
        """The text could end here: outside strings and brackets, at the start of a line, no block left open."""
        return (
            self.mode == CODE
            and self.line_start
            and not self.brackets
            and not self.expect_indent
            and not self.backslash
            and not self.after_decorator
        )

    def key(self) -> tuple:
        """What the lexer forbids now, as a hashable value (see `forbidden`)."""
        if self.mode == STRING:
            return ("string", self.escaped)
        if self.mode != CODE:  # triple-quoted strings and comments take anything
            return FREE
        if self.backslash:
            return ("backslash",)
        if self.line_start and not self.comment_line:
            top, c = self.indents[-1], self.column
            if self.expect_indent:
                return ("indent", c > top, True, False, None)
            return ("indent", c in self.indents, c < top, self.at_rest, self._first_chars(c))
        rule, extra = self._rule_key(not self.brackets)
        return ("code", self.brackets[-1] if self.brackets else "", self.at_rest, rule, extra)

    def feed(self, ch: str) -> None:
        self.boundary, self.line_ended = None, False
        if ch == DOC_SEP:  # a new file: everything starts again but the count of characters read
            position = self.position
            self.__init__()
            self.position = position + 1
            return
        position, self.position = self.position, self.position + 1
        if self.mode == STRING:
            self._string(ch)
        elif self.mode == TRIPLE:
            self._triple(ch)
        elif self.mode == COMMENT:
            if ch in NEWLINES:
                self.mode = CODE
                if not self.brackets:
                    self._newline()
        elif self.line_start and not self.comment_line:
            self._leading(ch, position)
        else:
            self._code(ch)

    def _leading(self, ch: str, position: int) -> None:
        if ch == " ":
            self.column += 1
        elif ch == "\t":
            self.column = (self.column // TAB + 1) * TAB
        elif ch == "\f":
            self.column = 0
        elif ch in NEWLINES:  # a blank line
            self.column = 0
        elif ch == "#":  # a comment alone on its line leaves the indentation alone
            self.comment_line = True
            self.mode = COMMENT
        else:
            self._indent_to(self.column)
            self.line_start, self.line_first = False, ch
            if self.column == 0:
                self.line_began, self.head = position, ""
            self._code(ch)

    def _indent_to(self, column: int) -> None:
        if column > self.indents[-1]:
            self.indents.append(column)
            self.blocks.append(None)
        else:
            while column < self.indents[-1]:
                self.indents.pop()
                self.blocks.pop()
            if column != self.indents[-1]:  # only a prime can do this; follow it
                self.indents.append(column)
                self.blocks.append(None)
        if self.blocks[-1] == "try":  # its handler must follow
            self.must = "handler"
        self.expect_indent = False

    def _code(self, ch: str) -> None:
        self._rules_char(ch)
        if self.line_began >= 0 and len(self.head) < 8:
            self.head += ch
        if self.backslash and ch not in NEWLINES:
            self.backslash = False
        empty, self.empty_quote = self.empty_quote, ""
        if ch in NEWLINES:
            if self.backslash:  # an explicit continuation line
                self.backslash = False
            elif not self.brackets:
                self._newline()
            return
        if ch == "\\":
            self.backslash = True
        elif ch == "'" or ch == '"':
            if empty == ch:
                self.mode, self.quote, self.run, self.escaped = TRIPLE, ch, 0, False
            else:
                self.mode, self.quote, self.escaped, self.run = STRING, ch, False, 0
        elif ch == "#":
            self.mode = COMMENT
            return
        elif ch in OPENERS:
            self.brackets.append(OPENERS[ch])
        elif ch in CLOSERS:
            if self.brackets and self.brackets[-1] == ch:
                self.brackets.pop()
            else:  # only a prime can do this: forget the unmatched closer
                self.brackets.clear()
        if not ch.isspace():
            self.last_code = ch

    def _string(self, ch: str) -> None:
        ended = _one_line_string_step(self, ch)
        if ended == "quote":
            self.last_code = ch
            self._string_closed()
        elif ended == "newline" and not self.brackets:  # an unterminated string (only a prime can do this)
            self._newline()

    def _triple(self, ch: str) -> None:
        if _triple_closed(self, ch):
            self.last_code = ch
            self._string_closed()

    def _newline(self) -> None:
        """The end of a logical line."""
        if self.comment_line:
            self.comment_line = False
        else:
            self.line_ended = True
            self.expect_indent = self.last_code == ":"
            self.after_decorator = self.line_first == "@"
            self.blocks[-1] = block_kind(self.line_word, self.blocks[-1])
            if self.line_began >= 0:
                self._finish_top_level_line()
        self.line_start, self.column, self.last_code, self.line_began = True, 0, "", -1
        self._rules_reset()
        if self.after_decorator:
            self.must = "deco"

    def _finish_top_level_line(self) -> None:
        head = self.head
        if PYTHON_UNIT_HEAD.match(head) and not self.decorated:
            self.boundary = self.line_began
        self.decorated = bool(PYTHON_DECORATOR.match(head))

    def forbidden(self, key: tuple, symbols: list[str]) -> set[str]:
        return python_forbidden(key, symbols)


def python_forbidden(key: tuple, symbols: list[str]) -> set[str]:
    kind = key[0]
    if kind == "free":
        return set() if key[1] else {DOC_SEP}
    if kind == "string":
        return set() if key[1] else set(NEWLINES) | {DOC_SEP}
    if kind == "backslash":  # only a newline may follow a continuation backslash
        return {s for s in symbols if s not in NEWLINES}
    if kind == "indent":
        _, may_start, may_widen, rest, first = key
        blank = {" ", "\t", "\f", "#"} | NEWLINES
        out = {s for s in symbols if s not in blank} if not may_start else set(CLOSERS)
        if first is not None:  # a decorated definition, a try's handler (python_rules)
            out |= {s for s in symbols if s not in blank and s not in first}
        if may_start:  # no statement begins with a binary operator
            out |= set(NEVER_FIRST)
        if not may_widen:
            out |= {" ", "\t"}
        if not rest:
            out.add(DOC_SEP)
        return out
    _, closer, rest, rule, extra = key  # code
    out = set(CLOSERS) - {closer}
    if not rest:
        out.add(DOC_SEP)
    return out | rule_forbidden(rule, extra, symbols) if rule or extra else out


class BraceLexer:
    """The lexical state of a brace language (Java, C, C#, JavaScript, …): strings and character
    literals with escapes, Java's text blocks, // and /* */ comments, and the bracket stack.

    A top-level unit ends where a '}' closes back to the base depth: a type declaration at depth
    0, or a member when the prime opened a class body (base depth 1, where ';' ends a field too).
    """

    def __init__(self, language: str = "java"):
        self.language = language
        self.mode = CODE
        self.quote = ""
        self.escaped = False
        self.run = 0
        self.empty_quote = ""
        self.slash = False  # the previous code character was '/'
        self.star = False  # the previous block-comment character was '*'
        self.brackets: list[str] = []
        self.base = 0  # the depth at which units are members (1 inside a class body the prime opened)
        self.pending = False  # code since the last unit ended
        self.unit_start = 0  # where the unit being written began
        self.opened_at = 0  # the position after the latest opening bracket
        self.position = 0
        self.boundary: int | None = None  # set by feed: a unit ends just before this position
        self.unit_kind = "type"  # what ended there: a type declaration, a member, or the closer of a class body
        self.statement_ended = False  # set by feed: a ';', '{' or '}' inside a unit's braces (not in parentheses)

    def clone(self) -> BraceLexer:
        other = object.__new__(BraceLexer)
        other.__dict__.update(self.__dict__)
        other.brackets = list(self.brackets)
        return other

    def open_members(self) -> None:
        """Called after the prime: when it opened a class body (and nothing inside it), units are
        the body's members, the first beginning after the prime's last '{'."""
        if self.mode == CODE and self.brackets == ["}"]:
            self.base, self.pending, self.unit_start = 1, False, self.opened_at

    @property
    def at_rest(self) -> bool:
        return self.mode == CODE and len(self.brackets) <= self.base and not self.pending and not self.slash

    def key(self) -> tuple:
        if self.mode == STRING:
            return ("string", self.escaped)
        if self.mode != CODE:
            return FREE
        # Inside a class body the prime opened, samples are its members: they do not close it.
        closer = self.brackets[-1] if len(self.brackets) > self.base else ""
        return ("code", closer, self.at_rest)

    def feed(self, ch: str) -> None:
        self.boundary, self.statement_ended = None, False
        if ch == DOC_SEP:
            position = self.position
            self.__init__(self.language)
            self.position = position + 1
            return
        self.position += 1
        if self.mode == STRING:
            self._string(ch)
        elif self.mode == TRIPLE:
            self._triple(ch)
        elif self.mode == COMMENT:
            if ch in NEWLINES:
                self.mode = CODE
        elif self.mode == BLOCK_COMMENT:
            if self.star and ch == "/":
                self.mode = CODE
            self.star = ch == "*"
        else:
            self._code(ch)

    def _code(self, ch: str) -> None:
        slash, self.slash = self.slash, False
        empty, self.empty_quote = self.empty_quote, ""
        if slash and ch == "/":
            self.mode = COMMENT
            return
        if slash and ch == "*":
            self.mode, self.star = BLOCK_COMMENT, False
            return
        if ch.isspace():
            if slash:
                self.pending = True
            return
        if ch == "/":  # a comment or a division: the next character says
            self.slash = True
            return
        self.pending = True
        if ch == '"' or ch == "'":
            if empty == ch == '"' and self.language == "java":
                self.mode, self.quote, self.run, self.escaped = TRIPLE, ch, 0, False
            else:
                self.mode, self.quote, self.escaped, self.run = STRING, ch, False, 0
        elif ch in OPENERS:
            self.brackets.append(OPENERS[ch])
            self.opened_at = self.position
        elif ch in CLOSERS:
            if self.brackets and self.brackets[-1] == ch:
                self.brackets.pop()
            else:
                self.brackets.clear()
            depth = len(self.brackets)
            if depth < self.base:  # the class body the prime opened has closed: its '}' is no unit
                self.base = depth
                self._unit_ends("closer")
            elif ch == "}" and depth == self.base:
                self._unit_ends("member" if self.base else "type")
            elif ch == "}" and self.brackets[-1] == "}":
                self.statement_ended = True
        elif ch == ";" and self.base > 0 and len(self.brackets) == self.base:
            self._unit_ends("member")
        if ch in ";{" and len(self.brackets) > self.base and self.brackets[-1] == "}" and self.boundary is None:
            self.statement_ended = True

    def _unit_ends(self, kind: str) -> None:
        self.boundary, self.pending, self.unit_start, self.unit_kind = self.position, False, self.position, kind

    def _string(self, ch: str) -> None:
        _one_line_string_step(self, ch)

    def _triple(self, ch: str) -> None:
        _triple_closed(self, ch)

    def forbidden(self, key: tuple, symbols: list[str]) -> set[str]:
        kind = key[0]
        if kind == "free":
            return set() if key[1] else {DOC_SEP}
        if kind == "string":
            return set() if key[1] else set(NEWLINES) | {DOC_SEP}
        _, closer, rest = key
        out = set(CLOSERS) - {closer}
        if not rest:
            out.add(DOC_SEP)
        return out


# Languages the lexers follow, by the Pygments name a dataset records.
BRACE_LANGUAGES = ("java", "c", "cpp", "csharp", "javascript", "typescript", "kotlin")
LEXED_LANGUAGES = ("python", *BRACE_LANGUAGES)


def lexer_for(language: str | None):
    """A fresh lexer for `language`, or None when there is none."""
    if language == "python":
        return PythonLexer()
    if language in BRACE_LANGUAGES:
        return BraceLexer(language)
    return None


class LexicalMask:
    """Additive rows on the logits (0 allowed, −inf forbidden), one per lexer key, built once.

    The unknown symbol is always forbidden: it is never code (with `one_file`, so is the file
    separator). A row that would forbid every
    symbol forbids nothing instead, so drawing can always go on.
    """

    def __init__(self, symbols: list[str], lexer, device, one_file: bool = False):
        import torch

        self.symbols, self.lexer, self.device = symbols, lexer, device
        self.always = {UNK, DOC_SEP} if one_file else {UNK}  # --valid keeps a sample to one file
        self.index = {s: i for i, s in enumerate(symbols)}
        self.rows: dict[tuple, torch.Tensor] = {}

    def row(self, key: tuple):
        """The row [1, vocab] for one key."""
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = self._build(key)
        return row

    def _build(self, key: tuple):
        import torch

        banned = self.lexer.forbidden(key, self.symbols) | self.always
        ids = [self.index[s] for s in banned if s in self.index]
        row = torch.zeros(1, len(self.symbols), dtype=torch.float32)
        if len(ids) < len(self.symbols):
            row[0, ids] = float("-inf")
        return row.to(self.device)

    def rows_for(self, lexers) -> object:
        """The mask [batch, vocab] for these lexers' current states."""
        import torch

        if len(lexers) == 1:
            return self.row(lexers[0].key())
        return torch.cat([self.row(lx.key()) for lx in lexers])
