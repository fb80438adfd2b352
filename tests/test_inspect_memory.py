"""Inspection in bounded memory: the trace runs a chunk at a time, each mode keeps only what it needs,
and what it keeps equals what the whole-text trace gives."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlstm.analysis import explorer, neurons, saturation, tracing
from charlstm.analysis.features import compute_feature
from charlstm.cli import app
from charlstm.core.engine import SIGNALS, StepEngine
from charlstm.core.model import CharRNN
from charlstm.ui import inspect_command
from tests.conftest import JAVA_SNIPPET, PYTHON_SNIPPET, SNIPPET_VOCAB, make_checkpoint, make_lively_model

runner = CliRunner()
VOCAB = SNIPPET_VOCAB
TEXT = JAVA_SNIPPET + PYTHON_SNIPPET  # 578 characters: many chunks of CHUNK below
CHUNK = 37  # a length that divides nothing, so the last chunk is short


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(kind: str, layers: int = 2, hidden: int = 12) -> CharRNN:
    return make_lively_model(kind, seed=5, layers=layers, hidden=hidden)


@pytest.fixture
def small_chunks(monkeypatch):
    """Make every trace in the command run CHUNK characters at a time."""
    monkeypatch.setattr(tracing, "CHUNK_CHARS", (CHUNK, CHUNK))


def stitched(chunks) -> dict[str, np.ndarray]:
    parts: dict[str, list] = {}
    for _, chunk in chunks:
        for name, values in chunk.items():
            parts.setdefault(name, []).append(np.asarray(values))
    return {name: np.concatenate(values, axis=1) for name, values in parts.items()}


# ----- the chunked trace equals the whole one ----------------------------------------------------


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("weights", [torch.float32, torch.float16])
def test_engine_chunks_are_slices_of_the_whole_trace(kind, weights):
    engine = StepEngine(tiny_model(kind), weights)
    tokens = torch.from_numpy(VOCAB.encode(TEXT))
    whole = engine.trace(tokens)
    starts = []
    chunks = []
    for start, part in engine.trace_chunks(tokens, CHUNK):
        assert part["hidden"].shape[1] <= CHUNK
        starts.append(start)
        chunks.append((start, part))
    assert starts == list(range(0, len(TEXT), CHUNK))
    together = stitched(chunks)
    assert set(together) == set(SIGNALS[kind])
    for name, values in whole.items():
        # Relative too: the fused trace blocks the cell's recurrence by chunk length, and a cell
        # (unbounded) of ~90 differs in its last bits.
        np.testing.assert_allclose(together[name], values.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


def test_activations_do_not_depend_on_the_chunk_length(monkeypatch):
    model = tiny_model("lstm")
    one_chunk = tracing.activations(model, VOCAB, TEXT)
    monkeypatch.setattr(tracing, "CHUNK_CHARS", (CHUNK, CHUNK))
    many = tracing.activations(model, VOCAB, TEXT)
    for name in one_chunk:
        assert many[name].shape == (2, len(TEXT), 12)
        np.testing.assert_allclose(many[name], one_chunk[name], rtol=1e-5, atol=1e-5)  # as above: the cell is unbounded


# ----- each mode's keeper equals the whole-text computation ---------------------------------------


def chunks_of(acts: dict[str, np.ndarray], size: int = CHUNK):
    steps = next(iter(acts.values())).shape[1]
    for start in range(0, steps, size):
        yield start, {name: values[:, start : start + size] for name, values in acts.items()}


def test_correlation_over_chunks_equals_the_whole_text():
    acts = tracing.activations(tiny_model("lstm"), VOCAB, TEXT, exact=True)
    feature = compute_feature("indent", TEXT, "java")
    stats = neurons.FeatureCorrelation(feature)
    for start, chunk in chunks_of(acts):
        stats.add(start, chunk)
    for signal, r in stats.scores().items():
        for layer in range(2):
            for n in range(12):
                x = acts[signal][layer, :, n].astype(np.float64)
                expected = np.corrcoef(x, feature)[0, 1] if np.ptp(x) > 0 else np.nan
                assert r[layer, n] == pytest.approx(expected, abs=1e-5, nan_ok=True), (signal, layer, n)
    by_chunks, whole = neurons.ranked(stats.scores()), neurons.rank_units(acts, feature)
    assert [u.score for u in by_chunks] == pytest.approx([u.score for u in whole], abs=1e-5)


def test_correlation_of_a_barely_moving_gate_survives_merging():
    """Raw sums of squares would cancel here (mean 0.9999, spread 1e-4); the pairwise merge does not."""
    rng = np.random.default_rng(0)
    feature = rng.integers(0, 8, size=5000).astype(np.float32)
    values = (0.9999 + 1e-4 * (0.5 * feature / 8 + rng.normal(size=5000))).astype(np.float32)
    stats = neurons.FeatureCorrelation(feature)
    for start in range(0, 5000, 333):
        stats.add(start, {"forget": values[None, start : start + 333, None]})
    expected = np.corrcoef(values.astype(np.float64), feature)[0, 1]
    assert stats.scores()["forget"][0, 0] == pytest.approx(expected, abs=1e-3)


def test_saturation_unit_signals_and_snippets_over_chunks():
    acts = tracing.activations(tiny_model("lstm"), VOCAB, TEXT)
    counts = saturation.GateSaturation("lstm")
    unit = tracing.UnitSignals(2, 5, ("hidden", "cell", "forget"), len(TEXT))
    snippets = neurons.WindowSnippets((100, 164))
    for start, chunk in chunks_of(acts):
        for keeper in (counts, unit, snippets):
            keeper.add(start, chunk)
    assert counts.rows() == saturation.saturation(acts, "lstm")
    for signal, values in unit.values.items():
        np.testing.assert_array_equal(values, acts[signal][1, :, 5])
    for signal in acts:
        np.testing.assert_array_equal(snippets.values[signal], acts[signal][:, 100:164])
    values, scale = snippets.of(neurons.RankedUnit(2, 5, "cell", 0.5))
    np.testing.assert_array_equal(values, acts["cell"][1, 100:164, 5])
    assert scale == pytest.approx(np.abs(acts["cell"][1, :, 5]).max())  # over the whole text
    assert snippets.of(neurons.RankedUnit(1, 0, "hidden", 0.5))[1] == 1.0


# ----- what is kept does not grow with the text ---------------------------------------------------


def kept_bytes(keeper, skip: tuple[str, ...] = ()) -> int:
    """Bytes of the numpy arrays a keeper holds (in attributes and in dicts of them)."""
    total = 0
    for name, value in vars(keeper).items():
        if name in skip:
            continue
        for item in value.values() if isinstance(value, dict) else (value,):
            total += item.nbytes if isinstance(item, np.ndarray) else 0
    return total


def keep_over(text: str, model: CharRNN):
    feature = compute_feature("indent", text, "java")
    keepers = {
        "correlation": neurons.FeatureCorrelation(feature),
        "saturation": saturation.GateSaturation("lstm"),
        "snippets": neurons.WindowSnippets(neurons.feature_window(feature, 40)),
        "unit": tracing.UnitSignals(1, 3, ("hidden", "cell"), len(text)),
    }
    longest = 0
    for start, chunk in tracing.trace_chunks(model, VOCAB, text, chunk=CHUNK):
        longest = max(longest, tracing.chunk_length(chunk))
        for keeper in keepers.values():
            keeper.add(start, chunk)
    return keepers, longest


def test_kept_state_is_fixed_except_one_units_four_bytes_per_character():
    model = tiny_model("lstm")
    short, longest_short = keep_over(TEXT, model)
    long, longest_long = keep_over(TEXT * 8, model)
    assert longest_short == longest_long == CHUNK  # the trace never holds more than a chunk
    for name in ("correlation", "saturation", "snippets"):
        assert kept_bytes(short[name], skip=("feature",)) == kept_bytes(long[name], skip=("feature",)) > 0, name
    assert kept_bytes(long["unit"]) == 2 * 4 * len(TEXT) * 8  # two signals, float32


def test_find_memory_grows_by_bytes_per_character_not_by_the_trace(monkeypatch, tmp_path):
    """tracemalloc sees numpy's allocations: what --find keeps beyond one chunk is the text's own
    arrays (tokens, feature: tens of bytes per character), not every signal of every unit (here
    6 signals × 2 layers × 64 units × 4 bytes = 3 KB per character)."""
    inspection = neurons.open_checkpoint(make_checkpoint(tmp_path / "run" / "best.pt", hidden=64))
    monkeypatch.setattr(tracing, "CHUNK_CHARS", (200, 200))

    def peak(text: str) -> int:
        neurons.find_units(inspection, text[:50], "indent")  # warm up: lexers, kernels, caches
        tracemalloc.start()
        try:
            neurons.find_units(inspection, text, "indent")
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = JAVA_SNIPPET * 8, JAVA_SNIPPET * 40
    per_char = (peak(long) - peak(short)) / (len(long) - len(short))
    assert per_char < 400, per_char  # 32 measured  # whole-text activations would be 3,072


# ----- the command: long texts stream, or are refused at once with the way under the limit -------


def invoke(*args: str):
    return runner.invoke(app, ["inspect-neuron", *args])


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "Long.java"
    path.write_text(JAVA_SNIPPET * 3, encoding="utf-8")
    return path


def test_cli_results_do_not_depend_on_the_chunk_length(tmp_path, text_file, monkeypatch):
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt")
    runs = {
        "find": ("--find", "indent", "--top", "5", "--json"),
        "stats": ("--stats", "--json"),
        "neuron": ("-l", "2", "-n", "3", "--state", "all"),
    }

    def outputs():
        out = {}
        for name, args in runs.items():
            result = invoke(str(ckpt), "--text-file", str(text_file), *args)
            assert result.exit_code == 0, result.output
            out[name] = result.stdout
        return out

    whole = outputs()
    monkeypatch.setattr(tracing, "CHUNK_CHARS", (CHUNK, CHUNK))
    chunked = outputs()
    assert chunked["neuron"] == whole["neuron"]  # the same colours, character by character
    for row, expected in zip(json.loads(chunked["stats"])["gates"], json.loads(whole["stats"])["gates"], strict=True):
        assert (row["layer"], row["gate"]) == (expected["layer"], expected["gate"])
        assert row["left_saturated"] == pytest.approx(expected["left_saturated"], abs=0.01)
        assert row["right_saturated"] == pytest.approx(expected["right_saturated"], abs=0.01)
    found, expected = json.loads(chunked["find"]), json.loads(whole["find"])
    assert [(u["layer"], u["neuron"], u["signal"]) for u in found["neurons"]] == [
        (u["layer"], u["neuron"], u["signal"]) for u in expected["neurons"]
    ]
    assert [u["score"] for u in found["neurons"]] == pytest.approx([u["score"] for u in expected["neurons"]], abs=1e-5)


def test_no_mode_traces_more_than_a_chunk_at_once(tmp_path, text_file, small_chunks, monkeypatch):
    """The trace's own tensors (torch's, which tracemalloc does not see) are one chunk's."""
    lengths = []
    whole_trace = StepEngine.trace

    def spy(self, tokens, *args, **kwargs):
        lengths.append(tokens.shape[0])
        return whole_trace(self, tokens, *args, **kwargs)

    monkeypatch.setattr(StepEngine, "trace", spy)
    ckpt = str(make_checkpoint(tmp_path / "run" / "best.pt"))
    for args in (("--find", "indent"), ("--stats",), ("-l", "1", "-n", "0", "--state", "all")):
        lengths.clear()
        result = invoke(ckpt, "--text-file", str(text_file), *args)
        assert result.exit_code == 0, result.output
        assert sum(lengths) == len(JAVA_SNIPPET * 3) and max(lengths) == CHUNK, args


def test_cli_find_table_over_chunks(tmp_path, text_file, small_chunks):
    ckpt = str(make_checkpoint(tmp_path / "run" / "best.pt"))
    result = invoke(ckpt, "--text-file", str(text_file), "--find", "brackets")
    assert result.exit_code == 0, result.output
    assert "Units following 'brackets'" in result.stderr and "see one:" in result.stderr


def test_max_chars_cuts_the_text(tmp_path, text_file):
    ckpt = str(make_checkpoint(tmp_path / "run" / "best.pt"))
    result = invoke(ckpt, "--text-file", str(text_file), "--find", "indent", "--json", "--max-chars", "100")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["chars"] == 100
    bad = invoke(ckpt, "--text-file", str(text_file), "--stats", "--max-chars", "0")
    assert bad.exit_code == 1 and "--max-chars must be at least 1, got 0" in bad.stderr


def refuse_to_trace(*args, **kwargs):
    raise AssertionError("traced a text it should have refused")


def test_svg_of_a_long_text_is_refused_before_tracing(tmp_path, text_file, monkeypatch):
    ckpt = str(make_checkpoint(tmp_path / "run" / "best.pt"))
    monkeypatch.setattr(inspect_command, "SVG_MAX_CHARS", 50)
    monkeypatch.setattr(inspect_command, "trace_into", refuse_to_trace)
    picture = tmp_path / "n.svg"
    result = invoke(ckpt, "--text-file", str(text_file), "-l", "1", "-n", "0", "--svg", str(picture))
    assert result.exit_code == 1 and not picture.exists()
    message = " ".join(result.stderr.split())  # rich wraps lines
    chars = len(JAVA_SNIPPET * 3)
    assert f"--svg draws at most 50 characters and this text has {chars:,}; add --max-chars 50" in message
    assert len(result.stderr.strip().splitlines()) <= 2 and "Traceback" not in result.output


def test_html_of_a_long_text_shows_its_start_and_says_so(tmp_path, text_file, monkeypatch):
    inspection_ckpt = make_checkpoint(tmp_path / "run" / "best.pt")
    per_char = 2 * 16 * 6
    page_bytes = (
        explorer.FIXED_BYTES
        + 28 * per_char
        + 120 * (math.ceil(per_char * 4 / 3 * 1.001) + explorer.OTHER_BYTES_PER_CHAR)
    )
    monkeypatch.setattr(explorer, "MAX_PAGE_BYTES", page_bytes)  # a page holds 120 characters
    out = tmp_path / "page.html"
    result = invoke(str(inspection_ckpt), "--text-file", str(text_file), "--html", str(out))
    assert result.exit_code == 0, result.output
    stderr = " ".join(result.stderr.split())  # rich wraps lines
    assert f"it shows the first 120 of {len(JAVA_SNIPPET * 3):,}" in stderr and "--max-chars" in stderr
    page = out.read_text(encoding="utf-8")
    data = json.loads(page.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    assert data["text"] == (JAVA_SNIPPET * 3)[:120]
    assert f"its first 120 of {len(JAVA_SNIPPET * 3):,} characters: the most one page holds" in data["source"]


def test_constant_feature_is_refused_before_tracing(tmp_path, monkeypatch):
    monkeypatch.setattr(neurons, "trace_joined", refuse_to_trace)
    result = invoke(str(make_checkpoint(tmp_path / "run" / "best.pt")), "--find", "indent", "--text", "name")
    assert result.exit_code == 1 and "constant" in result.stderr
