"""`charlstm sample --model NAME`: a shipped model by name, or a path as CHECKPOINT takes."""

import pytest
from typer.testing import CliRunner

import charlstm.core.checkpoint as checkpoint_module
from charlstm.cli import app
from charlstm.core.errors import CharlstmError
from conftest import make_lively_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def sample(*args):
    return runner.invoke(app, ["sample", "--length", "40", "--seed", "3", "--device", "cpu", "--no-color", *args])


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """Shipped models in a temporary checkpoints/: python (a lively model), java not (yet) there."""
    folders = {
        "python": tmp_path / "checkpoints" / "pretrained-python",
        "java": tmp_path / "checkpoints" / "pretrained-java",
    }
    make_lively_checkpoint(folders["python"] / "best.pt", seed=1)
    monkeypatch.setattr(checkpoint_module, "SHIPPED_MODELS", folders)
    monkeypatch.setattr(checkpoint_module, "PRETRAINED_RUN", folders["python"])
    monkeypatch.chdir(tmp_path)
    return folders


def test_a_shipped_name_samples_that_model(shipped):
    by_name, by_path = sample("--model", "python"), sample(str(shipped["python"]))
    assert by_name.exit_code == 0, by_name.output
    assert by_name.stdout == by_path.stdout and len(by_name.stdout) >= 40
    make_lively_checkpoint(shipped["java"] / "best.pt", seed=2)
    java = sample("--model", "java")
    assert java.exit_code == 0 and java.stdout != by_name.stdout


def test_an_unshipped_or_unknown_name_is_one_line_listing_the_shipped(shipped):
    result = sample("--model", "java")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "'java' is not shipped" in result.stderr and "shipped: python" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = sample("--model", "cobol")
    assert (
        result.exit_code == 1
        and "unknown model 'cobol'" in result.stderr
        and "shipped models are python" in result.stderr
    )


def test_model_takes_a_path_but_not_beside_a_checkpoint(shipped, tmp_path):
    run = make_lively_checkpoint(tmp_path / "mine" / "best.pt", seed=5).parent
    by_model, by_path = sample("--model", str(run)), sample(str(run))
    assert by_model.exit_code == by_path.exit_code == 0 and by_model.stdout and by_model.stdout == by_path.stdout
    result = sample(str(run), "--model", "python")
    assert result.exit_code == 1 and "not both" in result.stderr


def test_without_a_run_sample_uses_the_python_model_even_beside_a_shipped_java(shipped):
    make_lively_checkpoint(shipped["java"] / "best.pt", seed=2)  # newer than the python one
    assert checkpoint_module.resolve_checkpoint(None) == shipped["python"] / "best.pt"
    default, named = sample(), sample("--model", "python")
    assert default.exit_code == named.exit_code == 0 and default.stdout and default.stdout == named.stdout
    with pytest.raises(CharlstmError, match="shipped models are java, python|shipped models are python, java"):
        checkpoint_module.resolve_model("c++")


@pytest.mark.parametrize(
    "argv, named",
    [
        (["sample", "--model", ""], "--model"),
        (["sample", ""], "CHECKPOINT"),
        (["eval", ""], "CHECKPOINT"),
        (["inspect-neuron", "", "--layer", "1", "--neuron", "0", "--text", "x = 1"], "CHECKPOINT"),
    ],
)
def test_an_empty_path_is_an_error_that_names_the_option(shipped, argv, named):
    """Not '. holds no best.pt or latest.pt' (an empty path read as the current folder)."""
    make_lively_checkpoint(shipped["python"].parent.parent / "best.pt", seed=4)  # even where "." holds one
    result = runner.invoke(app, argv)
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and f"{named} is empty" in message, message


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "--length", "5", "--seed", "1", "--device", "cpu", "--clamp", "1:0=1"],
        ["eval", "--text-file", "@text", "--device", "cpu"],
        ["eval", "--per-char", "--text-file", "@text", "--device", "cpu"],
        ["inspect-neuron", "--layer", "1", "--neuron", "0", "--text", "a = b"],
    ],
)
def test_each_command_opens_its_checkpoint_once(shipped, tmp_path, monkeypatch, argv):
    """One resolve and one load on the way to a model (open_model), not one per layer of the code."""
    calls = []
    for name in ("resolve_checkpoint", "load_checkpoint"):
        real = getattr(checkpoint_module, name)
        monkeypatch.setattr(
            checkpoint_module, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k)
        )
    text = tmp_path / "t.py"
    text.write_text("a = b\n", encoding="utf-8")
    result = runner.invoke(
        app, [argv[0], str(shipped["python"]), *[str(text) if a == "@text" else a for a in argv[1:]]]
    )
    assert result.exit_code == 0, result.output
    assert calls == ["resolve_checkpoint", "load_checkpoint"]


def test_open_model_takes_a_file_a_folder_or_none(shipped):
    import torch

    by_folder = checkpoint_module.open_model(shipped["python"], "cpu")
    by_file = checkpoint_module.open_model(shipped["python"] / "best.pt", torch.device("cpu"))
    newest = checkpoint_module.open_model(None)
    assert by_folder.path == by_file.path == newest.path == shipped["python"] / "best.pt"
    assert by_folder.device == torch.device("cpu") and not by_folder.model.training
    assert by_folder.vocab == by_file.vocab and by_folder.language == by_folder.payload["dataset"]["language"]
    with pytest.raises(CharlstmError, match="--device must be one of"):
        checkpoint_module.open_model(shipped["python"], "tpu")
