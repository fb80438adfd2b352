"""Options and their defaults, without torch: the model's shape, the training config, the names of
the devices and precisions, the bounds every command shares, and ingest's presets. The CLI shows
these in its --help, which therefore starts without importing torch (seconds); the modules that do
the work import them from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from enum import Enum

from .errors import CharlstmError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # autocast precisions (train, eval)
WEIGHT_PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")  # the step engine's weights (sample)
DEVICES = ("auto", "cuda", "mps", "cpu")  # every --device; sample also takes an index (cuda:1)
STUDY_DEVICES = ("auto", "cpu", "cuda")  # experiment: its studies are checked on a CPU and a CUDA GPU only
# One bound for every --seed. torch.manual_seed takes up to 2**64 - 1, but training seeds with
# seed + rank (dropout) and, resuming under torchrun, seed + rank + step (step ≤ MAX_STEPS = 2**53):
# 2**63 - 1 leaves that headroom, fits a signed 64-bit integer, and a seed one command takes, every
# command takes.
MAX_SEED = 2**63 - 1
MAX_THREADS = 4096  # torch.set_num_threads takes a C int
# The model's shape when not given (TrainConfig, and ModelConfig for a checkpoint that omits a field).
DEFAULT_KIND = "lstm"
DEFAULT_LAYERS = 3
DEFAULT_HIDDEN = 512
DEFAULT_EMBED = 64
RNN_KINDS = ("lstm", "gru", "rnn")
MAX_LAYERS = 100  # far past any use; building a stack costs time per layer even before any weight exists
# float32's range: a number given for a float32 tensor must lie within it (1e39 becomes inf, 1e-46 becomes 0).
FLOAT32_MAX = 3.4028234663852886e38
MAX_STEPS = 2**53  # steps and schedule positions are computed in float64, exact up to here


@dataclass
class ModelConfig:
    """The model's shape (a checkpoint's model_config); model.py builds it, this module checks it."""

    vocab_size: int
    kind: str = DEFAULT_KIND  # lstm | gru | rnn (tanh)
    layers: int = DEFAULT_LAYERS  # stacked recurrent layers
    hidden: int = DEFAULT_HIDDEN  # units per layer
    embed: int = DEFAULT_EMBED  # character embedding width
    dropout: float = 0.0  # between recurrent layers and before the head, training only
    forget_bias: float | None = None  # LSTM forget gates' bias at init; None: PyTorch's uniform init

    def __post_init__(self) -> None:
        if self.kind not in RNN_KINDS:
            raise CharlstmError(f"unknown model kind {self.kind!r}; choose one of {', '.join(RNN_KINDS)}")
        for name in ("vocab_size", "layers", "hidden", "embed"):
            if getattr(self, name) < 1:
                raise CharlstmError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.layers > MAX_LAYERS:
            raise CharlstmError(f"--layers must be at most {MAX_LAYERS}, got {self.layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise CharlstmError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.forget_bias is not None and not math.isfinite(self.forget_bias):
            raise CharlstmError(f"--forget-bias must be a finite number, got {self.forget_bias}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


class Preset(str, Enum):
    """Corpora every user already has on disk (`charlstm ingest --preset`)."""

    python_stdlib = "python-stdlib"
    jdk = "jdk"


@dataclass
class TrainConfig:
    # data and output
    data: str = "data/python-stdlib"  # an ingested dataset folder (`charlstm ingest`)
    out: str | None = None  # run folder; None → checkpoints/<dataset name>-<model>
    # model
    model: str = DEFAULT_KIND  # lstm | gru | rnn (tanh)
    layers: int = DEFAULT_LAYERS  # stacked recurrent layers
    hidden: int = DEFAULT_HIDDEN  # units per layer
    embed: int = DEFAULT_EMBED  # character embedding width
    dropout: float = 0.0  # when not given, defaults.py picks it from the passes and the model size
    # LSTM forget-gate bias at init; None: PyTorch's (1 cost short runs, docs/performance.md, "Time to quality")
    forget_bias: float | None = None
    # optimisation
    batch_size: int = 64  # lanes: contiguous streams through the corpus (a GPU: 256 per process, defaults.py)
    seq_len: int = 128  # characters back-propagated through per step (truncated BPTT)
    # peak AdamW learning rate (scaled with the lanes above 64, defaults.py); 2e-3 trained slower
    # (docs/performance.md, "Time to quality")
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at lr × this
    decay_fraction: float = (
        0.2  # the rate is held at its peak, then decays over the run's last fifth (1: cosine over all of it)
    )
    # linear warm-up (capped at a twentieth of a known length); any cost short runs
    # (docs/performance.md, "Time to quality")
    warmup_steps: int = 0
    weight_decay: float = 0.01  # AdamW decoupled decay, on weight matrices only
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    steps: int | None = None  # stop after this many steps in all (the schedule's length)
    epochs: float | None = None  # or after this many passes over the training split
    minutes: float | None = None  # or after this much wall-clock time in this invocation
    seed: int = 1337  # model initialisation, dropout
    # logging and checkpoints
    eval_every: int = 500  # steps between validations (0: only at the end)
    patience: int | None = None  # stop after this many validations without a new best (best.pt kept)
    save_every: int = 500  # steps between saves of latest.pt (0: only at the end)
    log_every: int = 10  # steps between metrics lines (and the only GPU syncs)
    # backend
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    device: str = "auto"  # auto | cuda | mps | cpu
    threads: int | None = None  # CPU threads; None → the cores this process may use
    # fine-tuning
    init_from: str | None = None  # start from a trained model (checkpoint, run folder or shipped name)
    # recorded, not an option: the defaults chosen for this device and corpus, option → reason
    chosen: dict | None = None

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size,
            kind=self.model,
            layers=self.layers,
            hidden=self.hidden,
            embed=self.embed,
            dropout=self.dropout,
            forget_bias=self.forget_bias,
        )

    def validate(self) -> None:
        """Nonsense options fail here, in one line, before anything is read or written."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise CharlstmError(message)

        self.model_config(vocab_size=2)  # kind, layers, hidden, embed, dropout
        need(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(self.seq_len >= 1, f"--seq-len must be at least 1, got {self.seq_len}")
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive number, got {self.lr}")
        need(0 < self.min_lr_ratio <= 1, f"--min-lr-ratio must be in (0, 1], got {self.min_lr_ratio}")
        need(0 < self.decay_fraction <= 1, f"--decay-fraction must be in (0, 1], got {self.decay_fraction}")
        need(self.warmup_steps >= 0, f"--warmup-steps must be 0 or more, got {self.warmup_steps}")
        need(0 <= self.weight_decay < math.inf, f"--weight-decay must be 0 or more, got {self.weight_decay}")
        need(self.grad_clip >= 0, f"--grad-clip must be 0 (off) or more, got {self.grad_clip}")
        need(self.steps is None or self.steps >= 1, f"--steps must be at least 1, got {self.steps}")
        need(self.steps is None or self.steps <= MAX_STEPS, f"--steps must be at most {MAX_STEPS:,}, got {self.steps}")
        need(
            self.epochs is None or 0 < self.epochs < math.inf, f"--epochs must be a positive number, got {self.epochs}"
        )
        need(
            self.minutes is None or 0 < self.minutes < math.inf,
            f"--minutes must be a positive number, got {self.minutes}",
        )
        need(0 <= self.seed <= MAX_SEED, f"--seed must be between 0 and {MAX_SEED}, got {self.seed}")
        for name in ("eval_every", "save_every"):
            need(getattr(self, name) >= 0, f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        need(self.log_every >= 1, f"--log-every must be at least 1, got {self.log_every}")
        need(self.patience is None or self.patience >= 1, f"--patience must be at least 1, got {self.patience}")
        need(self.patience is None or self.eval_every > 0, "--patience counts validations: give --eval-every N too")
        check_threads(self.threads)
        need(
            self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        )
        need(self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")


def check_threads(threads: int | None) -> None:
    """--threads (None: the command's default): the one bound train and sample share."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise CharlstmError(f"--threads must be between 1 and {MAX_THREADS}, got {threads}")


_FIELD_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "dict": (dict,)}


def malformed_fields(saved: dict) -> list[str]:
    """The fields of a saved training config (a checkpoint's train_config) holding a value of the
    wrong type, as "data: 123": an edited file, which would fail deep inside training otherwise."""
    bad = []
    for f in fields(TrainConfig):
        if f.name not in saved:
            continue
        value, parts = saved[f.name], f.type.split(" | ")
        if value is None and "None" in parts:
            continue
        allowed = tuple(t for part in parts for t in _FIELD_TYPES.get(part, ()))
        if isinstance(value, bool) or not isinstance(value, allowed):
            bad.append(f"{f.name}: {value!r}")
    return bad
