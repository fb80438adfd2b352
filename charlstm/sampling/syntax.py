"""Does generated code parse? Top-level units by language, and the parser that judges each.

A sample is cut into top-level units: in Python a `def`, `class` or decorated definition at column
0 (with any top-level statements that follow it), in a brace language a type declaration closed at
brace depth 0, or a member when the prime opened a class body. Each complete unit is parsed alone:
Python with the standard library's `ast`, brace languages with a tree-sitter grammar (the optional
extra `charlstm[syntax]`). A language with no parser is an error, never a figure.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from functools import cache

from ..core.errors import CharlstmError
from ..core.vocab import DOC_SEP
from .lexers import PYTHON_UNIT_HEAD, BraceLexer, PythonLexer

SYNTAX_EXTRA = "pip install 'charlstm[syntax]'"
# tree-sitter grammar packages by the Pygments name a dataset records: (module, its language function).
GRAMMARS = {
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "csharp": ("tree_sitter_c_sharp", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
}
PARSED_LANGUAGES = ("python", *GRAMMARS)
MEMBER_WRAPPER = ("class _ {\n", "\n}")  # a Java member parses alone inside a class body


@dataclass(frozen=True)
class Unit:
    start: int  # offsets in the sample text
    end: int
    complete: bool  # False for the last unit of a sample: it may have been cut off
    member: bool = False  # a class member (parsed inside a class body)


def check_language(language: str | None) -> str:
    """The language, when there is a parser for it; else a one-line error."""
    if language not in PARSED_LANGUAGES:
        known = ", ".join(PARSED_LANGUAGES)
        raise CharlstmError(
            f"no parser for this model's language ({language or 'unknown'}): syntax checks know {known}"
        )
    if language != "python":
        _tree_sitter_parser(language)  # fails now, with the package to install, not mid-run
    return language


def split_units(text: str, language: str, prime: str = "") -> list[Unit]:
    """The top-level units of `text` (a prime and what followed it), in order. Text before the
    first unit (imports, a licence) and a file separator's neighbourhood belong to no unit."""
    units: list[Unit] = []
    offset = 0
    documents = text.split(DOC_SEP)
    for index, document in enumerate(documents):
        last = index == len(documents) - 1
        prime_here = prime if index == 0 else ""
        found = _python_units(document) if language == "python" else _brace_units(document, language, prime_here)
        for start, end, member in found:
            complete = not (last and end == len(document))
            units.append(Unit(offset + start, offset + end, complete, member))
        offset += len(document) + 1
    return units


def _python_units(text: str) -> list[tuple[int, int, bool]]:
    """Units as Python's tokenizer sees them (a head line inside a string starts none), except that
    a head line at column 0 inside brackets left open starts one: a broken unit fails alone, it
    does not swallow the units after it."""
    lexer, starts = PythonLexer(), []
    for at, ch in enumerate(text):
        lexer.feed(ch)
        if lexer.line_began == at and not lexer.decorated and PYTHON_UNIT_HEAD.match(text, at):
            starts.append(at)
        elif ch == "\n" and lexer.mode == "code" and lexer.brackets and PYTHON_UNIT_HEAD.match(text, at + 1):
            lexer = PythonLexer()  # the open brackets were the last unit's mistake
            lexer.position = at + 1
    ends = [*starts[1:], len(text)]
    # strict=False: with no unit head, `ends` still holds the text's end, and there is no unit.
    return [(s, e, False) for s, e in zip(starts, ends, strict=False)]


def _brace_units(text: str, language: str, prime: str) -> list[tuple[int, int, bool]]:
    lexer = BraceLexer(language)
    for ch in prime:
        lexer.feed(ch)
    lexer.open_members()
    units, start = [], lexer.unit_start
    for ch in text[len(prime) :]:
        lexer.feed(ch)
        if lexer.boundary is not None:
            if lexer.unit_kind != "closer":  # the '}' that closes the prime's class is no unit
                units.append((start, lexer.boundary, lexer.unit_kind == "member"))
            start = lexer.boundary
    if text[start:].strip():
        units.append((start, len(text), lexer.base > 0))
    return units


def parse_error(unit: str, language: str, member: bool = False) -> str | None:
    """None when `unit` parses alone; else its first error, as 'line L: message'."""
    if language == "python":
        try:
            ast.parse(unit)
        except SyntaxError as exc:
            return f"line {exc.lineno}: {exc.msg}"
        except (ValueError, RecursionError, MemoryError) as exc:  # a NUL byte; nesting too deep to parse
            return f"{type(exc).__name__}: {exc}".splitlines()[0]
        return None
    source = f"{MEMBER_WRAPPER[0]}{unit}{MEMBER_WRAPPER[1]}" if member else unit
    tree = _tree_sitter_parser(language).parse(source.encode("utf-8", "surrogatepass"))
    if not tree.root_node.has_error:
        return None
    node = _first_error(tree.root_node)
    if node is None:
        return "line 1: does not parse"
    row = node.start_point[0] + 1 - (1 if member else 0)
    if node.is_missing:
        return f"line {row}: missing {node.type!r}"
    text = node.text.decode("utf-8", "replace").splitlines()[0][:30] if node.text else ""
    return f"line {row}: unexpected {text!r}" if text else f"line {row}: syntax error"


def python_prefix_error(text: str, lexer) -> str | None:
    """Can Python code that begins with `text` (ending a logical line) still parse? None when it can.

    The prefix is completed as cheaply as possible — a `pass` for a block just opened, a function
    for a decorator left waiting — and parsed; an error inside the prefix means no continuation
    can mend it, except a `try` still waiting for its `except`.
    """
    completion = ""
    if lexer.after_decorator:
        completion = " " * lexer.indents[-1] + "def _(): pass\n"
    elif lexer.expect_indent:
        completion = " " * (lexer.indents[-1] + 1) + "pass\n"
    try:
        ast.parse(text + completion)
    except SyntaxError as exc:
        if exc.msg.startswith("expected 'except' or 'finally' block"):
            return None
        return f"line {exc.lineno}: {exc.msg}"
    except (ValueError, RecursionError, MemoryError) as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


# What a brace-language prefix may still be waiting for, tried when it does not parse as it is.
BRACE_PENDING = ("", " finally {}", " while (true);")


def brace_prefix_error(text: str, lexer, language: str) -> str | None:
    """Can brace-language code that begins with `text` (a unit up to a statement's end) still
    parse? It is completed with the braces still open (and, failing that, with a `finally` for a
    `try` or a `while` for a `do`) and parsed; an error inside the prefix means no continuation can
    mend it."""
    member = lexer.base > 0
    closers = "".join(reversed(lexer.brackets[lexer.base :]))
    head, tail = MEMBER_WRAPPER if member else ("", "")
    end = len(f"{head}{text}".encode("utf-8", "surrogatepass"))
    parser, node = _tree_sitter_parser(language), None
    for pending in BRACE_PENDING:
        tree = parser.parse(f"{head}{text}{pending}\n{closers}{tail}".encode("utf-8", "surrogatepass"))
        node = _first_error(tree.root_node) if tree.root_node.has_error else None
        if node is None or node.start_byte >= end:
            return None
    return f"line {node.start_point[0] + 1 - (1 if member else 0)}: does not parse"


def _first_error(node):
    stack = [node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            return node
        if node.has_error:
            stack.extend(reversed(node.children))
    return None


@cache
def _tree_sitter_parser(language: str):
    module_name, function = GRAMMARS[language]
    try:
        import tree_sitter

        grammar = importlib.import_module(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise CharlstmError(f"checking {language} syntax needs tree-sitter and {package}: {SYNTAX_EXTRA}") from None
    return tree_sitter.Parser(tree_sitter.Language(getattr(grammar, function)()))


def judge_units(text: str, language: str, prime: str = "") -> list[tuple[Unit, str | None]]:
    """Every complete unit of a sample with its first parse error (None when it parses)."""
    return [
        (u, parse_error(text[u.start : u.end], language, u.member))
        for u in split_units(text, language, prime)
        if u.complete
    ]
