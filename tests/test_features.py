"""Per-character code features, checked at hand-picked positions of hand-written Java and Python."""

from __future__ import annotations

import numpy as np
import pytest

from charlstm.analysis.features import (
    FEATURES,
    compute_feature,
    is_binary,
    lexer_name,
    syntax_labels,
    validate_feature,
)
from charlstm.core.errors import CharlstmError
from charlstm.core.vocab import DOC_SEP
from tests.conftest import JAVA_SNIPPET, PYTHON_SNIPPET

# Positions in PYTHON_SNIPPET:
#   0 'd' of "def greet(name):", 9 '(', 10 'n', 14 ')', 16 the first newline;
#   17..20 the four spaces before '"""Say hello."""' (21..36), 37 its newline;
#   87..100 '# nobody there'; 151 'f' of f"Hello, {name}!", 160 '{', 161 'n' of name.
# Positions in JAVA_SNIPPET: 21 '{' ending line 0; 115..138 '// remember who to greet';
#   224..238 '"Hello, world!"'.


def at(values: np.ndarray, *positions: int) -> list[float]:
    return [float(values[p]) for p in positions]


def test_snippet_positions_are_what_the_tests_assume():
    assert PYTHON_SNIPPET[9:15] == "(name)" and PYTHON_SNIPPET[21:37] == '"""Say hello."""'
    assert PYTHON_SNIPPET[87:101] == "# nobody there" and PYTHON_SNIPPET[151:162] == 'f"Hello, {n'
    assert JAVA_SNIPPET[115:139] == "// remember who to greet" and JAVA_SNIPPET[224:239] == '"Hello, world!"'


def test_indent_python_and_java():
    indent = compute_feature("indent", PYTHON_SNIPPET)
    # Inside the leading spaces the indentation grows as it is read; the rest of the line keeps it.
    assert at(indent, 0, 16, 17, 18, 20, 21, 37) == [0, 0, 1, 2, 4, 4, 4]
    i = PYTHON_SNIPPET.index('return "Hello, world!"')
    assert at(indent, i - 1, i, i + 10) == [8, 8, 8]
    java = compute_feature("indent", JAVA_SNIPPET)
    i = JAVA_SNIPPET.index("this.name")
    assert at(java, 0, 22, 23, i, i + 5) == [0, 0, 1, 8, 8]
    blank = JAVA_SNIPPET.index("\n\n") + 1  # an empty line has no indentation
    assert java[blank] == 0


def test_indent_and_column_expand_tabs_to_multiples_of_four():
    text = "\tx\n  \ty\n"
    assert compute_feature("indent", text).tolist() == [4, 4, 4, 1, 2, 4, 4, 4]
    assert compute_feature("column", text).tolist() == [0, 4, 5, 0, 1, 2, 4, 5]


def test_column_python_and_java():
    column = compute_feature("column", PYTHON_SNIPPET)
    assert at(column, 0, 9, 16, 17, 21) == [0, 9, 16, 0, 4]
    java = compute_feature("column", JAVA_SNIPPET)
    assert at(java, 21, 22, 23, 115) == [21, 22, 0, 8 + len("this.name = name; ")]


def test_string_python_and_java():
    string = compute_feature("string", PYTHON_SNIPPET, "python")
    assert at(string, 20, 21, 30, 36, 37) == [0, 1, 1, 1, 0]  # a docstring is a string literal
    # The f prefix belongs to the literal; the interpolated expression is code.
    assert at(string, 150, 151, 152, 160, 161, 166) == [0, 1, 1, 1, 0, 1]
    java = compute_feature("string", JAVA_SNIPPET, "java")
    assert at(java, 223, 224, 230, 238, 239) == [0, 1, 1, 1, 0]
    assert java[115] == 0  # a comment is not a string


def test_comment_python_and_java():
    comment = compute_feature("comment", PYTHON_SNIPPET, "python")
    assert at(comment, 86, 87, 100, 101) == [0, 1, 1, 0]
    assert comment[21] == 0  # a docstring is a string, not a comment
    java = compute_feature("comment", JAVA_SNIPPET, "java")
    assert at(java, 114, 115, 138, 139) == [0, 1, 1, 0]
    block = "int x; /* a\n  (b */ y();"
    c = compute_feature("comment", block, "java")
    assert at(c, 6, 7, 13, 18, 19) == [0, 1, 1, 1, 0]


def test_brackets_python_and_java_ignore_strings_and_comments():
    b = compute_feature("brackets", PYTHON_SNIPPET, "python")
    assert at(b, 8, 9, 10, 14, 15) == [0, 1, 1, 0, 0]
    assert at(b, 160, 161, 165) == [0, 0, 0]  # f-string braces are part of the string
    java = compute_feature("brackets", JAVA_SNIPPET, "java")
    i = JAVA_SNIPPET.index("if (name.isEmpty()) {")
    # Class body 1, method body 2, then "(" 3, "isEmpty(" 4, ")" 3, ")" 2, "{" 3.
    assert at(java, 21, i, i + 3, i + 16, i + 17, i + 18, i + 20) == [1, 2, 3, 4, 3, 2, 3]
    assert java[-1] == 0  # balanced by the end
    tricky = 's = "a(b"; /* ( */ f(x);'
    t = compute_feature("brackets", tricky, "java")
    assert t.max() == 1 and t[tricky.index("f(")] == 0 and t[tricky.index("(x")] == 1


def test_spaces_counts_position_in_a_run():
    s = compute_feature("spaces", PYTHON_SNIPPET)
    assert at(s, 3, 4, 16, 17, 18, 19, 20, 21) == [1, 0, 0, 1, 2, 3, 4, 0]
    java = compute_feature("spaces", JAVA_SNIPPET)
    i = JAVA_SNIPPET.index("            return")  # 12 spaces of indentation
    assert at(java, i, i + 11, i + 12) == [1, 12, 0]


def test_regex_marks_characters_inside_matches():
    r = compute_feature(r"regex:\bname\b", PYTHON_SNIPPET)
    assert at(r, 9, 10, 13, 14) == [0, 1, 1, 0]
    java = compute_feature("regex:^ +return", JAVA_SNIPPET)  # MULTILINE: ^ starts every line
    i = JAVA_SNIPPET.index("return")
    assert at(java, i - 13, i - 12, i + 5, i + 6) == [0, 1, 1, 0]
    assert compute_feature("regex:x*", "abc").tolist() == [0, 0, 0]  # empty matches mark nothing


def test_documents_start_fresh_after_a_separator():
    text = '    s = "abc' + DOC_SEP + "(d = 1"
    sep = text.index(DOC_SEP)
    labels = syntax_labels(text, "python")
    assert labels[sep - 1] == 1 and labels[sep + 2] == 0  # an unterminated string ends with its file
    assert compute_feature("indent", text)[sep + 1] == 0
    assert compute_feature("column", text)[sep + 1] == 0
    assert compute_feature("brackets", text, "python")[-1] == 1


def test_feature_names_and_errors():
    assert set(FEATURES) == {"indent", "column", "string", "comment", "brackets", "spaces"}
    assert is_binary("string") and is_binary("regex:a") and not is_binary("indent")
    with pytest.raises(CharlstmError, match="indent, column, string, comment, brackets, spaces, regex:PATTERN"):
        validate_feature("loops")
    with pytest.raises(CharlstmError, match="invalid regex"):
        validate_feature("regex:(unclosed")
    with pytest.raises(CharlstmError, match="needs a pattern"):
        validate_feature("regex:")


def test_language_fallbacks():
    assert lexer_name("java") == "java"
    assert lexer_name(None, "") == "python"
    assert lexer_name("no-such-language", "") == "python"
    # A string is a string in either lexer.
    assert compute_feature("string", 'x = "a"\n', None).tolist() == [0, 0, 0, 0, 1, 1, 1, 0]


def test_a_model_without_a_language_gets_a_code_lexer_not_pygments_odd_guess():
    # Pygments' guess for short code is often some rare lexer (TeraTerm macros for this snippet),
    # which labels no comment at all; a model whose corpus had no known language must still see them.
    assert lexer_name(None, PYTHON_SNIPPET) == "python"
    assert (
        compute_feature("comment", PYTHON_SNIPPET, None).tolist()
        == compute_feature("comment", PYTHON_SNIPPET, "python").tolist()
    )
    assert lexer_name(None, "#include <stdio.h>\nint main(void) { return 0; }\n") in ("c", "cpp", "python")


def test_syntax_labels_are_lexed_once_per_text_and_read_only():
    text = PYTHON_SNIPPET + DOC_SEP + PYTHON_SNIPPET
    first = syntax_labels(text, "python")
    assert syntax_labels(text, "python") is first  # string, comment and brackets share one lexing
    assert not first.flags.writeable
    with pytest.raises(ValueError):
        first[0] = 1
    # Features built from them are fresh, writable arrays.
    for name in ("string", "comment", "brackets"):
        values = compute_feature(name, text, "python")
        assert values.flags.writeable and values.dtype == np.float32 and len(values) == len(text)


def test_layout_features_equal_a_character_by_character_reference():
    def reference(text: str) -> dict[str, list[float]]:
        out = {"indent": [], "column": [], "spaces": []}
        width, leading, col, run = 0, True, 0, 0
        for ch in text:
            if leading and ch in " \t":
                width = (width // 4 + 1) * 4 if ch == "\t" else width + 1
            else:
                leading = False
            run = run + 1 if ch == " " else 0
            out["indent"].append(width), out["column"].append(col), out["spaces"].append(run)
            col = 0 if ch in ("\n", DOC_SEP) else ((col // 4 + 1) * 4 if ch == "\t" else col + 1)
            if ch in ("\n", DOC_SEP):
                width, leading = 0, True
        return out

    text = "\t x\n  \t(a)  b\n" + DOC_SEP + "   \tz  \n" + JAVA_SNIPPET
    for name, expected in reference(text).items():
        got = compute_feature(name, text)
        assert got.dtype == np.float32 and got.tolist() == expected, name
    assert compute_feature("indent", "").shape == (0,)
