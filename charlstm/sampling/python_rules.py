"""What a character-level lexer can still rightly forbid in Python code beyond strings, brackets and
indentation: rules on words and the tokens around them, each one forbidding only text that no
continuation could make valid Python (tests/test_syntax.py feeds real code through them).

- After an operand (a name, number, string or closing bracket), the next word can only be an
  operator keyword (`if`, `in`, `is`, `and`, `not in`, …; a comprehension's `for` only inside
  brackets, `import` and `as` only in imports): two names in a row (`return x y`, prose left
  outside a docstring) never parse; after a string, a string of its kind may follow (`"a" f"b"`).
- A quote directly after a word opens a string only when the word is a string prefix (`rb"…"`).
- A statement keyword (`return`, `class`, `def`, `pass`, `import`, …) only where a statement
  begins; no keyword right after a dot (`x.class`); `and`, `or`, `is`, `as` only after an operand.
- `else`, `elif`, `except` and `finally` only at an indentation where the last statement was one
  they can follow (`if`, a loop, `try`, `except`); after a `try`'s block, only its handler.
- A `def` or `class` head follows its grammar (python_heads.py).
- A lone `=` (not `==`, `<=`, `:=`…) only outside brackets in a statement not led by a keyword, or
  as a call's keyword argument or a lambda's default; once an impossible one is written, only a
  second `=` may follow. After a keyword argument, no positional one.
- A `:` in parentheses only ends a lambda's parameters or begins a walrus after a name; outside
  brackets it ends a compound head or a lambda's parameters, or follows an annotation's target.
- A logical line cannot end (newline, comment, `;`) right after an operator or a keyword that
  needs an operand (`x = `, `a and`, `import`), nor in a compound head before its `:`; no binary
  operator or comma where no operand precedes, no closer right after an operator.
- An import holds names, dots and commas; a for statement's target, names up to its `in`.

The lexer (lexers.PythonLexer) calls `_rules_char` for every character of code and folds
`_rule_key` into its key; `rule_forbidden` turns that key into the characters forbidden.
"""

from __future__ import annotations

from .python_heads import (
    NAME,
    NAME_POST,
    NAME_PRE,
    P_ANNOT,
    P_NAME,
    P_POST,
    P_STAR1,
    P_STAR2,
    P_START,
    RET,
    STRICT,
    HeadRules,
    header_forbidden,
    is_ident,
)
from .python_words import (
    AFTER,
    AS_STATEMENTS,
    BINARY_ONLY,
    BLOCK_CONTINUATIONS,
    COMPOUND_HEADS,
    DANGLING_CHARS,
    DANGLING_WORDS,
    DOT,
    ENDINGS,
    FOLLOWS,
    FOR_TARGET,
    HARD_KEYWORDS,
    HEAD_KEYWORDS,
    IMPORT_AFTER,
    IMPORT_BEFORE,
    LINE,
    NO_ASSIGN,
    NO_LONE_EQ_AFTER,
    NUM,
    OPERAND_KEYWORDS,
    OPERATOR_CHARS,
    OTHER,
    QUOTES,
    SOFT,
    SOFT_KEYWORDS,
    STATEMENT_BINARY,
    STATEMENT_ONLY,
    STMT,
    STRING_PREFIXES,
    WORD_PREFIXES,
    WORD_SETS,
)


class StatementRules(HeadRules):
    """The word and statement state PythonLexer keeps for the rules above (a mixin)."""

    def _rules_reset(self) -> None:
        """A logical line begins."""
        self.word = ""  # the identifier or number being written
        self.word_ctx = OTHER  # where it began
        self.stmt = True  # a statement may begin here
        self.stmt_word = ""  # the first word of the current statement
        self.line_fresh = True  # nothing of the logical line written yet
        self.line_word = ""  # the logical line's first word
        self.operand = False  # the last token was an operand
        self.operand_str = False  # ... a string (another may follow)
        self.string_bytes = False  # the last string opened is bytes
        self.stars = 0  # '*' in a row
        self.num_fresh = False  # the number being written began a number (not after '.', 'e-')
        self.no_eq = False  # a '=' just ended an operator or a parameter's name: no other '=' may follow
        self.import_seen = False  # a from-import's 'import' is written
        self.in_seen = False  # a for statement's 'in' is written
        self.calls: tuple[int, ...] = ()  # the depths of the parentheses that are calls (after an operand)
        self.must = ""  # one of these words must come next (WORD_SETS), or ""
        self.soft = False  # the last word was a soft keyword at a statement's start: anything may follow
        self.after_dot = False  # the last character was a '.' (not in a number)
        self.no_assign = False  # the statement is led by a keyword: no lone '=' outside brackets
        self.head_open = False  # a compound statement's head still waiting for its ':'
        self.not_target = False  # outside brackets the statement is more than a target: no annotation ':' after it
        self.bad_target = False  # the last token was a call's ')', a number or a string: no annotation ':'
        self.lambdas: tuple[int, ...] = ()  # the bracket depths of lambdas still waiting for their ':'
        self.kw_ok = False  # the last token was a name that may take '=' (a keyword argument, a lambda default)
        self.arg_start = False  # after '(', ',' or 'lambda': a name here may be a keyword argument
        self.kwargs: tuple[int, ...] = ()  # the depths of calls that have had a keyword argument
        self.kw_tentative = 0  # the depth of a '=' that may be a keyword argument's (or begin '==')
        self.need_kw = False  # after such a call's ',': only a keyword argument (or '*', ')') may follow
        self.kw_named = False  # ... and its name is written
        self.eq_pending = False  # a lone '=' just written where only '==' (or a ':' where only ':=') is valid
        self.dangling = ""  # the last token needs an operand after it: a word ("w") or an operator ("c")
        self.prev = ""  # the previous character of code
        self.hdr = None  # the def/class head state
        self.hdr_kind = ""
        self.star = 0  # the parameter being written follows '*' (1), '**' (2), or is '/' (3)
        self.default_seen = self.star_seen = self.dstar = False

    def _word_begins(self, ch: str) -> None:
        if ch.isdigit():
            ctx = NUM
            self.num_fresh = self.prev not in ".+-"  # not a float's fraction or exponent
        elif self.stmt:
            ctx = LINE if self.line_fresh else STMT
        elif self.soft:
            ctx = SOFT
        elif self.after_dot:
            ctx = DOT
        elif self.operand:
            ctx = AFTER
        else:
            ctx = OTHER
        self.word_ctx = ctx
        hdr = self.hdr
        if hdr == NAME_PRE:
            self.hdr = NAME
        elif hdr in (P_START, P_STAR1, P_STAR2):
            self.hdr = P_NAME

    def _word_ends(self) -> None:
        word, ctx, self.word = self.word, self.word_ctx, ""
        self.dangling = "w" if word in DANGLING_WORDS and ctx != DOT else ""
        is_keyword = word in HARD_KEYWORDS and word not in OPERAND_KEYWORDS
        self.operand, self.operand_str, self.soft, self.bad_target = (
            ctx == NUM or not is_keyword,
            False,
            False,
            ctx == NUM,
        )
        self.import_seen = self.import_seen or word == "import"
        self.in_seen = self.in_seen or word == "in" and not self.brackets
        if not self.brackets and (word in HARD_KEYWORDS or ctx == NUM):
            self.not_target = True
        self.kw_named = self.need_kw
        self.kw_ok = self.arg_start and not is_keyword and ctx != NUM and word not in OPERAND_KEYWORDS
        self.arg_start, self.must, self.stmt = word == "lambda", "", False
        if word == "lambda":
            self.lambdas += (len(self.brackets),)
        elif word == "not" and ctx == AFTER:  # 'x not' goes on only as 'x not in'
            self.must = "not"
        if ctx == LINE or ctx == STMT:
            if ctx == LINE:
                self.line_word = word
            self.stmt_word, self.no_assign, self.head_open = word, word in NO_ASSIGN, word in HEAD_KEYWORDS
            self.stmt, self.soft = word == "async", word in SOFT_KEYWORDS
            if word == "def" or word == "class":
                self.hdr, self.hdr_kind, self.star = NAME_PRE, word, 0
                self.default_seen = self.star_seen = self.dstar = False
        hdr = self.hdr
        if hdr == NAME:
            self.hdr = NAME_POST
        elif hdr == P_NAME:
            self.hdr = P_POST
            if self.star:
                self.star_seen, self.dstar = True, self.dstar or self.star == 2

    def _rules_char(self, ch: str) -> None:
        """One character of code (the lexer's bracket stack not yet updated for it)."""
        if self.kw_tentative:  # the '=' before was a keyword argument's: positional ones may no longer follow
            if ch != "=":
                self.kwargs += (self.kw_tentative,)
            self.kw_tentative = 0
        if is_ident(ch) or (ch == "." and self.word_ctx == NUM and self.word):
            if not self.word:
                self._word_begins(ch)
            self.word += ch
            self.prev, self.after_dot, self.line_fresh = ch, False, False
            return
        prefixed = bool(self.word) and ch in QUOTES
        if self.word:
            if prefixed:  # a string prefix (or a keyword before a string)
                prefix = self.word
                if prefix in HARD_KEYWORDS:
                    self._word_ends()
                self.word, self.string_bytes = "", "b" in prefix or "B" in prefix
            else:
                self._word_ends()
        prev, self.prev, self.after_dot = self.prev, ch, False
        if ch in " \t\f\\" or ch in ENDINGS and (self.brackets or self.backslash):
            return
        self.line_fresh = False
        depth = len(self.brackets)
        if depth == 0 and ch not in ".([":
            self.not_target = True
        lambda_here = bool(self.lambdas) and self.lambdas[-1] == depth
        in_params = depth == 1 and (self.hdr == P_POST or self.hdr == P_ANNOT)  # a parameter's ':' or '='
        if self.hdr is not None:
            self._header_char(ch)
        body = False  # a compound statement's head ended: a statement may follow
        if (
            ch in QUOTES and not prefixed and not self.empty_quote
        ):  # a string with no prefix (not the third quote of '"""')
            self.string_bytes = False
        self.stars = (self.stars + 1 if prev == "*" else 1) if ch == "*" else 0
        self.no_eq = ch == "=" and (prev in NO_LONE_EQ_AFTER or in_params)
        call_end = ch == ")" and depth in self.calls
        if ch == "=":
            if self.eq_pending:  # '==' or ':='
                self.eq_pending = False
            elif prev not in NO_LONE_EQ_AFTER and not in_params and self._lone_eq_invalid(depth, lambda_here):
                self.eq_pending = True
            elif (
                depth in self.calls
                and prev not in NO_LONE_EQ_AFTER
                and not in_params
                and not lambda_here
                and depth not in self.kwargs
            ):
                self.kw_tentative = depth  # a keyword argument, unless '=' follows ('==')
        elif ch == ":":
            if lambda_here:  # the lambda's own colon
                self.lambdas = self.lambdas[:-1]
            elif depth == 0:
                body = self.stmt_word in COMPOUND_HEADS  # (or a walrus in a head begins: no harm)
            elif self.brackets[-1] == ")" and not in_params:  # in parentheses only ':=' holds a ':'
                self.eq_pending = True
        elif ch in ")]}" and (self.lambdas or self.kwargs or self.calls):
            self.lambdas = tuple(d for d in self.lambdas if d < depth)
            self.kwargs = tuple(d for d in self.kwargs if d < depth)
            self.calls = tuple(d for d in self.calls if d < depth)
        elif ch == "(" and self.operand:
            self.calls += (depth + 1,)
        self._punctuation(ch)
        self.bad_target = call_end
        self.need_kw = ch == "," and depth in self.kwargs and not lambda_here  # (not a lambda's parameters)
        if ch == "." and prev == "." and self.stmt_word != "from":  # '...': Ellipsis, an operand
            self.operand, self.after_dot, self.dangling = True, False, ""
        if body:
            self.stmt, self.no_assign, self.head_open, self.not_target = True, False, False, False
        elif depth == 0 and ch == ";":
            self.stmt, self.no_assign, self.lambdas, self.stmt_word, self.not_target = True, False, (), "", False
            self.import_seen = self.in_seen = False

    def _lone_eq_invalid(self, depth: int, lambda_here: bool) -> bool:
        """A '=' that is not part of '==', '<=', '+='… : is it impossible here?"""
        if depth == 0:
            return self.no_assign and not lambda_here
        return not (self.kw_ok and (lambda_here or self.brackets[-1] == ")" and depth in self.calls))

    def _punctuation(self, ch: str) -> None:
        """What any character but a word's or a space leaves behind."""
        self.dangling = "c" if ch in DANGLING_CHARS or ch == "." else ""  # (a number's '.' is the word's)
        self.operand = self.stmt = self.kw_ok = self.soft = False
        self.operand_str, self.must, self.kw_named = False, "", False
        self.arg_start = ch == "(" or ch == ","
        if ch in ")]}":
            self.operand = True
        elif ch == ".":
            self.after_dot = True

    def _string_closed(self) -> None:
        self.operand = self.bad_target = True
        self.not_target = self.not_target or not self.brackets
        self.stmt = self.line_fresh = self.kw_ok = self.arg_start = self.soft = False
        self.dangling = ""
        self.operand_str, self.must, self.prev = True, "", '"'

    def _rule_key(self, bare: bool) -> tuple:
        """What the word and statement rules forbid now: (a rule or None, a string of characters)."""
        hdr = self.hdr
        if hdr in STRICT:
            return self._header_key(), ""
        if self.eq_pending:
            return ("eq",), ""
        word, extra = self.word, ""
        if self.need_kw:
            stage = "name" if word else "eq" if self.kw_named else "start"
            return ("kwarg", stage, word in HARD_KEYWORDS), ""
        if self._colon_bad(bare, word):
            extra = ":"
        if bare and (self.head_open or hdr == RET):
            extra += "\n\r#;"
        if bare and (self.stmt_word == "import" or self.stmt_word == "from"):
            after_import = self.import_seen or word == "import"
            extra += IMPORT_AFTER if after_import and self.stmt_word == "from" else IMPORT_BEFORE
            if self.stmt_word == "from" and not after_import:
                extra += "\n\r#;"
        elif (
            bare
            and self.stmt_word == "for"
            and not self.in_seen
            and (self.operand or word)
            and word not in HARD_KEYWORDS
        ):
            extra += FOR_TARGET  # a for statement's target: names, attributes, subscripts, commas, then 'in'

        elif hdr == P_ANNOT and len(self.brackets) == 1 and self._needs_default():
            extra += ",)"
        if self.must:
            return ("words", self.must, word, True, bare), extra
        if word:
            ctx = self.word_ctx
            if ctx == AFTER:
                words = self._after_operand(bare)
                if word in WORD_PREFIXES[words]:
                    return ("words", words, word, False, bare), extra
                return None, extra
            if ctx == NUM or ctx == SOFT:
                if (
                    ctx == NUM and word[0] == "0" and self.num_fresh and word.strip("0_").isdigit()
                ):  # '0300': only as a float
                    return ("num0",), extra
                return (("num",) if ctx == NUM else None), extra
            return self._word_key(word, ctx, bare), extra
        if self.operand:
            return (None if self.soft else ("words", self._after_operand(bare), "", False, bare)), extra
        return None, extra + self._no_operand(bare)

    def _after_operand(self, bare: bool) -> str:
        """Which words may follow an operand here (a WORD_SETS name)."""
        if bare and (self.stmt_word == "from" or self.stmt_word == "import"):
            return "import" if self.import_seen else self.stmt_word
        if bare and self.stmt_word == "for" and not self.in_seen:
            return "not"  # only 'in' follows the target
        kind = ("bytes" if self.string_bytes else "str") if self.operand_str else "op"
        name = kind + ("0" if bare else "") + ("" if self.stmt_word in AS_STATEMENTS else "!")
        return name if self.stmt_word == "raise" else name + "~"

    def _no_operand(self, bare: bool) -> str:
        """Characters impossible where no operand precedes: a binary operator or a comma (unless
        the previous character makes one with it: '==', '**'…), and after an operator a closer, a
        comma, a ':' or the line's end."""
        if self.stmt and self.hdr is None and self.line_fresh:
            return ""  # (the indentation rule judges a line's first character)
        lambda_here = bool(self.lambdas) and self.lambdas[-1] == len(self.brackets)
        out = ""
        if self.dangling:
            out = ")]}" if lambda_here else ")]}," + (":" if self.dangling == "c" else "")
            if bare:
                out += "\n\r#;"
        if self.stars >= 2:
            out += "*"
        if self.no_eq:
            out += "="
        if self.prev not in OPERATOR_CHARS:
            out += "<>%&|^!" if lambda_here else "<>%&|^!,/"
            if not self.arg_start:  # (after a comma: 'a, = b' unpacks)
                out += "="
            if not bare and self.brackets[-1] == "]":  # a slice's ':' may stand alone: 'x[:, 0]'
                out = out.replace(",", "")
        return out

    def _word_key(self, word: str, ctx: str, bare: bool) -> tuple:
        head = False
        if ctx == LINE or ctx == STMT:
            head = word == "def" or word == "class"
            bad = (
                word in STATEMENT_BINARY or word in BLOCK_CONTINUATIONS and (ctx == STMT or not self._may_follow(word))
            )
        elif ctx == DOT:
            bad = word in HARD_KEYWORDS and word != "import"
        else:
            bad = word in BINARY_ONLY or word in STATEMENT_ONLY and not (word == "import" and self.stmt_word == "from")
        quote_ok = word in STRING_PREFIXES or word in HARD_KEYWORDS
        return ("word", bad, head, quote_ok, bare and word in DANGLING_WORDS)

    def _colon_bad(self, bare: bool, word: str) -> bool:
        """Would a ':' be impossible here? Outside brackets it ends a compound head, a lambda's
        parameters or an annotation's single target; in parentheses, a lambda's or a walrus after a name."""
        if word == "lambda" or self.lambdas and self.lambdas[-1] == len(self.brackets):
            return False
        if bare:
            if self.stmt_word in COMPOUND_HEADS or self.stmt or self.hdr is not None or self.line_first == "@":
                return False
            if self.no_assign or self.not_target:
                return True
            return not word and self.bad_target
        if self.brackets[-1] != ")" or self.hdr in (P_POST, P_ANNOT) and len(self.brackets) == 1:
            return False
        if word:
            return not self.arg_start or self.word_ctx == NUM or word in HARD_KEYWORDS
        return not self.kw_ok

    def _first_chars(self, column: int) -> str | None:
        """The characters a logical line starting at `column` may begin with (None: any): after a
        decorator, another or the definition; where a `try` waits for its handler, the handler; none
        below it."""
        if self.must == "deco":
            return "@dca"
        if "try" in self.blocks:
            for level, kind in zip(self.indents, self.blocks, strict=True):  # a block kind per level
                if kind == "try" and column <= level:
                    return "ef" if column == level else ""
        return None

    def _may_follow(self, word: str) -> bool:
        return self.blocks[-1] in FOLLOWS[word]


def _identifiers(symbols) -> set[str]:
    return {s for s in symbols if is_ident(s)}


def rule_forbidden(rule: tuple | None, extra: str, symbols: list[str]) -> set[str]:
    """The characters a rule key (and the extra characters beside it) forbid."""
    out = set(extra)
    if rule is None:
        return out
    kind = rule[0]
    if kind == "hdr":
        return out | header_forbidden(rule, symbols)
    if kind == "eq":
        return {s for s in symbols if s != "="}
    if kind == "dangle":
        return out | ENDINGS
    if kind == "num":
        return out | QUOTES
    if kind == "num0":  # an integer with a leading zero goes on into a float (or an imaginary)
        return out | {s for s in symbols if not is_ident(s) and s != "."}
    if kind == "kwarg":
        return out | _kwarg_forbidden(rule, symbols)
    idents = _identifiers(symbols)
    if kind == "words":
        return out | _words_forbidden(rule, symbols, idents)
    _, bad, head, quote_ok, dangle = rule  # word
    if bad:
        return {s for s in symbols if s not in idents}
    if head:
        return {s for s in symbols if s not in idents and s not in " \t\\"}
    out |= set() if quote_ok else QUOTES
    return out | ENDINGS if dangle else out


def _words_forbidden(rule: tuple, symbols: list[str], idents: set[str]) -> set[str]:
    """After an operand (or where a word must come): the word may only grow into one of a set."""
    _, name, word, required, bare = rule
    prefixes = WORD_PREFIXES[name]
    out = {s for s in idents if word + s not in prefixes}
    if word in WORD_SETS[name]:  # complete
        if word in STRING_PREFIXES:  # only a string may follow its prefix
            return out | {s for s in symbols if s not in idents and s not in QUOTES}
        return out | ENDINGS if bare and word in DANGLING_WORDS else out
    if word or required:  # only the word's letters (or, before it, spaces; before a decorated definition, '@')
        spaces = {" ", "\t", "\\"} | (set() if bare else {"\n", "\r", "#"}) if not word else set()
        if name == "deco" and not word:
            spaces.add("@")
        return out | {s for s in symbols if s not in idents and s not in spaces}
    return out if name.startswith(("str", "bytes")) else out | QUOTES


def _kwarg_forbidden(rule: tuple, symbols: list[str]) -> set[str]:
    """After a keyword argument and a comma: another keyword argument, '*', '**' or ')'."""
    _, stage, keyword_name = rule
    idents = _identifiers(symbols)
    allowed = {" ", "\t", "\\", "\n", "\r", "#"}
    if stage == "start":
        allowed |= {s for s in idents if s.isidentifier()} | {"*", ")"}
    elif stage == "name":
        allowed = idents if keyword_name else idents | allowed | {"="}
    else:
        allowed.add("=")
    return {s for s in symbols if s not in allowed}
