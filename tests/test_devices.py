"""--device everywhere: every command resolves auto to a CUDA GPU where there is one (checked here
without one, by making torch say there is and stopping at the first move onto it), refuses a
device that is not there in one line, and a checkpoint saved from a GPU loads on a CPU-only machine."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charlstm.analysis.neurons import open_checkpoint
from charlstm.analysis.tracing import trace_weights
from charlstm.cli import app
from charlstm.core import checkpoint as checkpoint_module
from charlstm.core.backend import cpu_threads
from charlstm.core.checkpoint import load_checkpoint
from charlstm.core.errors import CharlstmError
from tests.conftest import make_checkpoint, make_dataset

runner = CliRunner()
NO_GPU = not torch.cuda.is_available()
TEXT = "public String greet() {\n    return name;\n}\n"


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), result.output
    assert sum(line.startswith("error:") for line in lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def saved_from_a_gpu(src: Path, dst: Path) -> Path:
    """A copy of checkpoint `src` whose tensors say they were saved from cuda:0, as a GPU run's are.

    torch.save records each storage's device as a string in data.pkl (pickle protocol 2: BINUNICODE,
    a 4-byte length and the bytes); only that string changes.
    """
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            body = zin.read(info)
            if info.filename.endswith("/data.pkl"):
                assert body.count(cpu) == 1, "the checkpoint's tensors are not recorded as expected"
                body = body.replace(cpu, cuda)
            zout.writestr(info, body)
    return dst


@pytest.fixture
def gpu_checkpoint(tmp_path) -> tuple[Path, Path]:
    """(a checkpoint, the same one as a GPU run would have saved it)"""
    original = make_checkpoint(tmp_path / "cpu-run" / "best.pt")
    (tmp_path / "gpu-run").mkdir()
    return original, saved_from_a_gpu(original, tmp_path / "gpu-run" / "best.pt")


# ----- a model trained on either device loads on either -------------------------------------------


def test_a_checkpoint_saved_from_a_gpu_loads_on_the_cpu(gpu_checkpoint):
    original, from_gpu = gpu_checkpoint
    if NO_GPU:  # the copy really claims a GPU: without a map_location, torch refuses it here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(from_gpu, weights_only=True)
    payload = load_checkpoint(from_gpu)
    assert all(t.device.type == "cpu" for t in payload["model"].values())
    for name, tensor in load_checkpoint(original)["model"].items():
        assert torch.equal(payload["model"][name], tensor), name


def test_load_checkpoint_hands_torch_load_a_map_location(tiny_checkpoint, monkeypatch):
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "load", spy)
    load_checkpoint(tiny_checkpoint)
    assert seen["map_location"] == "cpu" and seen["weights_only"] is True


def test_a_gpu_saved_model_samples_evaluates_and_inspects_on_the_cpu_as_the_original(gpu_checkpoint, tmp_path):
    text_file = tmp_path / "text.java"
    text_file.write_text(TEXT)
    commands = (
        ["inspect-neuron", "--layer", "1", "--neuron", "3", "--text", TEXT],
        ["inspect-neuron", "--find", "indent", "--json", "--text", TEXT],
        ["sample", "--length", "30", "--seed", "3", "--prime", "public ", "--precision", "fp32"],
        ["eval", "--text-file", str(text_file), "--precision", "fp32", "--json"],
    )
    for args in commands:
        outputs = []
        for path in gpu_checkpoint:
            result = runner.invoke(app, [args[0], str(path), *args[1:], "--device", "cpu"])
            assert result.exit_code == 0, result.output
            outputs.append(result.stdout.replace(str(path), "CHECKPOINT"))
        if args[0] == "eval":  # everything but the timings
            outputs = [{k: v for k, v in json.loads(out).items() if "sec" not in k} for out in outputs]
        assert outputs[0] == outputs[1], args


# ----- auto is a GPU where there is one -------------------------------------------------------------


class MovedOntoTheGpu(CharlstmError):
    """Raised where a module would move off the CPU: the command got that far on that device."""


@pytest.fixture
def pretend_gpu(monkeypatch):
    """torch says a CUDA GPU is present; the first module moved onto a non-CPU device stops the command
    with a one-line error naming the device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # Optimizers ask whether CUDA is capturing a graph once is_available says yes; on a CUDA build of
    # torch with no driver that question itself fails, where a real GPU would answer no.
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    real_to = torch.nn.Module.to

    def to(self, *args, **kwargs):
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and device.type != "cpu":
            raise MovedOntoTheGpu(f"moved onto {device}")
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", to)


def command_lines(tmp_path: Path) -> dict[str, list[str]]:
    ckpt = str(make_checkpoint(tmp_path / "run" / "best.pt"))
    text_file = tmp_path / "text.java"
    text_file.write_text(TEXT)
    data = make_dataset(tmp_path / "data" / "tiny", TEXT * 20, TEXT * 2)
    return {
        "inspect-neuron": ["inspect-neuron", ckpt, "--layer", "1", "--neuron", "0", "--text", TEXT],
        "inspect-neuron --ablate": ["inspect-neuron", ckpt, "--ablate", "1:2", "--text", TEXT],
        "experiment": ["experiment", "counter", "--steps", "2", "--out-dir", str(tmp_path / "exp"), "--quiet"],
        "sample": ["sample", ckpt, "--length", "5", "--precision", "fp32"],
        "eval": ["eval", ckpt, "--text-file", str(text_file), "--precision", "fp32"],
        "train": [
            "train",
            "--data",
            str(data.path),
            "--out",
            str(tmp_path / "out"),
            "--hidden",
            "8",
            "--seq-len",
            "8",
            "--steps",
            "1",
            "--precision",
            "fp32",
        ],
    }


@pytest.mark.parametrize(
    "command", ["inspect-neuron", "inspect-neuron --ablate", "experiment", "sample", "eval", "train"]
)
def test_auto_resolves_to_the_gpu_where_torch_sees_one(command, tmp_path, pretend_gpu):
    argv = command_lines(tmp_path)[command]
    one_line_error(runner.invoke(app, argv), "moved onto cuda")
    one_line_error(runner.invoke(app, [*argv, "--device", "auto"]), "moved onto cuda")


@pytest.mark.parametrize("command", ["inspect-neuron", "inspect-neuron --ablate", "experiment"])
def test_device_cpu_stays_on_the_cpu_where_a_gpu_is_present(command, tmp_path, pretend_gpu):
    result = runner.invoke(app, [*command_lines(tmp_path)[command], "--device", "cpu"])
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(not NO_GPU, reason="this torch sees a CUDA GPU")
@pytest.mark.parametrize("command", ["inspect-neuron", "experiment", "sample", "eval", "train"])
def test_cuda_asked_for_without_one_is_a_one_line_error(command, tmp_path):
    one_line_error(runner.invoke(app, [*command_lines(tmp_path)[command], "--device", "cuda"]), "cuda")


@pytest.mark.parametrize(
    "command, device, fragment",
    [
        ("inspect-neuron", "tpu", "--device must be one of"),
        ("experiment", "tpu", "--device must be one of"),
        ("experiment", "mps", "--device must be one of auto, cpu, cuda"),
        # torch knows these names, but sampling cannot run there: a traceback before
        ("sample", "meta", "unknown device 'meta'"),
        ("sample", "xpu", "unknown device 'xpu'"),
        ("sample", "mkldnn", "unknown device"),
    ],
)
def test_an_unknown_device_is_a_one_line_error(command, device, fragment, tmp_path):
    result = runner.invoke(app, [*command_lines(tmp_path)[command], "--device", device])
    one_line_error(result, fragment)
    assert "Warning" not in result.stderr  # torch warns of a deprecated name as it parses it


def test_a_gpu_index_beyond_the_gpus_there_are_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    argv = command_lines(tmp_path)["sample"]
    one_line_error(runner.invoke(app, [*argv, "--device", "cuda:3"]), "cuda:3", "1 GPU")


def test_auto_inspects_on_the_cpu_where_there_is_no_gpu(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert open_checkpoint(tiny_checkpoint, device="auto").device.type == "cpu"
    runs = [
        runner.invoke(
            app, ["inspect-neuron", str(tiny_checkpoint), "--find", "indent", "--json", "--text", TEXT, *extra]
        )
        for extra in ([], ["--device", "cpu"])
    ]
    assert runs[0].exit_code == runs[1].exit_code == 0 and runs[0].stdout == runs[1].stdout


# ----- what changes off the CPU ----------------------------------------------------------------------


def test_the_trace_reads_float32_weights_everywhere(tiny_checkpoint):
    model = open_checkpoint(tiny_checkpoint).model
    assert trace_weights(model) == trace_weights(model, exact=True) == torch.float32
    off_cpu = model.to("meta")  # parameters that live elsewhere, as on a GPU
    assert trace_weights(off_cpu) == torch.float32


def test_thread_counts_are_set_only_for_work_on_the_cpu():
    assert cpu_threads(torch.device("cpu"), 1) == 1
    assert cpu_threads(torch.device("cuda"), 1) is None
    assert cpu_threads(torch.device("mps"), 3) is None
