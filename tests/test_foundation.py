"""The shared pieces: vocabulary, dataset format, checkpoint safety, the CLI shell."""

import json
import os
import pickle
import stat

import pytest
import torch
from typer.testing import CliRunner

from charlstm import __version__
from charlstm.cli import app
from charlstm.core.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from charlstm.core.errors import CharlstmError
from charlstm.core.files import atomic_write
from charlstm.core.vocab import DOC_SEP, UNK, Vocab
from charlstm.corpus.dataset import load_dataset, write_dataset

runner = CliRunner()


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    assert runner.invoke(app, ["-h"]).exit_code == 0


def test_vocab_is_deterministic_and_maps_rare_characters_to_unknown():
    vocab = Vocab.from_counts({"b": 5, "a": 3, "é": 1}, min_count=2)
    assert vocab.symbols == [DOC_SEP, UNK, "a", "b"]
    assert vocab.decode(vocab.encode("abé")) == "ab" + UNK
    assert vocab.unknown_chars("abéz") == ["é", "z"]
    assert vocab.dtype.itemsize == 1


def test_dataset_round_trip_and_size_check(tiny_dataset):
    ds = load_dataset(tiny_dataset.path)
    assert ds.vocab.decode(ds.tokens("val")[:6]) == "public"
    (ds.path / "val.bin").write_bytes(b"\x00")
    with pytest.raises(CharlstmError, match="wrong size"):
        load_dataset(ds.path)


def test_dataset_errors_name_the_problem(tmp_path):
    with pytest.raises(CharlstmError, match="not found"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CharlstmError, match="not a charlstm dataset"):
        load_dataset(tmp_path / "bad")


def test_checkpoint_loads_and_rebuilds_the_model(tiny_checkpoint):
    model, vocab = model_from_checkpoint(load_checkpoint(tiny_checkpoint))
    assert model.config.layers == 2 and len(vocab) == model.config.vocab_size
    assert resolve_checkpoint(tiny_checkpoint.parent) == tiny_checkpoint


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "charlstm-checkpoint", "version": 1, "x": Payload()}, path, pickle_module=pickle)
    with pytest.raises(CharlstmError, match="refusing"):
        load_checkpoint(path)


def test_corrupt_checkpoint_is_reported(tmp_path, tiny_checkpoint):
    path = tmp_path / "broken.pt"
    path.write_bytes(tiny_checkpoint.read_bytes()[:100])
    with pytest.raises(CharlstmError, match="corrupt"):
        load_checkpoint(path)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, tiny_checkpoint, monkeypatch):
    before = tiny_checkpoint.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CharlstmError, match="No space left"):
        save_checkpoint(tiny_checkpoint, {"step": 1})
    assert tiny_checkpoint.read_bytes() == before
    assert [p.name for p in tiny_checkpoint.parent.iterdir()] == [tiny_checkpoint.name]


def test_export_for_inference_drops_resume_state(tmp_path, tiny_checkpoint):
    from charlstm.core.checkpoint import export_for_inference

    payload = load_checkpoint(tiny_checkpoint)
    save_checkpoint(
        tiny_checkpoint,
        {**payload, "optimizer": {"state": {}, "param_groups": []}, "rng": {"torch": torch.get_rng_state()}},
    )
    slim = export_for_inference(tiny_checkpoint, tmp_path / "slim" / "best.pt")
    reloaded = load_checkpoint(tmp_path / "slim" / "best.pt")
    assert "optimizer" not in reloaded and "rng" not in reloaded and set(slim) <= set(reloaded)
    model, _ = model_from_checkpoint(reloaded)
    original, _ = model_from_checkpoint(payload)
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), original.state_dict().values(), strict=True)
    )


def test_written_files_get_the_mode_open_would_give(tmp_path, tiny_dataset):
    """Temporary files are private (0600); what lands in place must not stay so."""
    mask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "out.txt", lambda f: f.write(b"x"))
        assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644
        write_dataset(tmp_path / "ds", tiny_dataset.vocab, [2, 3], [4], {})
        assert stat.S_IMODE((tmp_path / "ds").stat().st_mode) == 0o755
    finally:
        os.umask(mask)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 3])
def test_parameter_shapes_are_the_built_models_own(kind, layers):
    from charlstm.core.model import CharRNN, ModelConfig, parameter_shapes

    config = ModelConfig(vocab_size=23, kind=kind, layers=layers, hidden=12, embed=5)
    built = {name: tuple(tensor.shape) for name, tensor in CharRNN(config).state_dict().items()}
    assert list(parameter_shapes(config).items()) == list(built.items())


@pytest.mark.slow  # a process of its own: what it imports is the point
def test_opening_a_checkpoint_does_not_import_torchs_compiler():
    """Checking a checkpoint's weights against its config once built the model on the meta device,
    whose random initialisers import torch._dynamo: a second added to every command's start."""
    import subprocess
    import sys
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "pretrained-python"
    code = (
        "import sys; from charlstm.core.checkpoint import open_model; "
        f"open_model({str(shipped)!r}); print('torch._dynamo' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr
