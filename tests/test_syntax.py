"""Code that parses: the lexers and their mask, units and parsers by language, constrained and
syntax-checked drawing, and the parse rate as a measure."""

from __future__ import annotations

import ast
import json
import string

import pytest
import torch
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.core.model import CharRNN, ModelConfig
from charlstm.core.vocab import DOC_SEP, SPECIALS, UNK, Vocab
from charlstm.evaluation.syntax_eval import syntax_rate
from charlstm.sampling import constrained, syntax
from charlstm.sampling.constrained import restore_snapshot, take_snapshot
from charlstm.sampling.draw import DrawRule
from charlstm.sampling.lexers import BraceLexer, LexicalMask, PythonLexer
from charlstm.sampling.sample import Sampler, SampleSettings
from charlstm.sampling.syntax import judge_units, parse_error, python_prefix_error, split_units
from conftest import JAVA_SNIPPET, PYTHON_SNIPPET

pytestmark = pytest.mark.usefixtures("one_thread")

PY_UNITS = '''import os


def good(x):
    """A docstring with def inside:
def not_a_unit(
    """
    return (x, "(")  # ) not a closer


@decorated
def also_good():
    pass


def bad() x:
    pass


class Tail:
'''

JAVA_BODY = """public class Example {

    public int one() { return "}".length(); }

    int broken = ;

    /* } not a closer */ String s = "a\\"b";

    void last() {"""


def fed(lexer, text: str):
    for ch in text:
        lexer.feed(ch)
    return lexer


def forbidden_now(lexer, symbols) -> set[str]:
    return lexer.forbidden(lexer.key(), symbols)


SYMBOLS = [*SPECIALS, *"\n \t()[]{}'\"#:\\abcdefxyz=;/*.,@"]


# ----- the lexers -----------------------------------------------------------------------------------


def test_python_brackets_inside_strings_and_comments_are_not_brackets():
    lexer = fed(PythonLexer(), "x = (\"(\", '[', # {\n")
    assert lexer.brackets == [")"] and lexer.mode == "code"
    assert forbidden_now(lexer, SYMBOLS) >= {"]", "}"} and ")" not in forbidden_now(lexer, SYMBOLS)
    fed(lexer, "1)\n")
    assert lexer.brackets == [] and lexer.at_rest


def test_python_escaped_quotes_and_triple_quoted_strings():
    lexer = fed(PythonLexer(), 'a = "say \\"hi\\" \\\\')
    assert lexer.mode == "string"
    assert "\n" in forbidden_now(lexer, SYMBOLS)  # a one-line string cannot take a newline
    fed(lexer, '"\nb = """line one\n')
    assert lexer.mode == "triple" and forbidden_now(lexer, SYMBOLS) == {DOC_SEP}  # newlines welcome
    fed(lexer, 'two "" still open\n')
    assert lexer.mode == "triple"
    fed(lexer, '"""\n')
    assert lexer.mode == "code" and lexer.at_rest
    assert fed(PythonLexer(), "x = ''\n").mode == "code"  # an empty string, not a triple quote


def test_python_indentation_after_a_colon_and_after_continuation_lines():
    lexer = fed(PythonLexer(), "def f(a,\n")
    assert lexer.brackets == [")"] and not lexer.line_start  # inside brackets indentation is free
    fed(lexer, "        b):\n")
    assert lexer.expect_indent and not lexer.at_rest
    assert "x" in forbidden_now(lexer, SYMBOLS)  # a block must be indented
    fed(lexer, "    ")
    assert "x" not in forbidden_now(lexer, SYMBOLS)
    fed(lexer, "x = 1 + \\\n")
    assert lexer.indents == [0, 4] and not lexer.line_start  # a backslash continues the line
    fed(lexer, "  2\n  ")
    assert lexer.line_start and lexer.column == 2
    assert "y" in forbidden_now(lexer, SYMBOLS)  # a dedent to column 2, a level never opened
    assert " " not in forbidden_now(lexer, SYMBOLS)  # column 4 can still be reached
    fed(lexer, "   ")
    assert {"y", " "} <= forbidden_now(lexer, SYMBOLS)  # column 5: no level there, none deeper
    assert "\n" not in forbidden_now(lexer, SYMBOLS)  # a blank line is always possible
    lexer = fed(PythonLexer(), "def f():\n    x\n    ")
    fed(lexer, "y\n")
    assert "y" not in forbidden_now(lexer, SYMBOLS) and lexer.at_rest  # back to column 0


def test_after_a_backslash_only_a_newline():
    lexer = fed(PythonLexer(), "x = 1 \\")
    assert forbidden_now(lexer, SYMBOLS) == {s for s in SYMBOLS if s != "\n"}


# ----- what the Python lexer forbids beyond strings, brackets and indentation (python_rules.py) ---------

PRINTABLE = [*SPECIALS, *string.printable]


def allowed_after(prefix: str, ch: str) -> bool:
    return ch not in forbidden_now(fed(PythonLexer(), prefix), PRINTABLE)


@pytest.mark.parametrize(
    "prefix, ch, allowed",
    [
        # after an operand, only an operator keyword (or, after a string, another string)
        ("x = a ", "b", False),
        ("x = a ", "i", True),
        ("x = a i", "n", True),
        ("x = a i", "x", False),
        ("x = 'a' ", "f", True),
        ("x = 'a' f", "'", True),
        ("x = 'a' ", "'", True),
        ("x = 1 ", "'", False),
        ("x = f(1) ", "y", False),
        ("x = f(1) ", "o", True),
        ("    Returns the ", "v", False),
        ("x = ab", "'", False),
        ("x = rb", "'", True),
        ("return", "'", True),
        ("x = a not ", "(", False),
        ("x = a not ", "i", True),
        ("x = a is not ", "(", True),
        # statement keywords where statements begin; no keyword after a dot
        ("x = return", " ", False),
        ("x = retur", "n", True),
        ("x = returns", " ", True),
        ("if x: return", " ", True),
        ("x.class", "(", False),
        ("from . import", " ", True),
        ("from .import", " ", True),
        ("x = (and", " ", False),
        # else, elif, except and finally follow what they can follow
        ("x = 1\nelse", ":", False),
        ("if x:\n    y\nelse", ":", True),
        ("for a in b:\n    y\nelse", ":", True),
        ("if x:\n    y\nexcept", " ", False),
        ("try:\n    y\nexcept", ":", True),
        ("try:\n    y\nexcept E:\n    z\nfinally", ":", True),
        ("if x:\n    y\n\n    # c\nelif", " ", True),
        ("if x:\n    if y:\n        z\n    w\nelse", ":", True),
        # def and class heads
        ("def f", "(", True),
        ("def f", "=", False),
        ("def f", "\n", False),
        ("def class", "(", False),
        ("def f(", "1", False),
        ("def f(", "'", False),
        ("def f(a.", "b", False),
        ("def f(a", ".", False),
        ("def f(a=1, b", ")", False),
        ("def f(a=1, b", "=", True),
        ("def f(a=1, *, b", ")", True),
        ("def f(a=1, /", ")", True),
        ("def f(*args", "=", False),
        ("def f(**kw, ", "a", False),
        ("def f(a: int", " ", True),
        ("def f(x=1, a: int", ")", False),
        ("def f(x=1, a: int = 2", ")", True),
        ("def f()", "\n", False),
        ("def f()", ":", True),
        ("def f() -", ">", True),
        ("def f() -", " ", False),
        ("def f() -> int", "\n", False),
        ("class A", "=", False),
        ("class A", ":", True),
        ("class A(B)", ".", False),
        # a lone '=' in a statement led by a keyword, or inside brackets but after a keyword argument's name
        ("return x =", " ", False),
        ("return x =", "=", True),
        ("x = y =", " ", True),
        ("if x <=", " ", True),
        ("return lambda a=", "1", True),
        ("f(a.b=", "1", False),
        ("f(a, b=", "1", True),
        ("[a=", "1", False),
        # after a keyword argument, only keyword arguments, '*' or '**'
        ("f(a=1, ", "b", True),
        ("f(a=1, ", "'", False),
        ("f(a=1, b", ")", False),
        ("f(a=1, b ", "=", True),
        ("f(a=1, ", "*", True),
        ("f(a=1, ", ")", True),
        ("f(a=1, *b, ", "c", True),
        ("f(a=1, g(x, ", "'", True),
        ("f(a==1, ", "'", True),
        ("f(x, a == 1, ", "'", True),
        # ':' in parentheses only for a lambda or a walrus after a name; outside brackets, heads and annotations
        ("f(x", ":", True),
        ("f(x:", "=", True),
        ("f(x:", " ", False),
        ("f(x.y", ":", False),
        ("f(lambda", ":", True),
        ("print(x)", ":", False),
        ("x", ":", True),
        ("x.y[0]", ":", True),
        ("return x", ":", False),
        ("x = 1", ":", False),
        ("(x)", ":", True),
        ("if x", ":", True),
        ("lambda", ":", True),
        # a head must end with ':'; a line cannot end after an operator
        ("if x", "\n", False),
        ("if x:", "\n", True),
        ("try", "\n", False),
        ("with a as b", "#", False),
        ("x = ", "\n", False),
        ("x = a and", "\n", False),
        ("x = 1,", "\n", True),
        ("x = (a and", "\n", True),
        ("x = 1 +", "\n", False),
        ("x = 1 + \\", "\n", True),
        # an import holds names; a try's handler follows it
        ("import a", "(", False),
        ("import a", ".", True),
        ("from a import", " ", True),
        ("from a import ", "(", True),
        ("from a ", "=", False),
        ("from a import b", ".", False),
        ("import a ", "i", False),
        ("from a ", "i", True),
        ("try:\n    x\n", "y", False),
        ("try:\n    x\n", "e", True),
        ("try:\n    x\ne", "l", False),
        ("try:\n    x\nfi", "n", True),
        ("def f():\n    try:\n        x\n", "y", False),
        ("try:\n    x\n", "#", True),
        ("x", ":", True),
        ("x = 1 + y", ":", False),
        ("return x", ":", False),
        ("'a'", ":", False),
        ("a.b[1]", ":", True),
        ("for x ", "i", True),
        ("for x ", "=", False),
        ("for x", "=", False),
        ("for x.y", "[", True),
        ("for x, y ", "o", False),
        ("for (a, b) ", "i", True),
        ("for x in", "-", True),
        ("from a.b", "\n", False),
        ("from a import b", "\n", True),
        ("while (a, b=", "1", False),
        ("x = (a=", "1", False),
        ("f(a)(b=", "1", True),
        ("x = 'a' ", "b", False),
        ("x = b'a' ", "b", True),
        ('x = b"""a""" ', "r", True),
        ('x = """a""" ', "b", False),
        ("from a import b ", "i", False),
        ("x = 1.5", ".", True),
        ("x = a **", "*", False),
        ("x = a *", "*", True),
        ("def f(a=", "=", False),
        ("x ==", "=", False),
        ("f(a=", "=", True),
        ("", ":", False),
        ("if x:\n    ", "=", False),
        ("if x:\n    ", "*", True),
        ("read ", "a", True),
        ("read a", "s", False),
        ("with a ", "a", True),
        ("with a a", "s", True),
        ("from a ", "a", False),
        ("import a a", "s", True),
        ("except E a", "s", True),
        ("x = 0300", "\n", False),
        ("x = 0300", ".", True),
        ("x = 00", "\n", True),
        ("x = a.", "\n", False),
        ("x = ...", "\n", True),
        ("x = a ", "f", False),
        ("raise a ", "f", True),
        ("x = [a ", "f", True),
        # after a decorator, another decorator or the definition
        ("@property\n", "x", False),
        ("@property\n", "d", True),
        ("@property\n", "@", True),
        ("@property\nde", "l", False),
    ],
)
def test_python_rules_forbid_what_cannot_parse(prefix, ch, allowed):
    assert allowed_after(prefix, ch) == allowed, (prefix, ch)


TRICKY_PYTHON = '''from ..pkg import mod
from . import x
from .import y
from ._x import(a, b)
x: None = None
y = ...
z = ... if x else y
if (n := len(x)) > 1: return"x"
while chunk := f.read(): pass
f = lambda a, b=2, *c, d=3, **e: (a, b)
g(lambda: 0, key=lambda k, j=1: k[0], *args, **{"a": 1})
@d := null
async def h(a, /, b=1, *args, c, d=2, **kw) -> dict[str, int]:
    async for i in aiter():
        pass
    else:
        pass
    [i async for i in x if i]
    return (yield from g()) if a is not b and c not in d else not e
class A(B, metaclass=M): pass
match command.split():
    case [action, *rest] if action in "ab":
        pass
    case {"x": 1, **kw} | Point(x=0):
        pass
match = re.match(x, y); case = 1
try:
    pass
except* E as e:
    pass
else:
    pass
finally:
    pass
@a.b(c=1)

@d
def deco(): ...
x = [a for a in b if a]; y = {k: v for k, v in d.items()}
for i, (a, b[0].c), in-x: f(a)(b=1).d: int = (y := 2)
raise E from None; x = 0300.5 + 00 + 0_0 + 0300j + 0e1 + 1E-05 + .001
z = b"""a""" rb'c' + "a" f'b' + 1.5e-3j ** -x ** 2 // 3 * 4*5*6 + 1.5.real; y >>= 1; x **= 2
print(f"{x=}", "a" "b" r"c", end="")
'''


def test_python_rules_let_real_code_through():
    """Everything the rules forbid must be invalid: real code (tricky snippets and whole stdlib
    modules) never meets a forbidden character, and no state forbids every character."""
    import argparse
    import dataclasses
    import inspect
    import typing

    ast.parse(TRICKY_PYTHON)
    texts = [TRICKY_PYTHON, *(inspect.getsource(m) for m in (argparse, dataclasses, typing, inspect))]
    lexer, rows = PythonLexer(), {}
    for text in texts:
        for at, ch in enumerate(text):
            key = lexer.key()
            if key not in rows:
                rows[key] = lexer.forbidden(key, PRINTABLE)
                assert len(rows[key] | {UNK, DOC_SEP}) < len(PRINTABLE), key
            if key[0] != "indent":  # (the indentation rule forbids an over-indented comment line)
                assert ch not in rows[key], (text[max(0, at - 60) : at], ch, key)
            lexer.feed(ch)
        lexer.feed(DOC_SEP)
    assert len(rows) > 100  # the rules had states to tell apart


def test_java_strings_chars_and_comments_hide_brackets():
    lexer = fed(BraceLexer("java"), 'class A { String s = "}\\"{"; char c = \'}\'; // }\n /* { */ int[] x')
    assert lexer.brackets == ["}"] and lexer.mode == "code"
    assert forbidden_now(lexer, SYMBOLS) >= {")", "]"} and "}" not in forbidden_now(lexer, SYMBOLS)
    fed(lexer, ' = """\n  text } block\n  """;')
    assert lexer.brackets == ["}"] and lexer.mode == "code"
    fed(lexer, "}")
    assert lexer.boundary is not None and lexer.unit_kind == "type" and lexer.at_rest


def test_java_members_are_units_when_the_prime_opens_a_class_body():
    units = judge_units(JAVA_BODY, "java", "public class Example {\n\n    public ")
    texts = [(JAVA_BODY[u.start : u.end].strip(), u.member, error is None) for u, error in units]
    assert texts == [
        ('public int one() { return "}".length(); }', True, True),
        ("int broken = ;", True, False),
        ('/* } not a closer */ String s = "a\\"b";', True, True),
    ]  # the last member is cut off: not counted


def test_java_members_do_not_close_the_class_the_prime_opened():
    lexer = fed(BraceLexer("java"), "class A {\n    ")
    lexer.open_members()
    assert "}" in forbidden_now(lexer, SYMBOLS)
    fed(lexer, "void f() {")
    assert "}" not in forbidden_now(lexer, SYMBOLS) and lexer.statement_ended


def test_python_units_follow_the_tokenizer():
    units = judge_units(PY_UNITS, "python", "import os\n\n\ndef ")
    heads = [(PY_UNITS[u.start : u.end].splitlines()[0], error is None) for u, error in units]
    assert heads == [("def good(x):", True), ("@decorated", True), ("def bad() x:", False)]
    assert not split_units(PY_UNITS, "python")[-1].complete  # `class Tail:` may have been cut off
    # A bracket left open breaks its own unit only; a string left open swallows what follows.
    text = 'def a(x:\n    pass\n\ndef b():\n    s = """\ndef c():\n"""\n    return 1\n\ndef d(\n'
    assert [(text[u.start : u.start + 5], e is None) for u, e in judge_units(text, "python")] == [
        ("def a", False),
        ("def b", True),
    ]
    # A file separator ends a unit: the one before it is complete.
    assert split_units("def a():\n    pass\n" + DOC_SEP + "x = 1\n", "python")[0].complete


def test_parse_errors_name_the_line_and_a_language_without_a_parser_is_an_error():
    assert parse_error("def f(:\n    pass\n", "python").startswith("line 1:")
    assert parse_error("void f() { int x = ; }", "java", member=True).startswith("line 1:")
    assert parse_error("class A { }", "java") is None
    with pytest.raises(syntax.CharlstmError, match="no parser"):
        syntax.check_language("haskell")


def test_a_prefix_is_rejected_only_when_no_continuation_can_mend_it():
    def error(text):
        return python_prefix_error(text, fed(PythonLexer(), text))

    assert error("def f(x):\n") is None  # a block waiting for its body
    assert error("class A:\n    @property\n") is None  # a decorator waiting for its function
    assert error("def f():\n    try:\n        x = 1\n") is None  # a try waiting for its except
    assert error("def __init__:\n") is not None
    assert error("def f():\n    return x y\n") is not None


def test_a_java_prefix_is_rejected_only_when_no_continuation_can_mend_it():
    from charlstm.sampling.syntax import brace_prefix_error

    def error(body):
        lexer = fed(BraceLexer("java"), "class A {\n")
        lexer.open_members()
        return brace_prefix_error(fed(lexer, body) and "\n" + body, lexer, "java")

    assert error("    int f() {\n        int x = 1;") is None
    assert error("    int f() {\n        try {\n            g();\n        }") is None  # a try waiting for its catch
    assert error("    int f() {\n        int x = = 1;") is not None
    assert error("    Object field {") is not None


# ----- the mask ------------------------------------------------------------------------------------


def test_the_mask_is_additive_and_never_forbids_every_character():
    vocab = Vocab([*SPECIALS, ")", "]", "a", "\n"])
    lexer = fed(PythonLexer(), "(")
    mask = LexicalMask(vocab.symbols, lexer, torch.device("cpu"))
    row = mask.rows_for([lexer])[0]
    allowed = {s for s, v in zip(vocab.symbols, row.tolist(), strict=True) if v == 0}
    assert allowed == {")", "a", "\n"} and row[vocab.index[UNK]] == float("-inf")
    only_closers = Vocab([*SPECIALS, "]"])
    lexer = fed(PythonLexer(), "(")
    row = LexicalMask(only_closers.symbols, lexer, torch.device("cpu")).rows_for([lexer])[0]
    assert (row == 0).all()  # nothing left to draw: forbid nothing rather than everything


def lively_sampler(path, language: str) -> Sampler:
    sampler, _ = Sampler.from_checkpoint(path, precision="fp32")
    sampler.language = language
    return sampler


@pytest.mark.parametrize("language", ["python", "java"])
def test_constrained_text_never_holds_a_forbidden_character(lively_checkpoint, language):
    sampler = lively_sampler(lively_checkpoint, language)
    settings = SampleSettings(
        length=300, temperature=1.5, seed=4, num_samples=3, constrain=True, top_k=30, interventions=()
    )
    texts = sampler.sample_texts(settings)
    forbade = 0
    for text in texts:
        lexer = PythonLexer() if language == "python" else BraceLexer("java")
        for ch in text:
            banned = lexer.forbidden(lexer.key(), sampler.vocab.symbols) | {UNK}
            forbade += bool(banned - {DOC_SEP})
            assert ch not in banned, (text, ch)
            lexer.feed(ch)
        assert len(text) >= 300 and (lexer.at_rest or len(text) == 300 + constrained.CLOSE_ALLOWANCE)
    assert forbade > 0  # the mask had work to do
    assert sampler.sample_texts(settings) == texts  # same seed, same text


def test_a_mask_that_forbids_nothing_draws_the_plain_text(lively_checkpoint, monkeypatch):
    sampler = lively_sampler(lively_checkpoint, "python")
    plain = sampler.sample_texts(SampleSettings(length=200, seed=9, num_samples=2))
    monkeypatch.setattr(LexicalMask, "_build", lambda self, key: torch.zeros(1, len(self.symbols)))
    free = sampler.sample_texts(SampleSettings(length=200, seed=9, num_samples=2, constrain=True))
    assert [t[:200] for t in free] == plain


def test_constrain_works_with_clamps_and_refuses_beam(lively_checkpoint):
    from charlstm.core.units import parse_interventions

    sampler = lively_sampler(lively_checkpoint, "java")
    clamp = parse_interventions(["1:3=0.5"], None)
    text = sampler.sample_texts(SampleSettings(length=100, seed=1, constrain=True, interventions=clamp))[0]
    assert len(text) >= 100
    with pytest.raises(syntax.CharlstmError, match="drop --beam"):
        SampleSettings(beam=2, constrain=True).validate()
    sampler.language = "haskell"
    with pytest.raises(syntax.CharlstmError, match="lexer of python"):
        sampler.sample_texts(SampleSettings(length=10, constrain=True))


# ----- rollback and --valid --------------------------------------------------------------------------


def test_rollback_restores_the_exact_state_of_its_row(lively_checkpoint):
    sampler = lively_sampler(lively_checkpoint, "python")
    engine = sampler.engine
    tokens = torch.tensor([sampler.vocab.doc_sep] * 2)
    logits, state = engine.step(tokens, engine.init_state(2))
    saved = take_snapshot(1, 0, state, logits, PythonLexer())
    for t in "abc":
        logits, state = engine.step(torch.tensor([sampler.vocab.index[t]] * 2), state)
    restore_snapshot(1, saved, state, logits)
    assert torch.equal(logits[1], saved.logits)
    assert all(
        torch.equal(s[1], r)
        for layer, rows in zip(state, saved.state, strict=True)
        for s, r in zip(layer, rows, strict=True)
    )
    assert not torch.equal(logits[0], saved.logits)  # the other row went on


class TableNoise:
    """Gumbel noise by step number from a fixed table, remembering the latest step read."""

    def __init__(self, vocab: int, seed: int = 3):
        u = torch.rand(6000, 1, vocab, generator=torch.Generator().manual_seed(seed)).clamp(1e-9, 1 - 1e-7)
        self.table, self.last = -torch.log(-torch.log(u)), -1

    def at(self, t: int) -> torch.Tensor:
        self.last = t
        return self.table[t]


def first_unit(steps) -> str:
    for pieces, _done in steps:
        if pieces[0]:
            return pieces[0]
    return ""


def test_after_a_rejected_unit_the_draw_is_a_fresh_draw_from_the_units_start(monkeypatch):
    sampler = memorised_sampler(PYTHON_SNIPPET * 2, "python")
    engine, symbols, rule, prime = sampler.engine, sampler.vocab.symbols, DrawRule(1.0), "def "
    monkeypatch.setattr(constrained, "python_prefix_error", lambda *a: None)  # judge whole units only
    verdicts = iter(["line 1: rejected"])
    monkeypatch.setattr(constrained, "parse_error", lambda *a: next(verdicts, None))
    rollbacks, noise, roll_back = [], TableNoise(engine.vocab_size), constrained._UnitKeeper.roll_back

    def spy(keeper):
        snap = roll_back(keeper)
        rollbacks.append((snap, noise.last + 1))
        return snap

    monkeypatch.setattr(constrained._UnitKeeper, "roll_back", spy)
    logits, state = sampler.primed(sampler.prime_tokens(prime)[0])
    lexer = constrained.primed_lexer("python", prime)
    emitted = first_unit(
        constrained.valid_steps(
            engine, rule, symbols, "python", prime, lexer, logits, state, None, noise, 1, 8, constrained.ValidStats()
        )
    )
    assert emitted and len(rollbacks) == 1
    snap, next_step = rollbacks[0]
    assert snap.position == len(prime)  # back to where the unit's drawing began
    fresh_state = [tuple(row[None].clone() for row in layer) for layer in snap.state]
    fresh = first_unit(
        constrained.valid_steps(
            engine,
            rule,
            symbols,
            "python",
            prime,
            snap.lexer.clone(),
            snap.logits[None].clone(),
            fresh_state,
            None,
            TableNoise(engine.vocab_size),
            1,
            8,
            constrained.ValidStats(),
            first_step=next_step,
        )
    )
    assert fresh == emitted


def test_every_unit_valid_emits_parses_python(tmp_path):
    from charlstm.core.checkpoint import resolve_model

    sampler, _ = Sampler.from_checkpoint(resolve_model("python"), precision="auto")
    settings = SampleSettings(length=300, temperature=0.7, prime="import os\n\n\ndef ", seed=2, valid=True)
    text = sampler.sample_texts(settings)[0]
    units = split_units(text, "python", settings.prime)
    assert units and sampler.last_stats.tries and not sampler.last_stats.unfinished
    for unit in units:  # the last one too: --valid ends a sample on a closed unit
        assert parse_error(text[unit.start : unit.end], "python") is None, text[unit.start : unit.end]


def memorised_sampler(text: str, language: str, steps: int = 400) -> Sampler:
    """A small LSTM fitted to `text`, so that it writes something like it with some mistakes."""
    torch.manual_seed(0)
    vocab = Vocab.from_counts({ch: 1 for ch in text})
    # forget_bias 1: the init these seeded samples were calibrated with (PyTorch's is the default now)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), layers=1, hidden=64, embed=16, forget_bias=1.0))
    ids = torch.from_numpy(vocab.encode(text * 4)).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _step in range(steps):
        starts = torch.randint(0, len(ids) - 65, (16,))
        batch = torch.stack([ids[s : s + 65] for s in starts.tolist()])
        logits, _ = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), batch[:, 1:].reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    sampler = Sampler(model.eval(), vocab, precision="fp32")
    sampler.language = language
    return sampler


JAVA_MEMBERS = JAVA_SNIPPET.replace("public class Greeter {\n", "").rsplit("}", 1)[0]


def test_every_unit_valid_emits_parses_java():
    sampler = memorised_sampler("public class Greeter {\n" + JAVA_MEMBERS * 3 + "}\n", "java")
    prime = "public class Greeter {\n\n    public "
    settings = SampleSettings(length=300, temperature=1.0, prime=prime, seed=5, num_samples=2, valid=True)
    texts = sampler.sample_texts(settings)
    assert len(sampler.last_stats.tries) >= 4
    judged = [error for text in texts for _, error in judge_units(text, "java", prime)]
    assert judged and all(error is None for error in judged)


def test_the_parse_rate_counts_what_a_planted_model_emits(monkeypatch):
    good, bad = "def good():\n    return 1\n\n\n", "def bad() x:\n    pass\n\n\n"
    planted = ["import os\n\n\n" + good + bad + good + "def cut(", "import os\n\n\n" + bad + good]

    class Planted:
        language = "python"

        def sample_texts(self, settings):
            assert settings.num_samples == 2 and settings.temperature == 0.5
            return planted

    result = syntax_rate(Planted(), samples=2, temperature=0.5, prime="import os\n\n\n")
    assert (result["units"], result["parsed"]) == (4, 2)  # the last unit of each sample is left out
    assert result["rate"] == 0.5 and result["failures"][0]["error"].startswith("line 1:")


# ----- the commands ----------------------------------------------------------------------------------


def test_eval_syntax_and_sample_valid_commands(lively_checkpoint):
    runner = CliRunner()
    args = ["eval", str(lively_checkpoint), "--syntax", "--samples", "3", "--length", "200", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout)
    assert result["language"] == "java" and result["samples"] == 3 and result["parsed"] <= result["units"]
    again = json.loads(runner.invoke(app, args).stdout)
    assert {**again, "seconds": 0} == {**result, "seconds": 0}  # the same seed, the same figure
    refused = runner.invoke(app, [*args, "--text-file", "x.py"])
    assert refused.exit_code == 1 and "--syntax draws its own samples" in refused.output
    done = runner.invoke(
        app,
        [
            "sample",
            str(lively_checkpoint),
            "--valid",
            "--length",
            "80",
            "--seed",
            "1",
            "--max-tries",
            "2",
            "--prime",
            "class A {\n",
        ],
    )
    assert done.exit_code == 0, done.output
    assert "--valid:" in done.stderr and done.stdout.startswith("class A {\n")
    for units in [u for u, e in judge_units(done.stdout, "java", "class A {\n") if e is not None]:
        pytest.fail(f"--valid emitted a unit that does not parse: {units}")
    beam = runner.invoke(app, ["sample", str(lively_checkpoint), "--valid", "--beam", "2"])
    assert beam.exit_code == 1 and "drop --beam" in beam.output
