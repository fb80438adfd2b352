"""Shared fixtures: a tiny code corpus as a dataset, and a tiny untrained checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from charlstm.core.checkpoint import load_checkpoint, save_checkpoint
from charlstm.core.model import CharRNN, ModelConfig
from charlstm.core.vocab import Vocab
from charlstm.corpus.dataset import Dataset, write_dataset

# train() options for a model small enough that each step takes a millisecond or two. Precision is
# pinned: `auto` means bf16 on an AMX CPU and fp32 elsewhere, and tests assert exact values.
TINY_TRAIN = {
    "layers": 2,
    "hidden": 24,
    "embed": 8,
    "batch_size": 4,
    "seq_len": 16,
    "threads": 1,
    "log_every": 1,
    "precision": "fp32",
}

JAVA_SNIPPET = """public class Greeter {
    private final String name;

    public Greeter(String name) {
        this.name = name; // remember who to greet
    }

    public String greet() {
        if (name.isEmpty()) {
            return "Hello, world!";
        }
        return "Hello, " + name + "!";
    }
}
"""

PYTHON_SNIPPET = '''def greet(name):
    """Say hello."""
    if not name:
        return "Hello, world!"  # nobody there
    for ch in name:
        print(ch)
    return f"Hello, {name}!"
'''


def make_dataset(path: Path, train_text: str, val_text: str, language: str | None = "java") -> Dataset:
    counts: dict[str, int] = {}
    for ch in train_text + val_text:
        counts[ch] = counts.get(ch, 0) + 1
    vocab = Vocab.from_counts(counts)
    return write_dataset(path, vocab, vocab.encode(train_text), vocab.encode(val_text), {"language": language})


@pytest.fixture
def tiny_dataset(tmp_path) -> Dataset:
    """A few KB of Java: enough to see a loss fall in a handful of steps."""
    return make_dataset(tmp_path / "data" / "tiny", JAVA_SNIPPET * 12, JAVA_SNIPPET * 2)


SNIPPET_VOCAB = Vocab.from_counts({ch: 1 for ch in JAVA_SNIPPET + PYTHON_SNIPPET})


def make_lively_model(kind: str, seed: int, layers: int = 2, hidden: int = 12) -> CharRNN:
    """An untrained model over SNIPPET_VOCAB whose recurrent weights are scaled up, so its gates
    leave their middle range (a default init keeps every gate near 0.5)."""
    torch.manual_seed(seed)
    # forget_bias 1: the init these fixtures were calibrated with (the default became PyTorch's own)
    model = CharRNN(
        ModelConfig(vocab_size=len(SNIPPET_VOCAB), kind=kind, layers=layers, hidden=hidden, embed=6, forget_bias=1.0)
    )
    with torch.no_grad():
        for p in model.rnn.parameters():
            p.mul_(3)
    return model.eval()


def make_checkpoint(path: Path, kind: str = "lstm", layers: int = 2, hidden: int = 16, seed: int = 0) -> Path:
    """An untrained model saved in the checkpoint format, for commands that only read one."""
    torch.manual_seed(seed)
    counts = {ch: 1 for ch in JAVA_SNIPPET + PYTHON_SNIPPET}
    vocab = Vocab.from_counts(counts)
    # forget_bias 1: the init the tests reading this model were calibrated with (PyTorch's is the default now)
    model = CharRNN(
        ModelConfig(vocab_size=len(vocab), kind=kind, layers=layers, hidden=hidden, embed=8, forget_bias=1.0)
    )
    save_checkpoint(
        path,
        {
            "model_config": model.config.to_dict(),
            "vocab": vocab.symbols,
            "model": model.state_dict(),
            "dataset": {"name": "tiny", "path": "data/tiny", "content_hash": None, "language": "java"},
            "step": 0,
        },
    )
    return path


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    return make_checkpoint(tmp_path / "run" / "best.pt")


def make_lively_checkpoint(path: Path, hidden: int = 32, seed: int = 1, scale: float = 0.6, **extra) -> Path:
    """An untrained model whose weights are scaled up, so its choices vary from step to step;
    `extra` keys are added to the checkpoint (e.g. precision)."""
    make_checkpoint(path, layers=2, hidden=hidden, seed=seed)
    payload = load_checkpoint(path)
    generator = torch.Generator().manual_seed(seed)
    payload["model"] = {k: torch.randn(v.shape, generator=generator) * scale for k, v in payload["model"].items()}
    save_checkpoint(path, {**payload, **extra})
    return path


@pytest.fixture
def lively_checkpoint(tmp_path) -> Path:
    return make_lively_checkpoint(tmp_path / "lively" / "best.pt")


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and a second one stalls on shared cores.
    Test modules that sample or trace use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
