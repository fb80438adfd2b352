"""The backend, decided once: device, precision, CPU threads, denormals and memory.

Training, evaluation, sampling and inspection all ask here: `resolve_device` (train, eval,
inspect-neuron) and `sampling_device` (sample, experiment) turn a --device into a torch device;
`choose_precision` picks an autocast precision by running a recurrent layer, never assuming, and
`checkpoint_precision` does the same for scoring a trained model; `flush_denormals` and
`torch_threads` set the CPU up (`cpu_threads`: only for work that runs there), and
`training_device` and `training_precision` set up a training process; `check_training_memory`
refuses a model too large for the device before it is built. torchrun's processes are in
distributed.py.
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import DEVICES, PRECISIONS
from .errors import CharlstmError
from .model import RNN_MODULES, ModelConfig, parameter_shapes


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


def probe_rnn_dtype(device: torch.device, dtype: torch.dtype | None, kind: str = "lstm") -> torch.dtype | None:
    """Run a tiny 2-layer recurrent module forward and backward under autocast; return its output dtype.

    None when it fails: the backend (e.g. an old cuDNN for bf16) cannot run it.
    """
    try:
        rnn = RNN_MODULES[kind](8, 8, num_layers=2, batch_first=True).to(device)
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


def choose_precision(
    requested: str, device: torch.device, kind: str = "lstm", hidden: int | None = None, batch: int | None = None
) -> Precision:
    """Pick bf16/fp16/fp32 for `device`, checking by running a recurrent layer, never assuming.

    `hidden` and `batch` (the model's units per layer and the lanes per step) let `auto` on CUDA
    follow what was measured for that shape (`CUDA_MEASURED`); without them it stays in fp32."""
    if requested not in PRECISIONS:
        raise CharlstmError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    dt = device.type

    def made(name: str, reason: str) -> Precision:
        probe = probe_rnn_dtype(device, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name), kind)
        if probe is None:
            hint = ""
            if dt == "cpu":
                hint = (
                    " (oneDNN is capped below the CPU's AMX/AVX-512 BF16, e.g. by ONEDNN_MAX_CPU_ISA)"
                    if cpu_has_native_bf16()
                    else " (this CPU lacks AVX-512 BF16/AMX, which oneDNN's bf16 RNNs need)"
                )
            raise CharlstmError(
                f"--precision {name}: a {kind.upper()} does not run under {name} autocast on {dt}{hint}; use fp32"
            )
        return Precision(name, dt, str(probe).removeprefix("torch."), reason)

    if dt == "cpu":
        if requested == "fp16":
            raise CharlstmError("--precision fp16 is not supported on the CPU: use bf16 or fp32")
        if requested == "bf16":
            native = cpu_has_native_bf16()
            return made(
                "bf16", "requested" + ("" if native else "; this CPU has no native bf16, so it is emulated and slow")
            )
        if requested == "fp32":
            return made("fp32", "requested")
        if cpu_runs_bf16_rnn(kind):
            return made("bf16", f"the CPU runs a bf16 {kind.upper()} natively (AMX/AVX-512 BF16)")
        why = (
            "oneDNN runs no bf16 kernel for it: capped by ONEDNN_MAX_CPU_ISA, or none for this cell kind"
            if cpu_has_native_bf16()
            else "the CPU lacks AMX/AVX-512 BF16"
        )
        return made("fp32", f"no native bf16 {kind.upper()} here ({why})")
    if dt == "cuda":
        if requested == "fp32":
            return made("fp32", "requested")
        if requested == "bf16":
            if _cuda_runs(device, "bf16", kind):
                return made("bf16", "requested")
            raise CharlstmError(
                f"--precision bf16: this GPU or cuDNN {torch.backends.cudnn.version()} does not run a bf16 "
                f"{kind.upper()}; use fp16 or fp32"
            )
        if requested == "fp16":
            return made("fp16", "requested")
        return made(*cuda_auto_precision(device, kind, hidden, batch))
    # MPS and anything else: fp32 unless asked, and then only if it really runs.
    if requested == "auto":
        return made("fp32", f"the safe choice on {dt}")
    return made(requested, "requested")


# What `--precision auto` trains in on CUDA rests on measurements, not on what the GPU supports:
# the LSTM's recurrence is latency-bound at these sizes, so fp16 can cost loss scaling and buy
# nothing. Per hidden size: where it was measured, and chars/s of a bare 3-layer nn.LSTM training
# loop (embed 64, seq 128) by batch and precision, as `bench/train_speed.py --grid --json` prints
# them under "auto_table". A reduced precision is chosen only where it was measured at least
# CUDA_MIN_SPEEDUP× faster than fp32 at the measured batch nearest the run's; shapes never measured
# train in fp32, the exact choice, until someone measures them.
CUDA_MEASURED: dict[int, tuple[str, dict[int, dict[str, float]]]] = {
    512: (
        "an H100 80GB (torch 2.11.0+cu130, cuDNN 9.19, 2026-11-27)",
        {64: {"fp32": 315e3, "fp16": 299e3}, 256: {"fp32": 1.21e6, "fp16": 1.23e6}},
    ),
}
CUDA_MIN_SPEEDUP = 1.15  # below this, fp16's loss scaling and skipped steps are not worth it


def _cuda_runs(device: torch.device, name: str, kind: str) -> bool:
    """Does a `kind` RNN really run in this precision here (bf16: and return bfloat16)?"""
    if name == "fp32":
        return True
    if name == "bf16":
        return torch.cuda.is_bf16_supported() and probe_rnn_dtype(device, torch.bfloat16, kind) == torch.bfloat16
    return probe_rnn_dtype(device, torch.float16, kind) is not None


def cuda_auto_precision(device: torch.device, kind: str, hidden: int | None, batch: int | None) -> tuple[str, str]:
    """(precision, reason) for `--precision auto` on CUDA, from `CUDA_MEASURED`."""
    measured = ", ".join(str(h) for h in sorted(CUDA_MEASURED))
    if hidden is None or hidden not in CUDA_MEASURED:
        shape = "the model's shape was not given" if hidden is None else f"hidden {hidden} was never measured on a GPU"
        return "fp32", f"{shape} (measured: hidden {measured}); fp32 until bench/train_speed.py --grid measures it"
    source, by_batch = CUDA_MEASURED[hidden]
    # The measured batch nearest the run's (by ratio); with no batch given, the smallest measured.
    near = min(by_batch, key=lambda b: abs(math.log(b / batch)) if batch else b)
    speeds = by_batch[near]
    fp32 = speeds["fp32"]
    faster = sorted((cps, name) for name, cps in speeds.items() if name != "fp32" and cps >= CUDA_MIN_SPEEDUP * fp32)
    where = f"bare 3×{hidden} LSTM at batch {near} on {source}"
    for cps, name in reversed(faster):
        if _cuda_runs(device, name, kind):
            return name, f"{name} measured {cps / fp32:.2f}× fp32 ({cps:,.0f} vs {fp32:,.0f} chars/s), {where}"
    best = max((name for name in speeds if name != "fp32"), key=speeds.get, default=None)
    if best is None:
        return "fp32", f"only fp32 was measured, {where}"
    return "fp32", (
        f"{best} measured {speeds[best] / fp32:.2f}× fp32 ({speeds[best]:,.0f} vs {fp32:,.0f} chars/s), "
        f"below the {CUDA_MIN_SPEEDUP}× that pays for mixed precision, {where}"
    )


def checkpoint_precision(requested: str | None, trained: str | None, device: torch.device, kind: str) -> Precision:
    """The precision asked for; else the run's own, so eval scores as training validated; else
    auto, when the run's does not run here (an fp16 GPU run scored on a CPU)."""
    if requested is not None:
        return choose_precision(requested, device, kind=kind)
    if trained in PRECISIONS:
        try:
            return choose_precision(trained, device, kind=kind)
        except CharlstmError:
            pass
    return choose_precision("auto", device, kind=kind)


def sampling_device(name: str) -> torch.device:
    """--device for sampling: auto is a CUDA GPU when there is one (even launch-bound, it outpaces
    a CPU at batch 1), else the CPU; a CPU, CUDA or MPS device name with an index (cuda:1) is accepted."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:  # torch also knows meta, xpu, mkldnn (with a warning), ...: none of them samples
        device = torch.device(name) if name.split(":")[0] in DEVICES else None  # auto:N is no device
    except RuntimeError:
        device = None
    if device is None:
        raise CharlstmError(f"unknown device {name!r}; use auto, cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CharlstmError("--device cuda asked for, but this PyTorch build sees no CUDA GPU")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise CharlstmError(
            f"--device {name}: this machine has {count} GPU{'s' if count != 1 else ''} (cuda:0..{count - 1})"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CharlstmError("--device mps asked for, but MPS is not available here")
    return device


def flush_denormals(device: torch.device) -> None:
    """On a CPU, flush denormal floats to zero: they slow bf16 training and inference tenfold as
    activations shrink."""
    if device.type == "cpu":
        torch.set_flush_denormal(True)


# PyTorch's "medium" float32 matmul precision hands float32 products to oneDNN, which may run them on
# the CPU's bf16 instructions. Measured on a Zen 4 EPYC (AVX-512 BF16, no AMX): float32's accuracy
# kept (errors ~3× float32's own rounding: bf16 pieces, summed in float32) and 2.2× faster for the
# batched products of a trace, but 2× slower for one row. Elsewhere the same setting may round each
# factor to bf16 (AMX), or change nothing (AVX2): so a probe decides, on accuracy and on speed.
SPLIT_PRODUCT_SHAPE = (64, 256, 1024)  # a trace in lanes: 64 streams × a 256-unit layer's four gates


@functools.cache
def cpu_splits_float32_products() -> bool:
    """Whether float32 products under "medium" precision stay within float32's worst-case error
    bound (K·2⁻²⁴·Σ|a||b| for K terms; a bf16 rounding of the factors breaks it) and within 8× plain
    float32's own largest error (the Zen 4: 2.2×), and run at least 1.25× faster, on
    `SPLIT_PRODUCT_SHAPE`, on this CPU."""
    rows, inner, cols = SPLIT_PRODUCT_SHAPE
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(rows, inner, generator=generator), torch.randn(inner, cols, generator=generator)
    exact = a.double() @ b.double()
    seconds, errors = {}, {}
    for precision in ("highest", "medium"):
        with float32_products(precision):
            product = a @ b
            if not within_float32_bound(a, b, product):
                return False
            errors[precision] = float((product.double() - exact).abs().max())
            seconds[precision] = min(_timed(lambda: a @ b) for _ in range(8))
    return errors["medium"] <= 8 * errors["highest"] and seconds["medium"] * 1.25 <= seconds["highest"]


def within_float32_bound(a: torch.Tensor, b: torch.Tensor, product: torch.Tensor) -> bool:
    """Whether `product` is a @ b to within float32's worst-case error for sums of K terms
    (|error| ≤ K·2⁻²⁴·(|a| @ |b|) everywhere); factors rounded to bf16 (8 bits) land far outside."""
    a, b = a.double(), b.double()
    bound = a.shape[-1] * 2.0**-24 * (a.abs() @ b.abs())
    return bool(((product.double() - a @ b).abs() <= bound).all())


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextmanager
def float32_products(precision: str):
    """Run the block under torch's float32 matmul `precision` ("highest", "high", "medium"), then
    restore the one it had."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def fast_float32_products(device: torch.device):
    """A context for batched float32 products: split into bf16 pieces where the probe says that
    keeps float32's accuracy and pays (`cpu_splits_float32_products`), else as they are."""
    if device.type == "cpu" and cpu_splits_float32_products():
        return float32_products("medium")
    return nullcontext()


@contextmanager
def torch_threads(n: int | None):
    """Run the block with torch using `n` CPU threads (None or 0: leave the count as it is), then
    restore the count it had."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_threads(device: torch.device, n: int | None) -> int | None:
    """`n` for `torch_threads` on a CPU; None (leave the count alone) elsewhere, where the CPU only
    launches the device's kernels."""
    return n if device.type == "cpu" else None


def training_device(device_name: str, threads: int | None, world: int, local_rank: int):
    """(device, threads) for a training process: this rank's GPU under torchrun, denormals flushed,
    the CPU threads set (by default the cores shared among this machine's processes)."""
    device = resolve_device(device_name)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    flush_denormals(device)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    threads = threads or max(1, available_cores() // local_world)
    torch.set_num_threads(threads)
    return device, threads


def training_precision(requested: str, device: torch.device, kind: str, hidden: int, lanes: int) -> Precision:
    """`choose_precision` for training (`lanes`: per process), with TF32 matrix products on when a GPU
    run ends up in fp32, asked for or chosen by auto (cuDNN's RNNs use TF32 already; this is the head)."""
    precision = choose_precision(requested, device, kind=kind, hidden=hidden, batch=lanes)
    if device.type == "cuda" and precision.name == "fp32":
        torch.backends.cuda.matmul.allow_tf32 = True
    return precision


# ---------------------------------------------------------------------------------------------
# Memory: what training a model needs, and what the device has


MAX_TENSOR_ELEMENTS = 2**63 - 1  # a tensor's element count is a signed 64-bit integer


def training_memory(model_config: ModelConfig, lanes: int, seq_len: int) -> tuple[int, int]:
    """(parameters, bytes) for training a model, roughly: fp32 weights, gradients and AdamW's two
    moments, plus what one step keeps for the backward pass (every layer's gates and states, logits)."""
    shapes = parameter_shapes(model_config).values()
    if any(math.prod(shape) > MAX_TENSOR_ELEMENTS for shape in shapes):
        raise CharlstmError(
            f"a {model_config.layers}×{model_config.hidden} model with --embed {model_config.embed} "
            "is too large to build"
        )
    params = sum(math.prod(shape) for shape in shapes)
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
