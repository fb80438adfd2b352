"""Training: stateful truncated BPTT over memory-mapped lanes, mixed precision, exact resume, DDP.

Read top to bottom: `TrainConfig` (every option and its default), `LaneBatcher` (the data),
`choose_precision` (autocast and grad scaler), `lr_at` (the schedule), `Trainer` (set-up, the
loop, checkpoints), and `train()`, which the CLI calls.

Exact resumption: a checkpoint holds the weights, the optimizer and scaler, the step, the data
position (epoch and window), the hidden state of every lane, the learning-rate schedule's fixed
numbers and the RNG states, so on the CPU N steps + resume + N steps reproduce 2N steps bit for bit.

Multi-GPU: under `torchrun --nproc-per-node N -m charlstm train ...` (WORLD_SIZE > 1) each process
takes batch_size / N of the lanes, so the global batch, the schedule and the numbers match a
single-process run; gradients are averaged by DistributedDataParallel. Only rank 0 logs, evaluates
and saves; the checkpoint holds all lanes' hidden states (gathered), so a run started on N processes
can resume on any number that divides the batch size.
"""

from __future__ import annotations

import functools
import glob
import json
import math
import os
import random
import re
import shlex
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from charlstm import lock
from charlstm.checkpoint import BEST, LATEST, append_line, atomic_write, load_checkpoint, save_checkpoint
from charlstm.dataset import Dataset, load_dataset, locate_recorded_dataset
from charlstm.errors import CharlstmError
from charlstm.evaluate import LN2, bits_per_char
from charlstm.finetune import (
    FINETUNE_LR,
    FINETUNE_WARMUP_STEPS,
    SHAPE_OPTIONS,
    InitSource,
    check_shape_options,
    load_init_source,
    merged_vocab,
    token_map,
    transfer_weights,
)
from charlstm.model import CharRNN, ModelConfig, detach_state
from charlstm.vocab import Vocab

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cuda", "mps", "cpu")
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit; distributed ranks add their rank and the step to it
MAX_THREADS = 4096  # torch.set_num_threads takes a C int


@dataclass
class TrainConfig:
    # data and output
    data: str = "data/python-stdlib"  # an ingested dataset folder (`charlstm ingest`)
    out: str | None = None  # run folder; None → checkpoints/<dataset name>-<model>
    # model
    model: str = "lstm"  # lstm | gru | rnn (tanh)
    layers: int = 3  # stacked recurrent layers
    hidden: int = 512  # units per layer
    embed: int = 64  # character embedding width
    dropout: float = 0.0  # off: runs of minutes underfit; 0.1–0.3 helps long runs on small corpora
    # optimisation
    batch_size: int = 64  # lanes: contiguous streams through the corpus, one row of a batch each
    seq_len: int = 128  # characters back-propagated through per step (truncated BPTT)
    lr: float = 2e-3  # peak AdamW learning rate
    min_lr_ratio: float = 0.1  # cosine decay ends at lr × this
    warmup_steps: int = 20  # linear warm-up (capped at a tenth of the run when its length is known)
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

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size,
            kind=self.model,
            layers=self.layers,
            hidden=self.hidden,
            embed=self.embed,
            dropout=self.dropout,
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
        need(self.warmup_steps >= 0, f"--warmup-steps must be 0 or more, got {self.warmup_steps}")
        need(0 <= self.weight_decay < math.inf, f"--weight-decay must be 0 or more, got {self.weight_decay}")
        need(self.grad_clip >= 0, f"--grad-clip must be 0 (off) or more, got {self.grad_clip}")
        need(self.steps is None or self.steps >= 1, f"--steps must be at least 1, got {self.steps}")
        need(self.epochs is None or 0 < self.epochs < math.inf, f"--epochs must be a positive number, got {self.epochs}")
        need(self.minutes is None or 0 < self.minutes < math.inf, f"--minutes must be a positive number, got {self.minutes}")
        need(0 <= self.seed <= MAX_SEED, f"--seed must be between 0 and {MAX_SEED}, got {self.seed}")
        for name in ("eval_every", "save_every"):
            need(getattr(self, name) >= 0, f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        need(self.log_every >= 1, f"--log-every must be at least 1, got {self.log_every}")
        need(self.patience is None or self.patience >= 1, f"--patience must be at least 1, got {self.patience}")
        need(self.patience is None or self.eval_every > 0, "--patience counts validations: give --eval-every N too")
        need(self.threads is None or 1 <= self.threads <= MAX_THREADS, f"--threads must be between 1 and {MAX_THREADS}, got {self.threads}")
        need(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        need(self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")


# Options that may change when a run is resumed: the budget and how it is logged and run.
# Everything else (model shape, data layout, optimiser) is the run's and must stay as it was.
RESUMABLE_OVERRIDES = ("steps", "epochs", "minutes", "patience", "eval_every", "save_every", "log_every", "precision", "device", "threads", "data")


def default_run_dir(data: str, model: str) -> Path:
    return Path("checkpoints") / f"{Path(data).name}-{model}"


# ---------------------------------------------------------------------------------------------
# Data


class LaneBatcher:
    """The training stream cut into `lanes` contiguous lanes; batch k is window k of every lane.

    Lane i covers tokens [i·L, (i+1)·L). Each batch is the next `seq_len` characters of every lane
    (targets: the same window shifted by one), so the hidden state of row i at the end of one batch
    is the right context for row i of the next. After the last full window the position wraps to
    the start of a new epoch and `next()` reports `fresh=True` so the caller resets the state.

    Under DDP, rank r reads lanes [r·lanes/world, (r+1)·lanes/world). Windows are read from the
    memory-mapped file as they are needed: the corpus is never copied into RAM.
    """

    def __init__(self, tokens: np.ndarray, lanes: int, seq_len: int, rank: int = 0, world: int = 1,
                 token_map: np.ndarray | None = None):
        n = len(tokens)
        self.token_map = token_map  # dataset id → model id, for a model whose vocabulary is wider
        self.lane_len = n // lanes
        self.seq_len = seq_len
        self.windows = (self.lane_len - 1) // seq_len  # per epoch; a target needs one character more
        if self.windows < 1:
            need = lanes * (seq_len + 1)
            raise CharlstmError(
                f"the training split has {n:,} characters; --batch-size {lanes} × (--seq-len {seq_len} + 1) "
                f"needs at least {need:,}: lower --batch-size or --seq-len, or ingest more data"
            )
        if lanes % world:
            raise CharlstmError(f"--batch-size {lanes} must be divisible by the number of processes ({world})")
        grid = tokens[: lanes * self.lane_len].reshape(lanes, self.lane_len)  # a view, nothing read
        per_rank = lanes // world
        self.grid = grid[rank * per_rank : (rank + 1) * per_rank]
        self.epoch = 0
        self.window = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(inputs [lanes, T], targets [lanes, T], fresh): fresh when an epoch starts here."""
        if self.window == self.windows:
            self.epoch, self.window = self.epoch + 1, 0
        fresh = self.window == 0
        s = self.window * self.seq_len
        chunk = np.asarray(self.grid[:, s : s + self.seq_len + 1], dtype=np.int64)
        if self.token_map is not None:
            chunk = self.token_map[chunk]
        self.window += 1
        x = torch.from_numpy(np.ascontiguousarray(chunk[:, :-1]))
        y = torch.from_numpy(np.ascontiguousarray(chunk[:, 1:]))
        return x, y, fresh

    def position(self) -> dict:
        return {"epoch": self.epoch, "window": self.window, "windows": self.windows}

    def seek(self, position: dict) -> None:
        self.epoch, self.window = int(position["epoch"]), int(position["window"])
        if not 0 <= self.window <= self.windows:
            raise CharlstmError("the checkpoint's data position does not fit this dataset")


# ---------------------------------------------------------------------------------------------
# Device, threads and precision


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharlstmError("--device cuda: no CUDA GPU is visible to this torch build (try --device cpu)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CharlstmError("--device mps: Apple's Metal backend is not available here (try --device cpu)")
    if name not in DEVICES:
        raise CharlstmError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    return torch.device(name)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_has_native_bf16() -> bool:
    """True where the processor advertises bf16 in hardware (AMX or AVX-512 BF16).

    Used only to word messages: whether bf16 is *chosen* is decided by running a layer
    (`cpu_runs_bf16_rnn`), because oneDNN may be capped below what the CPU offers
    (e.g. ONEDNN_MAX_CPU_ISA=AVX2) and then refuses a bf16 RNN on an AMX machine.
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    if re.search(r"\b(amx_bf16|avx512_bf16)\b", cpuinfo):
        return True
    return "AMX" in torch.backends.cpu.get_cpu_capability().upper()


_RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def probe_rnn_dtype(device: torch.device, dtype: torch.dtype | None, kind: str = "lstm") -> torch.dtype | None:
    """Run a tiny 2-layer recurrent module forward and backward under autocast; return its output dtype.

    None when it fails: the backend (e.g. an old cuDNN for bf16) cannot run it.
    """
    try:
        rnn = _RNN_CLASSES[kind](8, 8, num_layers=2, batch_first=True).to(device)
        x = torch.randn(2, 3, 8, device=device, requires_grad=True)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
        with ctx:
            out, _ = rnn(x)
        out.float().sum().backward()
        return out.dtype
    except (RuntimeError, NotImplementedError, TypeError):
        return None


@functools.cache
def cpu_runs_bf16_rnn(kind: str = "lstm") -> bool:
    """The one probe that decides CPU bf16: does oneDNN run this RNN in bfloat16, in hardware?

    Both must hold: the layer runs under bf16 autocast and returns bfloat16 (oneDNN's bf16 RNN
    kernels need AVX-512 BF16 or AMX *and* permission to use them), and the CPU advertises native
    bf16 (where oneDNN would emulate it, bf16 is slower than fp32).
    """
    return cpu_has_native_bf16() and probe_rnn_dtype(torch.device("cpu"), torch.bfloat16, kind) == torch.bfloat16


@dataclass
class Precision:
    name: str  # bf16 | fp16 | fp32
    device_type: str
    rnn_dtype: str  # what the recurrent layer actually returns under this autocast, e.g. "bfloat16"
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        # A no-op unless fp16: bf16 and fp32 have fp32's range and need no loss scaling.
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")


def choose_precision(requested: str, device: torch.device, kind: str = "lstm") -> Precision:
    """Pick bf16/fp16/fp32 for `device`, checking by running a recurrent layer, never assuming."""
    if requested not in PRECISIONS:
        raise CharlstmError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    dt = device.type

    def made(name: str, reason: str) -> Precision:
        probe = probe_rnn_dtype(device, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name), kind)
        if probe is None:
            hint = ""
            if dt == "cpu":
                hint = (" (oneDNN is capped below the CPU's AMX/AVX-512 BF16, e.g. by ONEDNN_MAX_CPU_ISA)" if cpu_has_native_bf16()
                        else " (this CPU lacks AVX-512 BF16/AMX, which oneDNN's bf16 RNNs need)")
            raise CharlstmError(f"--precision {name}: a {kind.upper()} does not run under {name} autocast on {dt}{hint}; use fp32")
        return Precision(name, dt, str(probe).removeprefix("torch."), reason)

    if dt == "cpu":
        if requested == "fp16":
            raise CharlstmError("--precision fp16 is not supported on the CPU: use bf16 or fp32")
        if requested == "bf16":
            native = cpu_has_native_bf16()
            return made("bf16", "requested" + ("" if native else "; this CPU has no native bf16, so it is emulated and slow"))
        if requested == "fp32":
            return made("fp32", "requested")
        if cpu_runs_bf16_rnn(kind):
            return made("bf16", f"the CPU runs a bf16 {kind.upper()} natively (AMX/AVX-512 BF16)")
        why = "oneDNN is capped below it" if cpu_has_native_bf16() else "the CPU lacks AMX/AVX-512 BF16"
        return made("fp32", f"no native bf16 {kind.upper()} here ({why})")
    if dt == "cuda":
        if requested == "fp32":
            return made("fp32", "requested")
        if requested in ("auto", "bf16"):
            bf16_ok = torch.cuda.is_bf16_supported() and probe_rnn_dtype(device, torch.bfloat16, kind) == torch.bfloat16
            if bf16_ok:
                return made("bf16", "requested" if requested == "bf16" else "the GPU and cuDNN run a bf16 RNN")
            if requested == "bf16":
                raise CharlstmError(
                    f"--precision bf16: this GPU or cuDNN {torch.backends.cudnn.version()} does not run a bf16 "
                    f"{kind.upper()}; use fp16 or fp32"
                )
        if requested == "fp16":
            return made("fp16", "requested")
        if probe_rnn_dtype(device, torch.float16, kind) is not None:
            return made("fp16", "bf16 RNNs unavailable here; fp16 with loss scaling")
        return made("fp32", "neither a bf16 nor an fp16 RNN runs on this GPU")
    # MPS and anything else: fp32 unless asked, and then only if it really runs.
    if requested == "auto":
        return made("fp32", f"the safe choice on {dt}")
    return made(requested, "requested")


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule


def lr_at(
    step: int,
    peak: float,
    warmup: int,
    total: int | None,
    min_ratio: float,
    from_step: int | None = None,
    from_ratio: float = 1.0,
) -> float:
    """The learning rate of the update after `step` earlier updates, a pure function of the step.

    Linear warm-up to `peak`, then cosine decay from peak × from_ratio at `from_step` (default: the
    end of warm-up) to peak × min_ratio at `total`; constant while `total` is unknown. A resumed
    run with a new budget starts a new segment where the old one stood, so the rate never jumps.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    start = warmup if from_step is None else max(from_step, warmup)
    if total is None or total <= start:
        return peak * from_ratio
    progress = min(1.0, (step - start) / (total - start))
    return peak * (min_ratio + (from_ratio - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------------------------------------
# Memory


def training_memory(model_config: ModelConfig, lanes: int, seq_len: int) -> tuple[int, int]:
    """(parameters, bytes) for training a model, roughly: fp32 weights, gradients and AdamW's two
    moments, plus what one step keeps for the backward pass (every layer's gates and states, logits)."""
    try:
        with torch.device("meta"):  # counts the parameters without allocating them
            params = CharRNN(model_config).num_parameters()
    except (RuntimeError, TypeError, ValueError, OverflowError):
        raise CharlstmError(
            f"a {model_config.layers}×{model_config.hidden} model with --embed {model_config.embed} is too large to build"
        ) from None
    per_char = model_config.layers * model_config.hidden * 8 + model_config.embed + 3 * model_config.vocab_size
    return params, 16 * params + 4 * lanes * seq_len * per_char


def available_memory(device: torch.device) -> int | None:
    """Bytes a new allocation can get on `device`, where that is known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    limits = []
    try:
        with open("/proc/meminfo") as f:
            limits += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:  # a container's own limit (cgroup v2)
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            limits.append(int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def check_training_memory(model_config: ModelConfig, lanes: int, seq_len: int, device: torch.device) -> None:
    """Refuse at once, saying how much it needs, a model too large to train here."""
    params, need = training_memory(model_config, lanes, seq_len)
    free = available_memory(device)
    if free is not None and need > free:
        raise CharlstmError(
            f"a {model_config.layers}×{model_config.hidden} {model_config.kind.upper()} has {params:,} parameters: "
            f"training it needs about {_gib(need)} of memory (weights, gradients, optimizer state and one "
            f"step's activations) and {device} has {_gib(free)} available; lower --hidden or --layers "
            f"(or --batch-size and --seq-len)"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Distributed helpers


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) for a plain run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def _gather_lanes(state, world: int):
    """Concatenate every rank's lanes of the hidden state along the batch dimension."""
    if state is None or world == 1:
        return state
    tensors = state if isinstance(state, tuple) else (state,)
    gathered = []
    for t in tensors:
        parts = [torch.empty_like(t, dtype=torch.float32) for _ in range(world)]
        dist.all_gather(parts, t.float().contiguous())  # fp32: every backend gathers it, bf16 round-trips exactly
        gathered.append(torch.cat(parts, dim=1).to(t.dtype))
    return tuple(gathered) if isinstance(state, tuple) else gathered[0]


class TrainingInterrupted(Exception):
    """Ctrl-C: the run was saved; `message` says how to resume it."""


class TrainingStopped(CharlstmError):
    """The loss became NaN or infinite; nothing was saved after the last good checkpoint."""


# ---------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """Set up a run (fresh or resumed), then `run()` the loop."""

    def __init__(self, config: TrainConfig, run_dir: Path, resume_payload: dict | None = None, force: bool = False,
                 init_source: InitSource | None = None, finetune_defaults: str | None = None):
        config.validate()
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.rank, self.world, self.local_rank = _distributed()
        self.main = self.rank == 0

        # Backend first: device, threads, denormals.
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormals slow CPU bf16 training tenfold as activations shrink
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        self.threads = config.threads or max(1, available_cores() // local_world)
        torch.set_num_threads(self.threads)
        if self.device.type == "cuda" and config.precision == "fp32":
            torch.backends.cuda.matmul.allow_tf32 = True  # the head's matmul; cuDNN RNNs use TF32 already
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

        self._check_run_dir(resume=resume_payload is not None, force=force)
        self.precision = choose_precision(config.precision, self.device, kind=config.model)

        # Data.
        self.dataset: Dataset = load_dataset(config.data)
        self.vocab: Vocab = self.dataset.vocab  # the model's; wider than the dataset's when fine-tuning
        if init_source is not None and resume_payload is None:
            self.vocab = merged_vocab(init_source.vocab, self.dataset.vocab)
        if resume_payload is not None:
            old = Vocab(resume_payload["vocab"])
            if config.init_from and all(s in old.index for s in self.vocab.symbols):
                self.vocab = old  # a fine-tuning run keeps its source model's characters
            elif old != self.vocab:
                raise CharlstmError(
                    f"{config.data} has a different vocabulary ({len(self.vocab)} symbols) from the checkpoint's "
                    f"({len(old)}); resume with the dataset the run was trained on "
                    f"({resume_payload.get('dataset', {}).get('path')})"
                )
        ids = token_map(self.dataset.vocab, self.vocab)
        self.batcher = LaneBatcher(self.dataset.tokens("train"), config.batch_size, config.seq_len, self.rank, self.world, ids)
        self.val_tokens = self.dataset.tokens("val")
        if ids is not None:
            self.val_tokens = ids[np.asarray(self.val_tokens, dtype=np.int64)]

        # Model, optimiser, precision.
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.model_config = config.model_config(len(self.vocab))
        check_training_memory(self.model_config, config.batch_size // self.world, config.seq_len, self.device)
        self.raw_model = self._build_model()
        self.init_source = init_source.record() if init_source is not None else None
        if resume_payload is not None:
            self.init_source = resume_payload.get("init_from")
        self.finetune_defaults = finetune_defaults
        if init_source is not None and resume_payload is None:
            self.raw_model.load_state_dict(transfer_weights(init_source, self.vocab, config.seed))
        self.scaler = self.precision.grad_scaler()
        decay = [p for p in self.raw_model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.raw_model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
            foreach=True,
        )

        # Run state, replaced by the checkpoint's when resuming.
        self.step = 0
        self.state = None  # hidden state of this process's lanes
        self.best_val_bpc: float | None = None
        self.stale_validations = 0  # validations since the last new best, for --patience
        self.stopped_early = False
        self.last_val_bpc: float | None = None
        self.last_train_bpc: float | None = None
        self.last_chars_per_sec: float | None = None
        self._skipped = torch.zeros((), dtype=torch.int64, device=self.device)  # fp16 steps skipped for inf/NaN gradients
        total = self._planned_total()
        # The schedule's fixed numbers (see lr_at), saved in checkpoints.
        self.schedule = {
            "warmup": min(config.warmup_steps, total // 10) if total else config.warmup_steps,
            "total": total,
            "from_step": None,
            "from_ratio": 1.0,
        }
        self.saved_step: int | None = None  # the step of the latest.pt on disk, once known
        if resume_payload is not None:
            self._restore_or_explain(resume_payload)
        elif self.world > 1:
            torch.manual_seed(config.seed + self.rank)  # distinct dropout masks per rank; DDP syncs the weights

        self.model = self.raw_model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.raw_model, device_ids=ids)

        if self.world > 1:
            dist.barrier()  # every rank has checked the run folder before rank 0 writes to it
        if self.main:
            self._prepare_run_dir(resume=resume_payload is not None)

    # -- set-up helpers ------------------------------------------------------------------------

    def _planned_total(self) -> int | None:
        """Total steps when the budget fixes it (--steps, or --epochs × windows per epoch)."""
        totals = []
        if self.cfg.steps is not None:
            totals.append(self.cfg.steps)
        if self.cfg.epochs is not None:
            steps = self.cfg.epochs * self.batcher.windows
            if math.isfinite(steps):  # --epochs 1e308: more steps than a float holds, so no bound at all
                totals.append(max(1, math.ceil(steps)))
        return min(totals) if totals else None

    def _build_model(self) -> CharRNN:
        try:
            return CharRNN(self.model_config).to(self.device)
        except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            raise CharlstmError(
                f"could not allocate the model on {self.device}: {_first_line(exc)}; lower --hidden or --layers"
            ) from None

    def _restore_or_explain(self, payload: dict) -> None:
        try:
            self._restore(payload)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CharlstmError(f"the checkpoint does not fit the run it should resume: {_first_line(exc)}") from None

    def _restore(self, payload: dict) -> None:
        self.raw_model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])  # moves its state to the parameters' device
        if payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.step = int(payload["step"])
        self.batcher.seek(payload["data_position"])
        self.best_val_bpc = payload.get("best_val_bpc")
        self.stale_validations = int(payload.get("stale_validations", 0))
        self.last_val_bpc = payload.get("val_bpc")
        self._skipped.fill_(int(payload.get("skipped_steps", 0)))
        saved = payload.get("schedule") or {}
        old_budget = {k: (payload.get("train_config") or {}).get(k) for k in ("steps", "epochs", "minutes")}
        new_budget = {k: getattr(self.cfg, k) for k in old_budget}
        if new_budget == old_budget and self.cfg.minutes is None:
            self.schedule = {**self.schedule, **saved}  # the same run goes on: the same schedule
        else:
            # A new budget (--minutes always is one: it counts this invocation): decay from the
            # rate the run had reached, over the new length.
            old = {**self.schedule, **saved}
            rate = lr_at(self.step, 1.0, old["warmup"], old["total"], self.cfg.min_lr_ratio, old["from_step"], old["from_ratio"])
            self.schedule["warmup"] = old["warmup"]
            if self.step >= old["warmup"]:
                self.schedule["from_step"], self.schedule["from_ratio"] = self.step, rate
        state = payload.get("hidden_state")
        if state is not None:
            state = [t.to(self.device) for t in state]
            per_rank = self.cfg.batch_size // self.world
            if state[0].shape[1] != self.cfg.batch_size:
                raise CharlstmError("the checkpoint's hidden state does not match --batch-size")
            # This process's lanes; cuDNN needs a contiguous hidden state.
            state = [t[:, self.rank * per_rank : (self.rank + 1) * per_rank].contiguous() for t in state]
            self.state = tuple(state) if self.model_config.kind == "lstm" else state[0]
        rng = payload.get("rng") or {}
        if self.world == 1:
            if "torch" in rng:
                torch.set_rng_state(rng["torch"])
            if rng.get("cuda") and self.device.type == "cuda":
                torch.cuda.set_rng_state_all(rng["cuda"])
            if "python" in rng:
                random.setstate(_as_tuple(rng["python"]))
        else:
            torch.manual_seed(self.cfg.seed + self.rank + self.step)

    def _run_files(self) -> list[Path]:
        return [self.run_dir / n for n in (LATEST, BEST, "metrics.jsonl", "config.json")]

    def _check_run_dir(self, resume: bool, force: bool) -> None:
        """A fresh start refuses a folder with saved progress; one whose run saved nothing starts afresh."""
        if resume or force:
            return
        if (self.run_dir / LATEST).exists():
            raise CharlstmError(f"{self.run_dir} already holds a run: continue it with --resume, or start over with --force")
        if (self.run_dir / BEST).exists():
            raise CharlstmError(
                f"{self.run_dir} holds a {BEST} but no {LATEST} (its run stopped before its first save): "
                f"continue from {BEST} with --resume, or start over with --force"
            )

    def _prepare_run_dir(self, resume: bool) -> None:
        d = self.run_dir
        if resume:
            self._truncate_metrics()
        else:
            # Leftovers of a run that saved nothing, or of the run --force replaces: they would be
            # mistaken for this one's.
            leftovers = [f for f in self._run_files() if f.exists()]
            if leftovers:
                self._say(f"starting afresh in {d}: removing the earlier run's {', '.join(f.name for f in leftovers)}")
            for f in leftovers:
                f.unlink(missing_ok=True)
        d.mkdir(parents=True, exist_ok=True)
        config = {
            "train_config": asdict(self.cfg),
            "model_config": self.model_config.to_dict(),
            "parameters": self.raw_model.num_parameters(),
            "dataset": {
                **self.dataset.summary(),
                "train_chars": int(self.dataset.meta.get("train_chars", 0)),
                "val_chars": int(self.dataset.meta.get("val_chars", 0)),
                "vocab_size": len(self.dataset.vocab),
            },
            "windows_per_epoch": self.batcher.windows,
            "precision": self.precision.name,
            "rnn_dtype_under_autocast": self.precision.rnn_dtype,
            "init_from": self.init_source,
            "device": str(self.device),
            "world_size": self.world,
            "threads": self.threads,
            "torch": torch.__version__,
        }
        text = json.dumps(config, indent=2) + "\n"
        atomic_write(d / "config.json", lambda f: f.write(text.encode()))

    def _truncate_metrics(self) -> None:
        """Drop metrics logged after the checkpoint we resume from, so no step appears twice."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue
        atomic_write(path, lambda f: f.write("".join(kept).encode()))

    # -- checkpoints ---------------------------------------------------------------------------

    def _payload(self, state) -> dict:
        hidden = None
        if state is not None:
            # fp32 whatever the autocast dtype: bf16/fp16 values round-trip exactly, and the
            # checkpoint resumes under any precision.
            hidden = [t.detach().float().cpu().clone() for t in (state if isinstance(state, tuple) else (state,))]
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model_config": self.model_config.to_dict(),
            "vocab": self.vocab.symbols,
            "model": self.raw_model.state_dict(),  # the unwrapped module: no DDP prefix
            "dataset": self.dataset.summary(),
            "step": self.step,
            "train_config": asdict(self.cfg),
            "init_from": self.init_source,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data_position": self.batcher.position(),
            "hidden_state": hidden,
            "schedule": dict(self.schedule),
            "rng": rng,
            "best_val_bpc": self.best_val_bpc,
            "stale_validations": self.stale_validations,
            "val_bpc": self.last_val_bpc,
            "skipped_steps": self.skipped_steps,
            "precision": self.precision.name,
        }

    def save(self, name: str = LATEST, gather: bool = True) -> None:
        """Save on rank 0 (every rank takes part in gathering the lanes' hidden state)."""
        state = _gather_lanes(self.state, self.world) if gather else (self.state if self.world == 1 else None)
        if self.main:
            with self._stop_if_writing_fails():
                save_checkpoint(self.run_dir / name, self._payload(state))
        if name == LATEST:
            self.saved_step = self.step

    # -- evaluation and logging ----------------------------------------------------------------

    def validate(self) -> float | None:
        """Validation bpc over the whole split (rank 0 only); other ranks wait."""
        bpc = None
        if self.main and len(self.val_tokens) >= 2:
            bpc = bits_per_char(self.raw_model, self.val_tokens, device=self.device, autocast=self.precision.autocast)["bpc"]
            self.last_val_bpc = bpc
        if self.world > 1:
            dist.barrier()
        return bpc

    def _log(self, record: dict) -> None:
        if self.main:
            with self._stop_if_writing_fails():
                append_line(self.run_dir / "metrics.jsonl", json.dumps(record) + "\n")

    @contextmanager
    def _stop_if_writing_fails(self):
        """A failed save or log line (a full disk, a folder made read-only) ends the run in one line
        that says what is kept. The write itself left the previous file whole."""
        try:
            yield
        except CharlstmError as exc:
            kept = (
                f"{self.run_dir / LATEST} (step {self.saved_step}) is intact; once the disk has room, resume with: "
                f"{self.resume_command()}"
                if self.saved_step is not None
                else "nothing had been saved yet"
            )
            raise TrainingStopped(f"{exc}; training stopped at step {self.step}, {kept}") from None

    def _say(self, message: str) -> None:
        if self.main:
            tqdm.write(message, file=sys.stderr)

    def resume_command(self) -> str:
        prefix = f"torchrun --nproc-per-node {self.world} -m charlstm" if self.world > 1 else "charlstm"
        return f"{prefix} train --resume --out {shlex.quote(str(self.run_dir))}"

    @property
    def skipped_steps(self) -> int:
        return int(self._skipped.item())

    def _out_of_patience(self) -> bool:
        """--patience: that many validations in a row without a new best end the run (every rank)."""
        if self.cfg.patience is None:
            return False
        exhausted = self._stop_flag(self.stale_validations >= self.cfg.patience)
        if exhausted:
            self.stopped_early = True
            if self.main:
                self._say(
                    f"no new best in {self.cfg.patience} validation(s): stopping at step {self.step:,} "
                    f"(--patience); best.pt holds {self.best_val_bpc:.4f} bpc"
                )
        return exhausted

    def _stop_flag(self, local: bool) -> bool:
        """Every rank must stop at the same step: agree on the flag."""
        if self.world == 1:
            return local
        flag = torch.tensor([1.0 if local else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    # -- the loop ------------------------------------------------------------------------------

    def train_step(self, x: torch.Tensor, y: torch.Tensor, fresh: bool) -> torch.Tensor:
        """One update; returns the loss as a tensor (no sync)."""
        if fresh:
            self.state = None  # a new epoch starts every lane from the beginning of its text
        sch = self.schedule
        lr = lr_at(self.step, self.cfg.lr, sch["warmup"], sch["total"], self.cfg.min_lr_ratio, sch["from_step"], sch["from_ratio"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        with self.precision.autocast():
            logits, state = self.model(x, self.state)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0 or self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            norm = torch.nn.utils.clip_grad_norm_(
                self.raw_model.parameters(), self.cfg.grad_clip or math.inf, foreach=True
            )
            if self.scaler.is_enabled():
                # The scaler skips exactly the steps whose gradients hold inf/NaN; counted on the
                # device, so there is no GPU sync here.
                self._skipped += ~torch.isfinite(norm)
        self.scaler.step(self.optimizer)  # a plain optimizer.step() when the scaler is off
        self.scaler.update()
        self.state = detach_state(state)  # truncated BPTT: keep the values, cut the graph
        self.step += 1
        return loss.detach()

    def run(self, stop_after: int | None = None) -> dict:
        """Train until the budget is spent (or `stop_after` more steps, as a pause); return a summary.

        Ctrl-C saves latest.pt and raises TrainingInterrupted with the command that resumes.
        """
        cfg = self.cfg
        total = self.schedule["total"] if (cfg.steps or cfg.epochs) else None
        self._say(
            f"{self.model_config.kind.upper()} {self.model_config.layers}×{self.model_config.hidden}, "
            f"{self.raw_model.num_parameters():,} parameters; {self.world} process(es) on {self.device}, "
            f"{self.threads} thread(s); precision {self.precision.name} ({self.precision.reason}; "
            f"the {self.model_config.kind.upper()} runs in {self.precision.rnn_dtype}); "
            f"{self.batcher.windows:,} steps per epoch; run folder {self.run_dir}"
        )
        if self.init_source is not None and self.step == 0:
            src, added = self.init_source, len(self.vocab) - self.init_source["vocab_size"]
            self._say(
                f"fine-tuning {src['checkpoint']} (step {src['step']:,}, trained on {src['dataset']}): shape from the "
                f"source model; {added} character(s) new to it start improbable; lr {cfg.lr:g} and "
                f"{cfg.warmup_steps} warm-up steps ({'as given' if self.finetune_defaults is None else self.finetune_defaults})"
            )
        bar = tqdm(
            total=total,
            initial=self.step,
            disable=None if self.main else True,
            file=sys.stderr,
            unit="step",
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        # Loss summed on the device since the last log line, and when/where that line was.
        meter = {"loss_sum": torch.zeros((), device=self.device), "time": start, "step": self.step}
        bad = torch.zeros((), dtype=torch.bool, device=self.device)  # any non-finite loss since the last check
        local = 0  # steps taken in this invocation
        self.saved_step = self.step if (self.run_dir / LATEST).exists() else None
        t_estimate = None
        last_eval_step = None
        self._interrupted = False
        previous_handler = self._catch_ctrl_c()
        try:
            while True:
                # Stop conditions, checked before each step so a resumed run that is done does nothing.
                done = (total is not None and self.step >= total) or (stop_after is not None and local >= stop_after)
                # Ranks agree on time-outs and Ctrl-C at log steps only: agreeing is a GPU sync.
                if self.world == 1 or self.step % cfg.log_every == 0:
                    out_of_time = cfg.minutes is not None and time.perf_counter() - start >= cfg.minutes * 60
                    done = self._stop_flag(out_of_time or self._interrupted) or done
                if done:
                    break
                x, y, fresh = self.batcher.next()
                loss = self.train_step(x, y, fresh)
                local += 1
                meter["loss_sum"] += loss
                bad |= ~torch.isfinite(loss)

                if self.schedule["total"] is None and cfg.minutes is not None:
                    t_estimate = self._estimate_schedule(local, loss, start, t_estimate)

                last = total is not None and self.step >= total
                evaluate_now = last or (cfg.eval_every and self.step % cfg.eval_every == 0)
                save_now = cfg.save_every and self.step % cfg.save_every == 0
                record = None
                if self.step % cfg.log_every == 0 or evaluate_now or last:
                    if self._stop_flag(bool(bad.item())):
                        raise self._nonfinite(self.saved_step)
                    record, meter = self._metrics_record(meter, bar, start)
                if evaluate_now:
                    val = self.validate()
                    last_eval_step = self.step
                    self._note_validation(val, record)
                if record is not None:
                    self._log(record)
                if save_now:
                    if self._stop_flag(bool(bad.item())):
                        raise self._nonfinite(self.saved_step)
                    self.save(LATEST)
                if evaluate_now or save_now:
                    meter["time"] = time.perf_counter()  # validation and saving are not training throughput
                bar.update(1)
                if evaluate_now and self._out_of_patience():
                    break
        except KeyboardInterrupt:
            # A second Ctrl-C (or one outside the loop's checks): the step may be half done, so
            # nothing is saved; the last checkpoint stays as it was.
            bar.close()
            raise TrainingInterrupted(
                f"interrupted at step {self.step} without saving; the last save is {self.run_dir / LATEST}. "
                f"Resume with: {self.resume_command()}"
            ) from None
        finally:
            self._restore_ctrl_c(previous_handler)
        bar.close()

        if self._interrupted:
            if self._stop_flag(bool(bad.item())):
                raise self._nonfinite(self.saved_step)
            self.save(LATEST)
            raise TrainingInterrupted(
                f"interrupted at step {self.step}; saved {self.run_dir / LATEST}. Resume with: {self.resume_command()}"
            )
        if self._stop_flag(bool(bad.item())):
            raise self._nonfinite(self.saved_step)
        paused = stop_after is not None and local >= stop_after and not (total is not None and self.step >= total)
        if meter["step"] != self.step:  # steps since the last log line (a --minutes run ends anywhere)
            record, meter = self._metrics_record(meter, bar, start)
        else:
            record = None
        if not paused and last_eval_step != self.step and local > 0:
            self._note_validation(self.validate(), record)
        if record is not None:
            self._log(record)
        self.save(LATEST)
        elapsed = time.perf_counter() - start
        summary = {
            "steps": self.step,
            "epoch": self.batcher.epoch,
            "train_bpc": self.last_train_bpc,
            "val_bpc": self.last_val_bpc,
            "best_val_bpc": self.best_val_bpc,
            "chars_per_sec": self.last_chars_per_sec,
            "precision": self.precision.name,
            "rnn_dtype": self.precision.rnn_dtype,
            "device": str(self.device),
            "world_size": self.world,
            "parameters": self.raw_model.num_parameters(),
            "seconds": round(elapsed, 2),
            "stopped_early": self.stopped_early,
            "run_dir": str(self.run_dir),
        }
        if self.scaler.is_enabled():
            summary["skipped_steps"] = self.skipped_steps
        if self.world > 1:
            dist.barrier()
        return summary

    def _metrics_record(self, meter: dict, bar, start: float) -> tuple[dict, dict]:
        """The metrics line for the steps since the last one (the only place the loss is synced)."""
        loss_sum = meter["loss_sum"]
        if self.world > 1:  # the logged loss is the whole batch's, not rank 0's lanes'
            dist.all_reduce(loss_sum)
            loss_sum /= self.world
        now = time.perf_counter()
        n = self.step - meter["step"]
        mean_loss = loss_sum.item() / max(n, 1)
        chars_per_sec = n * self.cfg.batch_size * self.cfg.seq_len / max(now - meter["time"], 1e-9)
        self.last_train_bpc, self.last_chars_per_sec = mean_loss / LN2, round(chars_per_sec, 1)
        record = {
            "step": self.step,
            "epoch": self.batcher.epoch,
            "loss": mean_loss,
            "bpc": self.last_train_bpc,
            "lr": self.optimizer.param_groups[0]["lr"],
            "chars_per_sec": self.last_chars_per_sec,
        }
        if self.scaler.is_enabled():
            record["skipped_steps"] = self.skipped_steps
        postfix = {"loss": f"{mean_loss:.3f}", "bpc": f"{self.last_train_bpc:.3f}", "chars/s": f"{chars_per_sec:,.0f}"}
        if self.cfg.minutes is not None:
            postfix["left"] = f"{max(0.0, self.cfg.minutes * 60 - (now - start)) / 60:.1f}min"
        bar.set_postfix(postfix, refresh=False)
        return record, {"loss_sum": torch.zeros((), device=self.device), "time": now, "step": self.step}

    def _catch_ctrl_c(self):
        """First Ctrl-C: finish the current step, save, stop. A second one stops at once."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True
            self._say("interrupt: finishing this step and saving (Ctrl-C again to stop at once)")

        return signal.signal(signal.SIGINT, handler)

    @staticmethod
    def _restore_ctrl_c(previous) -> None:
        import signal

        if previous is not None:
            signal.signal(signal.SIGINT, previous)

    def _estimate_schedule(self, local: int, loss: torch.Tensor, start: float, t_estimate: float | None):
        """--minutes alone: time steps 3..12 of this invocation, then fix the schedule's length from
        them (saved in checkpoints, so a resumed run stays deterministic)."""
        if local == 2:
            loss.item()  # sync, so the clock measures finished steps
            return time.perf_counter()
        if local == 12:
            loss.item()
            per_step = (time.perf_counter() - t_estimate) / 10
            left = self.cfg.minutes * 60 - (time.perf_counter() - start)
            total = max(self.step + int(left / per_step), self.schedule["warmup"] + 1, (self.schedule["from_step"] or 0) + 1)
            if self.world > 1:  # every rank must use rank 0's number, or their learning rates differ
                t = torch.tensor([total], dtype=torch.float64, device=self.device)
                dist.broadcast(t, src=0)
                total = int(t.item())
            self.schedule["total"] = total
            self._say(f"--minutes {self.cfg.minutes:g}: about {total:,} steps; the learning rate decays over them")
        return t_estimate

    def _note_validation(self, val: float | None, record: dict | None) -> None:
        if val is None or not self.main:
            return
        improved = self.best_val_bpc is None or val < self.best_val_bpc
        self.stale_validations = 0 if improved else self.stale_validations + 1
        if improved:
            self.best_val_bpc = val
        if record is not None:
            record["val_bpc"] = val
        else:
            self._log({"step": self.step, "epoch": self.batcher.epoch, "val_bpc": val})
        self._say(f"step {self.step:,}: validation {val:.4f} bpc" + (" (best so far)" if improved else ""))
        if improved:
            with self._stop_if_writing_fails():
                save_checkpoint(self.run_dir / BEST, self._payload(None if self.world > 1 else self.state))

    def _nonfinite(self, last_good_save: int | None) -> TrainingStopped:
        kept = (
            f"the last good checkpoint is {self.run_dir / LATEST} (step {last_good_save})"
            if last_good_save is not None
            else "no checkpoint had been saved yet"
        )
        return TrainingStopped(
            f"the loss became NaN or infinite by step {self.step}; training stopped without saving, "
            f"{kept}. Try a lower --lr, --grad-clip 1, or --precision fp32"
        )

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _as_tuple(value):
    """Python's RNG state is nested tuples; make sure it is one again after loading."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


# ---------------------------------------------------------------------------------------------
# Entry point


RUN_LOCK = ".lock"  # in the run folder, held by the process training in it (see charlstm.lock)
# What resuming reads from a checkpoint; an inference-only export (export_for_inference) lacks most of it.
RESUME_KEYS = ("model_config", "vocab", "model", "step", "optimizer", "data_position")


def _given_options(options: dict) -> dict:
    """The options the user gave: None-valued ones count as not given."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = set(given) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise CharlstmError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    return given


def _run_dir(given: dict) -> Path:
    data = given.get("data", TrainConfig.data)
    return Path(given.get("out") or default_run_dir(data, given.get("model", TrainConfig.model)))


def fresh_config(given: dict, run_dir: Path) -> TrainConfig:
    """A new run's config: TrainConfig defaults overridden by the options. Reads and writes nothing."""
    config = TrainConfig(**given)
    config.out = str(run_dir)
    config.validate()
    config.data = os.path.abspath(config.data)  # so `--resume` finds it from any folder
    return config


def resumed_config(given: dict, run_dir: Path) -> tuple[TrainConfig, dict]:
    """--resume: the run's saved config and checkpoint.

    Only the budget, logging and backend options may change (see RESUMABLE_OVERRIDES); any other
    option given with a different value is an error.
    """
    path = _checkpoint_to_resume(run_dir)
    payload = load_checkpoint(path)
    _check_resumable(payload, path)
    saved = payload["train_config"]
    config = TrainConfig(**{k: saved[k] for k in saved if k in TrainConfig.__dataclass_fields__})
    for key, value in given.items():
        if key == "out":
            continue
        if key in RESUMABLE_OVERRIDES:
            setattr(config, key, value)
        elif value != getattr(config, key):
            raise CharlstmError(
                f"--{key.replace('_', '-')} {value} differs from the run's {getattr(config, key)}; a resumed run keeps "
                f"its config (only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE_OVERRIDES)} may change)"
            )
    if any(k in given for k in ("steps", "epochs", "minutes")):
        # A new budget replaces the old one entirely.
        for k in ("steps", "epochs", "minutes"):
            if k not in given:
                setattr(config, k, None)
    if "data" not in given:
        config.data = str(locate_recorded_dataset(config.data, path))  # older runs recorded a relative path
    config.out = str(run_dir)
    config.validate()
    return config, payload


def _checkpoint_to_resume(run_dir: Path) -> Path:
    """latest.pt, else best.pt: a run that validated but was killed before its first save of latest.pt."""
    latest, best = run_dir / LATEST, run_dir / BEST
    if latest.is_file():
        return latest
    if best.is_file():
        tqdm.write(f"{run_dir} has no {LATEST}: resuming from {BEST}", file=sys.stderr)
        return best
    if any((run_dir / name).exists() for name in ("config.json", "metrics.jsonl")):
        raise CharlstmError(
            f"nothing saved yet in {run_dir}: its run stopped before its first save (no {LATEST}); "
            f"start it again without --resume to begin afresh"
        )
    raise CharlstmError(f"nothing to resume: {latest} not found (pass --out RUN, or start a run without --resume)")


def _check_resumable(payload: dict, path: Path) -> None:
    """Everything _restore reads is there, so a stripped or foreign checkpoint fails in one line."""
    if not isinstance(payload.get("train_config"), dict):
        raise CharlstmError(f"{path} was not written by `charlstm train`: it has no training config")
    missing = [key for key in RESUME_KEYS if key not in payload]
    if missing:
        raise CharlstmError(
            f"{path} cannot be resumed: it has no {', '.join(missing)} (an inference-only export keeps just the "
            f"weights); sample or evaluate it, or start a new run with --force"
        )
    position = payload["data_position"]
    if not (isinstance(position, dict) and all(isinstance(position.get(k), int) for k in ("epoch", "window"))):
        raise CharlstmError(f"{path} cannot be resumed: its data_position is not {{'epoch': int, 'window': int}}")


@contextmanager
def own_run_dir(run_dir: Path):
    """Hold the run folder for the whole run, so no second process trains in it at the same time.

    Under torchrun only rank 0 takes the lock: it is the only process that writes there. The owner
    then removes the temporary files of saves that a kill interrupted.
    """
    if os.path.lexists(run_dir) and not run_dir.is_dir():
        raise CharlstmError(f"--out {run_dir} exists and is not a folder")
    if _distributed()[0] != 0:
        yield
        return
    with lock.acquire(run_dir / RUN_LOCK, str(run_dir)):
        _remove_stale_temporaries(run_dir)
        yield


def _remove_stale_temporaries(run_dir: Path) -> None:
    """atomic_write's `.NAME.*.tmp` files left by a kill during a save; safe only while holding the lock."""
    for name in (LATEST, BEST, "config.json", "metrics.jsonl"):
        for tmp in run_dir.glob(f".{glob.escape(name)}.*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass  # harmless where it stays


def finetune_options(options: dict) -> tuple[dict, InitSource, str | None]:
    """--init-from: the shape comes from the source model, and the learning rate and warm-up default
    to values for a model that already knows code. Returns the options, the source, and a note on
    the defaults used (None when the user gave both)."""
    given = {k: v for k, v in options.items() if v is not None}
    source = load_init_source(given["init_from"])
    check_shape_options(given, source)
    mc = source.model_config
    shape = dict(zip(SHAPE_OPTIONS, (mc.kind, mc.layers, mc.hidden, mc.embed)))
    defaults = {k: v for k, v in (("lr", FINETUNE_LR), ("warmup_steps", FINETUNE_WARMUP_STEPS)) if k not in given}
    note = None
    if defaults:
        note = "fine-tuning defaults: " + ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in defaults.items())
    return {**options, **shape, **defaults}, source, note


def train(options: dict, resume: bool = False, force: bool = False, stop_after: int | None = None) -> dict:
    """`charlstm train`: set up (or resume) a run from CLI-style options, train it, return the summary."""
    source = note = None
    if options.get("init_from") is not None and not resume:
        options, source, note = finetune_options(options)
    given = _given_options(options)
    run_dir = _run_dir(given)
    if resume and not run_dir.is_dir():
        raise CharlstmError(f"nothing to resume: {run_dir} not found (pass --out RUN, or start a run without --resume)")
    config = None if resume else fresh_config(given, run_dir)  # nonsense options fail before the folder is made
    with own_run_dir(run_dir):
        payload = None
        if resume:
            config, payload = resumed_config(given, run_dir)
        if config.steps is None and config.epochs is None and config.minutes is None:
            config.epochs = 1.0  # no budget given: one pass over the training split
        trainer = Trainer(config, run_dir, resume_payload=payload, force=force, init_source=source,
                          finetune_defaults=note)
        try:
            return trainer.run(stop_after=stop_after)
        finally:
            trainer.close()
