"""Bounded memory and page size for long texts (`eval --per-char`, `inspect-neuron --html`), and
user paths with control characters printed on one line."""

from __future__ import annotations

import base64
import json
import os
import sys
import tracemalloc
import zlib

import numpy as np
import pytest
from typer.testing import CliRunner

from charlstm.analysis import explorer
from charlstm.cli import app
from charlstm.core.errors import one_line_text, shell_path, shown_path
from charlstm.evaluation import surprise
from conftest import JAVA_SNIPPET, make_checkpoint

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")

ONE_LINE = JAVA_SNIPPET.replace("\n", " ")  # a minified file: a single line


def page_data(page: str) -> dict:
    return json.loads(page.split('<script type="application/json" id="data">')[1].split("</script>")[0])


# --- eval --per-char: streamed, its page capped ------------------------------------------------


def test_per_char_page_is_capped_and_says_so(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(surprise, "MAX_PAGE_BYTES", 100_000, raising=False)
    text = tmp_path / "long.java"
    text.write_text(ONE_LINE * 200)  # ~70 KB on one line
    page = tmp_path / "page.html"
    result = runner.invoke(
        app, ["eval", str(tiny_checkpoint), "--per-char", "--text-file", str(text), "--html", str(page)]
    )
    assert result.exit_code == 0, result.output
    html = page.read_text(encoding="utf-8")
    assert len(html.encode("utf-8")) <= 100_000
    shown = html.count("<span ")
    chars = len(ONE_LINE * 200)
    assert 500 < shown < chars
    assert f"This page shows the first {shown:,} of {chars:,} characters</b>: a page holds at most 0.1 MB" in html
    stderr = " ".join(result.stderr.split())  # rich wraps lines
    assert f"the first {shown:,} of {chars:,} characters, as a page holds at most 0.1 MB" in stderr
    # The figures are over the whole text: the same as without a page.
    plain = runner.invoke(app, ["eval", str(tiny_checkpoint), "--per-char", "--text-file", str(text), "--json"])
    assert f"{json.loads(plain.stdout)['bpc']:.3f} bits per character" in html


def test_per_char_json_streams_every_character_with_the_totals(tiny_checkpoint, tmp_path):
    text = tmp_path / "t.java"
    text.write_text(JAVA_SNIPPET * 30)  # several blocks of 8,192 characters
    result = runner.invoke(app, ["eval", str(tiny_checkpoint), "--per-char", "--text-file", str(text), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "".join(c["char"] for c in report["characters"]) == JAVA_SNIPPET * 30
    assert report["chars"] == len(JAVA_SNIPPET * 30) and report["bits"] == pytest.approx(
        report["bpc"] * report["chars"]
    )
    assert sum(c["bits"] for c in report["characters"]) == pytest.approx(report["bits"], abs=1e-4 * report["chars"])


def test_most_surprising_across_blocks_equals_a_sort_of_all():
    rng = np.random.default_rng(0)
    bits = np.round(rng.exponential(2.0, 20_000), 1)  # many ties: the earlier first
    ids, probs = rng.integers(0, 50, (20_000, 5)), rng.random((20_000, 5)).astype(np.float32)
    worst = surprise.MostSurprising(10)
    for start in range(0, 20_000, 3000):
        worst.add(start, bits[start : start + 3000], ids[start : start + 3000], probs[start : start + 3000])
    expected = np.argsort(-bits, kind="stable")[:10]
    assert worst.position.tolist() == expected.tolist()
    assert (worst.top_ids == ids[expected]).all()


def peak_bytes(tiny_checkpoint, text_file, page, extra, monkeypatch) -> int:
    """Python's peak allocation (numpy's included) from the text's reading to the end of
    `eval --per-char`, its stdout and stderr to /dev/null."""
    from charlstm.core import userio

    read = userio.read_text_source

    def read_then_measure(*args, **kw):
        text = read(*args, **kw)
        tracemalloc.start()
        return text

    monkeypatch.setattr(userio, "read_text_source", read_then_measure)
    with open(os.devnull, "w") as devnull:
        real = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = devnull
        try:
            app(
                [
                    "eval",
                    str(tiny_checkpoint),
                    "--per-char",
                    "--text-file",
                    str(text_file),
                    "--html",
                    str(page),
                    *extra,
                ],
                standalone_mode=False,
            )
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            sys.stdout, sys.stderr = real


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_per_char_memory_does_not_grow_with_the_text(tiny_checkpoint, tmp_path, monkeypatch, extra):
    """Before: ~2 KB per character (every character's dict and span, the whole coloured Text):
    2.25 GB for 1 MB. Now the text's ids (~16 bytes per character while they are made) and pieces
    of a bounded size."""
    monkeypatch.setattr(surprise, "MAX_PAGE_BYTES", 50_000, raising=False)
    short, long = tmp_path / "short.java", tmp_path / "long.java"
    short.write_text(ONE_LINE * 30)
    long.write_text(ONE_LINE * 150)
    grown = len(ONE_LINE) * 120
    peaks = [peak_bytes(tiny_checkpoint, f, tmp_path / "p.html", extra, monkeypatch) for f in (short, long)]
    assert peaks[1] - peaks[0] < 40 * grown, peaks  # bytes per character added to the text


# --- inspect-neuron --html: a page under its cap -----------------------------------------------


def test_inspect_html_page_stays_under_its_cap_and_says_so(tmp_path, monkeypatch):
    """Before: a cap on values (40 M) that let a page reach 48.5 MB where 16 MB was promised."""
    cap = 400_000
    monkeypatch.setattr(explorer, "MAX_PAGE_BYTES", cap, raising=False)
    checkpoint = make_checkpoint(tmp_path / "run" / "best.pt")
    text = tmp_path / "long.java"
    awkward = JAVA_SNIPPET  # quotes and newlines cost 2 bytes each in the page's JSON
    text.write_text(awkward * 40)
    page = tmp_path / "page.html"
    result = runner.invoke(app, ["inspect-neuron", str(checkpoint), "--text-file", str(text), "--html", str(page)])
    assert result.exit_code == 0, result.output
    size = len(page.read_bytes())
    assert size <= cap
    data = page_data(page.read_text(encoding="utf-8"))
    shown = len(data["text"])
    assert 100 < shown < len(awkward * 40) and data["text"] == (awkward * 40)[:shown]
    assert (
        f"its first {shown:,} of {len(awkward * 40):,} characters: the most one page holds, at most 0.4 MB"
        in data["source"]
    )
    assert "a page holds at most 0.4 MB" in " ".join(result.stderr.split())


def test_the_shipped_models_page_holds_under_16_mb():
    """A 3×256 LSTM (the shipped model's shape): the most one page holds, at the bound's worst case."""
    from types import SimpleNamespace

    inspection = SimpleNamespace(
        layers=3, hidden=256, signals=("hidden", "cell", "input", "forget", "output", "candidate")
    )
    most = explorer.most_chars(inspection)
    assert 2000 < most < 2600
    worst = (
        explorer.FIXED_BYTES
        + 28 * explorer.values_per_char(inspection)
        + most * explorer.page_bytes_per_char(inspection)
    )
    assert worst <= explorer.MAX_PAGE_BYTES == 16_000_000


def test_quantised_values_never_take_more_than_the_bound_allows():
    """Incompressible levels (as 8-bit activations nearly are): deflate adds 0.1% at most, base64 a third."""
    rng = np.random.default_rng(1)
    values = rng.random((2000, 256)).astype(np.float32)
    block = explorer.quantise(values)
    assert len(block["q"]) <= values.size * 4 / 3 * 1.001 + 16
    assert len(zlib.decompress(base64.b64decode(block["q"]))) == values.size


def test_inspect_html_refuses_a_model_too_big_for_any_page(tmp_path, monkeypatch):
    monkeypatch.setattr(explorer, "MAX_PAGE_BYTES", 50_000)
    checkpoint = make_checkpoint(tmp_path / "run" / "best.pt", hidden=64)
    result = runner.invoke(
        app, ["inspect-neuron", str(checkpoint), "--text", "public class", "--html", str(tmp_path / "p.html")]
    )
    assert result.exit_code == 1 and "more than a page holds" in result.stderr
    assert not (tmp_path / "p.html").exists()


# --- paths with control characters on one line -------------------------------------------------


def test_shown_path_escapes_what_does_not_print():
    assert shown_path("runs/a b é.py") == "runs/a b é.py"
    assert shown_path("a\nb.py") == "'a\\nb.py'" and shown_path("x\x1b[2J\u202e") == "'x\\x1b[2J\\u202e'"
    assert one_line_text("cannot read a\nb: gone") == "cannot read a\\nb: gone"
    assert shell_path("my run") == "'my run'" and shell_path("run\nx's") == "$'run\\nx\\'s'"


def shows_escaped(output: str, name: str) -> bool:
    """`name` (with a newline) is in `output` escaped, never raw (rich wraps long lines at spaces, so
    the line itself may be cut where a space was)."""
    raw, escaped = name, shown_path(name)
    return escaped in "".join(output.splitlines()) and raw not in output


def test_result_lines_show_a_newline_in_a_name_escaped(tiny_checkpoint, tmp_path):
    odd = tmp_path / "two\nlines.java"
    odd.write_text(JAVA_SNIPPET)
    page = tmp_path / "out\npage.html"
    result = runner.invoke(app, ["eval", str(tiny_checkpoint), "--text-file", str(odd)])
    assert result.exit_code == 0, result.output
    assert shows_escaped(result.stderr, str(odd))
    result = runner.invoke(
        app, ["eval", str(tiny_checkpoint), "--per-char", "--text-file", str(odd), "--html", str(page)]
    )
    assert result.exit_code == 0, result.output
    assert shows_escaped(result.stderr, str(odd)) and shows_escaped(result.stderr, str(page))
    result = runner.invoke(app, ["inspect-neuron", str(tiny_checkpoint), "--text-file", str(odd), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert shows_escaped(result.stderr, str(page))
    result = runner.invoke(app, ["inspect-neuron", str(tiny_checkpoint), "--text-file", str(odd), "--stats"])
    assert result.exit_code == 0, result.output
    assert shows_escaped(result.stderr, str(odd))
    out = tmp_path / "sample\nout.txt"
    result = runner.invoke(app, ["sample", str(tiny_checkpoint), "-n", "20", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert shows_escaped(result.stderr, str(out))


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "{ckpt}", "--text-file", "{tmp}/no\nsuch.java"],
        ["inspect-neuron", "{ckpt}", "--find", "indent", "--text-file", "{tmp}/no\nsuch.java"],
        ["sample", "{ckpt}", "--prime-file", "{tmp}/no\nsuch.java"],
        ["eval", "{ckpt}", "--per-char", "--text-file", "{tmp}/ok.java", "--html", "{tmp}/a\nfolder"],
        ["eval", "{tmp}/no\nrun"],
        ["train", "--out", "{tmp}/no\nrun", "--resume"],
    ],
)
def test_an_error_naming_a_path_with_a_newline_is_one_line(tiny_checkpoint, tmp_path, argv):
    (tmp_path / "ok.java").write_text(JAVA_SNIPPET)
    (tmp_path / "a\nfolder").mkdir()
    args = [a.replace("{ckpt}", str(tiny_checkpoint)).replace("{tmp}", str(tmp_path)) for a in argv]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "\\n" in lines[0], result.stderr
