"""Time to quality: charlstm's default recipe against a bare nn.LSTM loop, at three budgets.

A CPU user's first runs are minutes long, so what counts is the validation bpc a budget buys. For
each dataset and budget this trains `charlstm train`'s recipe (its options resolved exactly as the
CLI resolves them: `fresh_config`, then a Trainer) and the loop a user writes in twenty lines
(kept below as `BareLoop`, the reference: PyTorch's default init, AdamW 2e-3 held constant, global
norm clipping at 1.0), on the same shape, data, lanes, seed, precision and threads, and scores both
with the same function on the same validation tokens. Prints one table (stderr; --json: stdout).

Budgets are steps by default: quality at a fixed step count does not depend on what else shares
the cores, so the table is reproducible on a busy machine. The defaults, 110 / 440 / 1,800 steps,
are what 1, 4 and 16 minutes gave a 2×256 (batch 64 × 128, fp32) on a 2-core AVX2 EPYC. `--minutes`
makes the budgets wall-clock minutes instead (charlstm then gets `--minutes M`, estimating its
schedule's length as the CLI does; the bare loop is scored when its training time passes each mark).
The bare loop's learning rate does not depend on the budget, so one run of the longest budget is
scored at every budget; charlstm's schedule does, so it trains once per budget.

    .venv/bin/python bench/time_to_quality.py --data data/python-stdlib --data data/jdk-util \\
        --budgets 110,440,1800 --precision fp32 --threads 1
    .venv/bin/python bench/time_to_quality.py --data data/jdk-util --minutes --budgets 1,4,16

`--set KEY=VALUE` (repeatable) gives charlstm an option as if typed on the command line (e.g.
`--set min_lr_ratio=1`), to try a recipe against the same reference; `--sides ours` or `bare` runs
one side only; `--val-chars N` scores the first N validation characters (faster, for sweeps).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from charlstm.core.config import TrainConfig  # noqa: E402
from charlstm.corpus.dataset import load_dataset  # noqa: E402
from charlstm.evaluation.evaluate import bits_per_char  # noqa: E402
from charlstm.training.train import Trainer  # noqa: E402
from charlstm.training.train_setup import fresh_config  # noqa: E402
from charlstm.ui.terminal import Terminal  # noqa: E402

SHAPE = dict(layers=2, hidden=256, embed=64, batch_size=64, seq_len=128)  # the shape
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


class BareModel(nn.Module):
    """Embedding → nn.LSTM → linear, every tensor as PyTorch initialises it."""

    def __init__(self, vocab: int, layers: int, hidden: int, embed: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        out, state = self.rnn(self.embedding(x), state)
        return self.head(out), state


class BareLoop:
    """The reference: the loop a user writes, stateful lanes over the training split."""

    def __init__(
        self, tokens: np.ndarray, vocab: int, shape: dict, seed: int, dtype, lr: float = 2e-3, clip: float = 1.0
    ):
        torch.manual_seed(seed)
        self.model = BareModel(vocab, shape["layers"], shape["hidden"], shape["embed"])
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr)  # constant; AdamW's own weight decay
        lanes, self.seq = shape["batch_size"], shape["seq_len"]
        lane_len = len(tokens) // lanes
        self.grid = tokens[: lanes * lane_len].reshape(lanes, lane_len)
        self.windows = (lane_len - 1) // self.seq
        self.window, self.state, self.clip, self.dtype = 0, None, clip, dtype
        self.steps = 0

    def autocast(self):
        return torch.autocast("cpu", dtype=self.dtype) if self.dtype is not None else nullcontext()

    def step(self) -> None:
        if self.window == self.windows:  # a new pass: every lane starts over
            self.window, self.state = 0, None
        s = self.window * self.seq
        chunk = torch.from_numpy(np.asarray(self.grid[:, s : s + self.seq + 1], dtype=np.int64))
        with self.autocast():
            logits, state = self.model(chunk[:, :-1], self.state)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), chunk[:, 1:].reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.state = tuple(t.detach() for t in state)
        self.window += 1
        self.steps += 1


def run_bare(dataset, val, budgets: list[float], args) -> dict:
    """One run of the longest budget, scored as it passes each (steps, or training minutes)."""
    loop = BareLoop(
        np.asarray(dataset.tokens("train")), len(dataset.vocab), args.shape, args.seed, DTYPES[args.precision]
    )
    results, trained = {}, 0.0
    for budget in sorted(budgets):
        while (trained < budget * 60) if args.minutes else (loop.steps < budget):
            start = time.perf_counter()
            loop.step()
            trained += time.perf_counter() - start
        bpc = bits_per_char(loop.model, val, autocast=loop.autocast)["bpc"]
        results[budget] = {"steps": loop.steps, "val_bpc": bpc}
        say(f"{dataset.name} bare, budget {budget:g}: {loop.steps:,} steps, {bpc:.4f} bpc")
    return results


def run_ours(dataset, val, budget: float, args, tmp: Path) -> dict:
    """`charlstm train` with the bench's shape and this budget: the CLI's defaults for the rest."""
    options = {
        "data": str(dataset.path),
        "out": str(tmp / f"{dataset.name}-{budget:g}"),
        **args.shape,
        "seed": args.seed,
        "precision": args.precision,
        "threads": args.threads,
        "device": "cpu",
        "eval_every": 0,
        "save_every": 0,
        "log_every": 50,
        **args.overrides,
    }
    options["minutes" if args.minutes else "steps"] = budget
    config = fresh_config(options).config
    trainer = Trainer(
        config, Path(config.out), force=True, on_event=Terminal(labels=False)
    )  # as `charlstm train` shows it
    trainer.val_tokens = val  # the end-of-run validation scores the bench's tokens
    summary = trainer.run()
    trainer.close(finished=True)
    bpc = summary["val_bpc"]
    say(f"{dataset.name} charlstm, budget {budget:g}: {summary['steps']:,} steps, {bpc:.4f} bpc")
    return {"steps": summary["steps"], "val_bpc": bpc, "chosen": config.chosen, "schedule": dict(trainer.schedule)}


def coerce(key: str, value: str):
    """A --set value as the option's type (its annotation: int, float, str, or None for 'none')."""
    known = {f.name: str(f.type) for f in fields(TrainConfig)}
    if key not in known:
        raise SystemExit(f"--set {key}: not a training option ({', '.join(sorted(known))})")
    if value.lower() == "none":
        return None
    kind = known[key].split(" |")[0]
    return {"int": int, "float": float}.get(kind, str)(value)


def table(results: dict, unit: str) -> str:
    lines = [
        "| dataset | budget | charlstm steps | charlstm val bpc | bare steps | bare val bpc | charlstm − bare |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for budget in sorted(set(rows.get("ours", {})) | set(rows.get("bare", {}))):
            ours, bare = rows.get("ours", {}).get(budget), rows.get("bare", {}).get(budget)
            cell = lambda r, k: "—" if r is None else (f"{r[k]:,}" if k == "steps" else f"{r[k]:.3f}")  # noqa: E731
            diff = f"{ours['val_bpc'] - bare['val_bpc']:+.3f}" if ours and bare else "—"
            lines.append(
                f"| {name} | {budget:g} {unit} | {cell(ours, 'steps')} | {cell(ours, 'val_bpc')} | "
                f"{cell(bare, 'steps')} | {cell(bare, 'val_bpc')} | {diff} |"
            )
    return "\n".join(lines)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", help="an ingested dataset (repeatable); default: data/python-stdlib")
    p.add_argument("--budgets", default="110,440,1800", help="comma-separated steps (or minutes with --minutes)")
    p.add_argument("--minutes", action="store_true", help="budgets are wall-clock minutes of training")
    for key, value in SHAPE.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=value)
    p.add_argument("--precision", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both sides (1: leave cores to others)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--val-chars", type=int, default=0, help="score only the first N validation characters (0: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a charlstm option, as given")
    p.add_argument("--sides", default="ours,bare", help="ours, bare or both (comma-separated)")
    p.add_argument("--json", action="store_true", help="also print the results as JSON on stdout")
    args = p.parse_args()
    args.shape = {k: getattr(args, k) for k in SHAPE}
    args.budget_list = [float(b) if args.minutes else int(b) for b in args.budgets.split(",")]
    args.overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        args.overrides[key] = coerce(key, value)
    args.data = args.data or ["data/python-stdlib"]
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as charlstm does on a CPU: denormals slow both sides alike otherwise
    unit = "min" if args.minutes else "steps"
    shape = args.shape
    say(
        f"time to quality: {shape['layers']}×{shape['hidden']} LSTM, embed {shape['embed']}, batch "
        f"{shape['batch_size']} × {shape['seq_len']}, {args.precision}, {args.threads} thread(s), CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}; budgets {args.budgets} {unit}; "
        f"charlstm options set: {args.overrides or 'none'}"
    )
    sides = set(args.sides.split(","))
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.data:
            dataset = load_dataset(path)
            val = np.asarray(dataset.tokens("val"))
            val = val[: args.val_chars] if args.val_chars else val
            rows = results.setdefault(dataset.name, {})
            if "ours" in sides:
                rows["ours"] = {b: run_ours(dataset, val, b, args, Path(tmp)) for b in args.budget_list}
            if "bare" in sides:
                rows["bare"] = run_bare(dataset, val, args.budget_list, args)
            say(table({dataset.name: rows}, unit))
    say(table(results, unit))
    if args.json:
        print(
            json.dumps(
                {
                    "shape": shape,
                    "precision": args.precision,
                    "threads": args.threads,
                    "unit": unit,
                    "overrides": args.overrides,
                    "results": results,
                },
                default=str,
            )
        )


if __name__ == "__main__":
    main()
