"""Training throughput: the project's training loop against a bare nn.LSTM loop of the same shape.

Both run in this process on the same data shape (3×512 LSTM, embed 64, batch 64, seq 128), in fp32,
bf16 and fp16 wherever charlstm's own precision check accepts each (the rest are skipped with the
reason), alternating so that load from other processes hits both alike. Prints chars/s, the ratio
project/bare (target ≥ 0.9), model FLOP/s (6 × parameters × chars/s) as a fraction of a
matrix-product peak measured here for the same dtype, and each reduced precision's speed-up over
fp32 for the project's loop (target on an AMX CPU: bf16 ≥ 1.8×).

    .venv/bin/python bench/train_speed.py [--quick] [--device cpu|cuda] [--steps N] [--json]

`--grid` measures a table instead of the one shape: every precision charlstm accepts here ×
batch × hidden. On CUDA: 3 layers, embed 64, seq 128, hidden 512 and 1024, batch 64, 256 and
1024; elsewhere a tiny grid (hidden 32/64, batch 4/16, embed 16, seq 32) that proves the script
in seconds. With --json the grid prints its record so far after every (hidden, batch), one JSON
line each, so a run stopped early keeps the cells it finished; the last line is the whole.
`--hidden H` / `--batch B` (repeatable) choose other sizes. The loops of one
(hidden, batch) are interleaved; each row gives chars/s of ours and of the bare loop, their ratio
and each precision's speed-up over fp32, and the JSON's "auto_table" holds the bare loop's figures
in the form of charlstm.core.backend.CUDA_MEASURED, which `--precision auto` on CUDA follows.

    .venv/bin/python bench/train_speed.py --grid --device cuda --json
    .venv/bin/python bench/train_speed.py --grid --quick          # the tiny grid on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import sysconfig
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from charlstm.core.backend import available_cores, choose_precision, resolve_device  # noqa: E402
from charlstm.core.config import TrainConfig  # noqa: E402
from charlstm.core.errors import CharlstmError  # noqa: E402
from charlstm.core.model import CharRNN, ModelConfig  # noqa: E402
from charlstm.core.vocab import Vocab  # noqa: E402
from charlstm.corpus.dataset import write_dataset  # noqa: E402
from charlstm.training.train import Trainer  # noqa: E402

SHAPE = dict(layers=3, hidden=512, embed=64, batch_size=64, seq_len=128)
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def corpus(chars: int) -> str:
    """Real code for realistic token statistics: the running Python's standard library."""
    parts, n = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        n += len(text)
        if n >= chars:
            break
    return "\x1c".join(parts)[:chars]


def make_dataset(root: Path, steps: int, shape: dict = SHAPE):
    need = shape["batch_size"] * (shape["seq_len"] * (steps + 2) + 1)
    text = corpus(need + 5000)
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    vocab = Vocab.from_counts(counts)
    ids = vocab.encode(text)
    return write_dataset(root / "bench", vocab, ids[:need], ids[need : need + 3000], {"language": "python"})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def project_trainer(dataset, precision: str, device: str, threads: int, out: Path, shape: dict = SHAPE) -> Trainer:
    config = TrainConfig(
        data=str(dataset.path),
        out=str(out),
        **{"model": "lstm", **shape},
        steps=10_000,
        eval_every=0,
        save_every=0,
        precision=precision,
        device=device,
        threads=threads,
    )
    return Trainer(config, out, force=True)


def project_step(trainer: Trainer) -> float:
    """Seconds for one step of charlstm's loop: lane batch from the memmap, schedule, autocast,
    loss, scaler, clipping, AdamW, state carry, and the loop's non-finite check."""
    sync(trainer.device)
    start = time.perf_counter()
    x, y, fresh = trainer.batcher.next()
    loss = trainer.train_step(x, y, fresh)
    bool(torch.isfinite(loss))
    sync(trainer.device)
    return time.perf_counter() - start


class BareLoop:
    """The textbook loop: embedding → nn.LSTM → linear, AdamW, carried state, fixed random batch."""

    def __init__(self, vocab_size: int, dtype, device: torch.device, shape: dict = SHAPE):
        torch.manual_seed(0)
        self.model = CharRNN(
            ModelConfig(vocab_size=vocab_size, layers=shape["layers"], hidden=shape["hidden"], embed=shape["embed"])
        ).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=2e-3)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # as fp16 training needs
        b, t = shape["batch_size"], shape["seq_len"]
        self.x = torch.randint(0, vocab_size, (b, t), device=device)
        self.y = torch.randint(0, vocab_size, (b, t), device=device)
        self.dtype, self.device, self.vocab_size, self.state = dtype, device, vocab_size, None

    def step(self) -> float:
        sync(self.device)
        start = time.perf_counter()
        ctx = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()
        with ctx:
            logits, state = self.model(self.x, self.state)
        loss = F.cross_entropy(logits.float().reshape(-1, self.vocab_size), self.y.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.state = tuple(s.detach() for s in state)
        loss.item()
        sync(self.device)
        return time.perf_counter() - start


def matmul_peak(dtype, device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Best FLOP/s of an n×n matrix product in `dtype` on this machine, now."""
    a = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    b = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    a @ b
    best = 0.0
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def accepted_precisions(device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The precisions `charlstm train --precision NAME` would accept here, and why the rest are not."""
    accepted, skipped = [], {}
    for name in DTYPES:
        try:  # the project's own check
            choose_precision(name, device)
            accepted.append(name)
        except CharlstmError as exc:
            skipped[name] = str(exc)
            print(f"{name}: skipped — {exc}", file=sys.stderr)
    return accepted, skipped


def build_loops(dataset, precisions, device, threads, tmp: Path, shape: dict) -> tuple[dict, int]:
    """(precision, "project" | "bare") → a function timing one step; and the parameter count."""
    loops = {}
    for name in precisions:
        trainer = project_trainer(dataset, name, device.type, threads, tmp / f"run-{name}", shape)
        bare_loop = BareLoop(len(dataset.vocab), DTYPES[name], device, shape)
        assert bare_loop.model.num_parameters() == trainer.raw_model.num_parameters()
        loops[name, "project"] = lambda trainer=trainer: project_step(trainer)
        loops[name, "bare"] = bare_loop.step
    return loops, trainer.raw_model.num_parameters()


def interleave(loops: dict, warmup: int, steps: int) -> dict:
    """Every loop takes one step per round, in an order that rotates each round, so load from
    other processes and cache effects hit all of them alike: the ratios between precisions are
    measured as fairly as the ratio between our loop and the bare one."""
    times: dict[tuple[str, str], list[float]] = {key: [] for key in loops}
    keys = list(loops)
    for i in range(warmup + steps):
        for key in keys[i % len(keys) :] + keys[: i % len(keys)]:
            seconds = loops[key]()
            if i >= warmup:
                times[key].append(seconds)
    return times


def single(args, device, threads, warmup: int) -> dict:
    """The default: one shape (3×512, batch 64), with each loop's share of the matmul peak."""
    print(
        f"3×512 LSTM, embed 64, batch 64, seq 128 on {device} ({threads} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}; "
        f"{args.steps} measured steps of each loop, interleaved, after {warmup} warm-up",
        file=sys.stderr,
    )
    precisions, skipped = accepted_precisions(device)
    results: dict[str, dict | None] = {name: None for name in DTYPES}  # None: skipped here
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_dataset(Path(tmp), warmup + args.steps)
        loops, params = build_loops(dataset, precisions, device, threads, Path(tmp), SHAPE)
        peaks_before = {name: matmul_peak(DTYPES[name], device) for name in precisions}
        times = interleave(loops, warmup, args.steps)
        chars = SHAPE["batch_size"] * SHAPE["seq_len"]
        for name in precisions:
            p_cps = chars / statistics.median(times[name, "project"])
            b_cps = chars / statistics.median(times[name, "bare"])
            peak = max(peaks_before[name], matmul_peak(DTYPES[name], device))  # before and after: load varies
            flops = 6 * params * p_cps
            results[name] = {
                "project_chars_per_sec": round(p_cps),
                "bare_chars_per_sec": round(b_cps),
                "ratio": round(p_cps / b_cps, 3),
                "model_flops": flops,
                "matmul_peak_flops": peak,
                "fraction_of_peak": round(flops / peak, 3),
            }
            print(
                f"{name}: project {p_cps:,.0f} chars/s, bare nn.LSTM {b_cps:,.0f} chars/s → ratio {p_cps / b_cps:.3f} "
                f"(target ≥ 0.9); model {flops / 1e9:,.1f} GFLOP/s = {flops / peak:.0%} of the measured "
                f"{name} matmul peak {peak / 1e9:,.0f} GFLOP/s",
                file=sys.stderr,
            )
    fp32 = results.get("fp32")
    for name in ("bf16", "fp16"):
        if fp32 and results.get(name):
            speedup = results[name]["project_chars_per_sec"] / fp32["project_chars_per_sec"]
            results[name]["speedup_over_fp32"] = round(speedup, 3)
            print(f"{name} / fp32 for the project's loop: {speedup:.2f}×", file=sys.stderr)
    return results


def grid_cell(precisions, device, threads, warmup: int, steps: int, shape: dict) -> list[dict]:
    """One (hidden, batch) of the grid: every accepted precision, ours and bare, interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_dataset(Path(tmp), warmup + steps, shape)
        loops, _ = build_loops(dataset, precisions, device, threads, Path(tmp), shape)
        times = interleave(loops, warmup, steps)
        del loops  # frees this cell's models before the next, larger one is built
    chars = shape["batch_size"] * shape["seq_len"]
    rows = []
    for name in precisions:
        ours = chars / statistics.median(times[name, "project"])
        bare = chars / statistics.median(times[name, "bare"])
        rows.append(
            {
                "hidden": shape["hidden"],
                "batch": shape["batch_size"],
                "precision": name,
                "ours_chars_per_sec": round(ours),
                "bare_chars_per_sec": round(bare),
                "ratio": round(ours / bare, 3),
            }
        )
    fp32 = next((r for r in rows if r["precision"] == "fp32"), None)
    for row in rows:
        if fp32 is not None:
            row["ours_speedup_over_fp32"] = round(row["ours_chars_per_sec"] / fp32["ours_chars_per_sec"], 3)
            row["bare_speedup_over_fp32"] = round(row["bare_chars_per_sec"] / fp32["bare_chars_per_sec"], 3)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def grid(args, device, threads, warmup: int) -> dict:
    """Precisions × batch × hidden; rows as measured, plus the bare loop's figures in the shape of
    charlstm.core.backend.CUDA_MEASURED ("auto_table"), which `--precision auto` on CUDA reads."""
    cuda = device.type == "cuda"
    hiddens = args.hidden or ([512, 1024] if cuda else [32, 64])
    batches = args.batch or ([64, 256, 1024] if cuda else [4, 16])
    base = dict(layers=3, embed=64, seq_len=128) if cuda else dict(layers=3, embed=16, seq_len=32)
    print(
        f"grid: {base['layers']}-layer LSTM, embed {base['embed']}, seq {base['seq_len']}, hidden {hiddens} × batch "
        f"{batches} on {device} ({threads} threads), torch {torch.__version__}; {args.steps} measured steps "
        f"per loop after {warmup} warm-up, interleaved within each (hidden, batch)",
        file=sys.stderr,
    )
    precisions, skipped = accepted_precisions(device)
    rows: list[dict] = []
    for hidden in hiddens:
        for batch in batches:
            shape = {**base, "hidden": hidden, "batch_size": batch}
            cell = grid_cell(precisions, device, threads, warmup, args.steps, shape)
            for r in cell:
                speedup = f", {r['ours_speedup_over_fp32']:.2f}× fp32" if "ours_speedup_over_fp32" in r else ""
                print(
                    f"3×{hidden} batch {batch} {r['precision']}: ours {r['ours_chars_per_sec']:,} chars/s, bare "
                    f"{r['bare_chars_per_sec']:,} → ratio {r['ratio']:.3f}{speedup}",
                    file=sys.stderr,
                )
            rows += cell
            if args.json:  # the table so far, one JSON line per cell: a run stopped early keeps the cells done
                print(json.dumps(grid_record(rows, device, base, hiddens, batches, args.steps, skipped)), flush=True)
    return grid_record(rows, device, base, hiddens, batches, args.steps, skipped)


def grid_record(rows: list[dict], device, base: dict, hiddens, batches, steps: int, skipped: dict) -> dict:
    table: dict[int, dict[int, dict[str, int]]] = {}
    for r in rows:
        table.setdefault(r["hidden"], {}).setdefault(r["batch"], {})[r["precision"]] = r["bare_chars_per_sec"]
    cuda = device.type == "cuda"
    device_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    return {
        "device": device_name,
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "shape": {**base, "hiddens": hiddens, "batches": batches},
        "steps": steps,
        "skipped": skipped,
        "rows": rows,
        "auto_table": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 measured steps per loop instead of 8")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per loop (after 2 warm-up steps)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--grid", action="store_true", help="precisions × batch × hidden instead of the one default shape"
    )
    parser.add_argument("--hidden", type=int, action="append", help="with --grid: a hidden size (repeatable)")
    parser.add_argument("--batch", type=int, action="append", help="with --grid: a batch size (repeatable)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON on stdout")
    args = parser.parse_args()
    if args.quick:
        args.steps = 3
    warmup = 2
    device = resolve_device(args.device)
    threads = args.threads or available_cores()
    torch.set_num_threads(threads)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    results = grid(args, device, threads, warmup) if args.grid else single(args, device, threads, warmup)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
