"""The HTML explorer: what the page holds, and that it renders in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlstm.analysis import explorer, neurons, tracing
from charlstm.cli import app
from charlstm.core.checkpoint import save_checkpoint
from charlstm.core.errors import CharlstmError
from charlstm.core.model import CharRNN, ModelConfig
from charlstm.core.vocab import Vocab
from helpers import dequantise
from tests.conftest import JAVA_SNIPPET, PYTHON_SNIPPET, make_checkpoint

runner = CliRunner()
# Characters that must survive being embedded in HTML and in a <script> element.
# "<!--<script>" would put a browser's parser in its double-escaped script state, where the
# page's own "</script>" no longer ends the data block and the page's script never runs.
AWKWARD = 'if (a < b && c > d) { s = "<!--<script></script><b>&amp;"; } // ü\t\x1c'


@pytest.fixture
def html_checkpoint(tmp_path):
    torch.manual_seed(3)
    vocab = Vocab.from_counts({ch: 1 for ch in JAVA_SNIPPET + PYTHON_SNIPPET + AWKWARD.replace("\x1c", "")})
    model = CharRNN(ModelConfig(vocab_size=len(vocab), layers=2, hidden=24, embed=8))
    path = tmp_path / "run" / "best.pt"
    save_checkpoint(
        path,
        {
            "model_config": model.config.to_dict(),
            "vocab": vocab.symbols,
            "model": model.state_dict(),
            "dataset": {"name": "tiny", "path": str(tmp_path / "nowhere"), "content_hash": None, "language": "java"},
            "step": 7,
        },
    )
    return path


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


def test_quantisation_round_trip_is_within_half_a_level():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 7)).astype(np.float32)
    values[:, 3] = 0.5  # a constant unit survives too
    block = explorer.quantise(values)
    back = dequantise(block, 50)
    step = (values.max(axis=0) - values.min(axis=0)) / 255
    assert np.all(np.abs(back - values) <= step / 2 + 1e-6)
    assert np.allclose(back[:, 3], 0.5)


def test_page_is_self_contained_and_holds_every_signal(tmp_path, html_checkpoint):
    inspection = neurons.open_checkpoint(html_checkpoint)
    text = (JAVA_SNIPPET + AWKWARD + "\n") * 2
    out = tmp_path / "out" / "explorer.html"
    summary = explorer.write_explorer(out, inspection, text, "a test", layer=2, neuron=5, signal="cell")
    html = out.read_text(encoding="utf-8")
    assert summary["bytes"] == len(html.encode("utf-8")) and summary["chars"] == len(text)
    # No network: nothing loaded from anywhere, script and style inline.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script src" not in html and "<link" not in html and "@import" not in html
    assert html.count("</script>") == 2  # the data's own "</script>" was escaped
    block = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S).group(1)
    assert "<!--" not in block and "<script" not in block.lower()  # nor can it open a comment or a script
    data = page_data(html)
    assert data["text"] == text and data["initial"] == {"layer": 2, "neuron": 5, "signal": "cell"}
    assert data["signals"] == ["hidden", "cell", "input", "forget", "output", "candidate"]
    assert set(data["top"]) <= {"indent", "column", "string", "comment", "brackets", "spaces"}
    assert {"indent", "string", "brackets"} <= set(data["top"])
    acts = tracing.activations(inspection.model, inspection.vocab, text)
    for signal in data["signals"]:
        for layer in range(2):
            back = dequantise(data["acts"][signal][layer], len(text))
            span = acts[signal][layer].max() - acts[signal][layer].min()
            assert np.abs(back - acts[signal][layer]).max() <= span / 255
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # a page to share
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, nothing left over


def test_page_opens_on_the_best_indentation_unit_by_default(tmp_path, html_checkpoint):
    inspection = neurons.open_checkpoint(html_checkpoint)
    out = tmp_path / "x.html"
    explorer.write_explorer(out, inspection, JAVA_SNIPPET, "a test")
    data = page_data(out.read_text(encoding="utf-8"))
    best = data["top"]["indent"][0]
    assert data["initial"] == {k: best[k] for k in ("layer", "neuron", "signal")}


def test_gru_page_and_too_long_text(tmp_path):
    inspection = neurons.open_checkpoint(make_checkpoint(tmp_path / "g" / "best.pt", kind="gru"))
    out = tmp_path / "g.html"
    explorer.write_explorer(out, inspection, PYTHON_SNIPPET, "a test")
    assert page_data(out.read_text(encoding="utf-8"))["signals"] == ["reset", "update", "candidate", "hidden"]
    too_long = "n" * (explorer.most_chars(inspection) + 1)
    with pytest.raises(CharlstmError, match="too many for one page"):
        explorer.write_explorer(tmp_path / "big.html", inspection, too_long, "a test")
    assert not (tmp_path / "big.html").exists()


def test_default_length_keeps_big_models_pages_small(tmp_path):
    small = neurons.open_checkpoint(make_checkpoint(tmp_path / "s" / "best.pt"))
    assert explorer.default_chars(small) == 2000
    big = neurons.open_checkpoint(make_checkpoint(tmp_path / "b" / "best.pt", layers=3, hidden=512))
    most = explorer.most_chars(big)  # its values take 12 KB per character of a 16 MB page
    assert explorer.default_chars(big) == most and 1200 < most < 1300


def test_cli_html(tmp_path, html_checkpoint):
    out = tmp_path / "page.html"
    result = runner.invoke(app, ["inspect-neuron", str(html_checkpoint), "--html", str(out), "--text", AWKWARD])
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"wrote {out}" in result.stderr.replace("\n", "")
    bad = runner.invoke(app, ["inspect-neuron", str(html_checkpoint), "--html", str(out), "-l", "9", "-n", "0"])
    assert bad.exit_code == 1 and "layers 1..2" in bad.stderr


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _render_in_chromium(tmp_path, out) -> str:
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        out.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90).stdout


@pytest.mark.skipif(
    _chromium() is None, reason="Chromium is not installed (apt-get install chromium); .ci/run installs it"
)
def test_page_renders_in_headless_chromium(tmp_path, html_checkpoint):
    inspection = neurons.open_checkpoint(html_checkpoint)
    text = (JAVA_SNIPPET + AWKWARD + "\n") * 3
    out = tmp_path / "explorer.html"
    explorer.write_explorer(out, inspection, text, "a test")
    dom = _render_in_chromium(tmp_path, out)
    errors = re.search(r'<div id="errors"[^>]*>(.*?)</div>', dom, re.S)
    assert errors is not None and errors.group(1).strip() == "", errors and errors.group(1)
    assert re.search(r'<body[^>]*data-ready="1"', dom), "the page's script did not finish drawing"
    # One coloured span per character, and the selectors filled in.
    spans = re.findall(r'<span data-i="(\d+)"[^>]*style="[^"]*background[^"]*"', dom)
    assert len(spans) == len(text) and spans[-1] == str(len(text) - 1)
    assert dom.count("<option") == 2 + 6 + 2  # two layers, six signals, colour by neuron or surprise
    assert "network view: layer" in dom


def test_page_holds_the_surprise_row_and_an_ablation(tmp_path, html_checkpoint):
    from charlstm.evaluation.surprise import per_char_bits

    inspection = neurons.open_checkpoint(html_checkpoint)
    out = tmp_path / "x.html"
    explorer.write_explorer(out, inspection, JAVA_SNIPPET, "a test", ablate=[(1, 2)])
    data = page_data(out.read_text(encoding="utf-8"))
    surprise = data["surprise"]
    tokens = np.concatenate([[inspection.vocab.doc_sep], inspection.vocab.encode(JAVA_SNIPPET)])
    bits, _, _ = per_char_bits(inspection.model, tokens)
    assert len(surprise["bits"]) == len(surprise["top"]) == len(JAVA_SNIPPET)
    np.testing.assert_allclose(surprise["bits"], bits, atol=1e-3)
    assert all(len(top) == 5 for top in surprise["top"])
    ablation = surprise["ablation"]
    assert ablation["units"] == [[1, 2]] and len(ablation["delta"]) == len(JAVA_SNIPPET)
    assert ablation["bpc_ablated"] - ablation["bpc"] == pytest.approx(np.mean(ablation["delta"]), abs=1e-3)
    assert ablation["bpc"] == pytest.approx(bits.mean(), rel=1e-4)


def test_cli_html_with_an_ablation(tmp_path, html_checkpoint):
    out = tmp_path / "a.html"
    result = runner.invoke(
        app,
        [
            "inspect-neuron",
            str(html_checkpoint),
            "--text",
            JAVA_SNIPPET,
            "--html",
            str(out),
            "--ablate",
            "2:3",
            "-l",
            "2",
            "-n",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    data = page_data(out.read_text(encoding="utf-8"))
    assert data["surprise"]["ablation"]["units"] == [[2, 3]] and data["initial"]["neuron"] == 3


@pytest.mark.skipif(
    _chromium() is None, reason="Chromium is not installed (apt-get install chromium); .ci/run installs it"
)
def test_page_with_a_long_ablation_renders_in_headless_chromium(tmp_path, html_checkpoint):
    # A small model's page holds up to hundreds of thousands of characters; the script once took the
    # largest ablation effect with Math.max(...deltas), past the browser's limit on arguments.
    inspection = neurons.open_checkpoint(html_checkpoint)
    out = tmp_path / "a.html"
    explorer.write_explorer(out, inspection, JAVA_SNIPPET, "a test", ablate=[(1, 2)])
    data = page_data(out.read_text(encoding="utf-8"))
    data["surprise"]["ablation"]["delta"] += [0.0] * 300_000  # as long a row as a 300,000-character page's
    out.write_text(explorer.render_page(data), encoding="utf-8")
    dom = _render_in_chromium(tmp_path, out)
    errors = re.search(r'<div id="errors"[^>]*>(.*?)</div>', dom, re.S)
    assert errors is not None and errors.group(1).strip() == "", errors and errors.group(1)
    assert re.search(r'<body[^>]*data-ready="1"', dom), "the page's script did not finish drawing"
