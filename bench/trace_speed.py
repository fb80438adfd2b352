"""The per-step trace (the old path, kept as the reference) against the fused trace and the lanes, in one run.

    .venv/bin/python bench/trace_speed.py [--chars 10000] [--big-chars 1000000] [--command-chars 5000000]

1. All signals of a random 3×512 LSTM over --chars characters of Java: the step trace with float16
   weights (the old default), with float32 weights (the old --exact), and the fused trace
   (`fused_trace`, float32), interleaved over --rounds (best of each: the machine is shared), with
   the largest difference of each signal between the fused and the float32 step trace.
2. `inspect-neuron --find indent` as the command runs it (chunks of the trace, correlations
   accumulated, single-threaded) over --big-chars characters of the Python standard library on the
   shipped 3×256 model: the step trace with float16 weights (the old default) and the fused one,
   alternating chunk by chunk (each timed apart, one thread, as the command ran them), then the
   same text in lanes (`lane_chunks`, every core, as the command runs now), and in lanes again with
   plain float32 products where this CPU's probe splits them into bf16 pieces
   (`backend.cpu_splits_float32_products`); whether the top 10 units and their scores (to three
   decimals) agree, and how closely the lanes joined.
3. The command, `charlstm inspect-neuron --find indent`, over --command-chars characters in a
   process of its own: its wall time and peak memory (the issue's "5 MB in 2 minutes, 1.5 GB").
Parts 1 and 2 run in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

from charlstm.analysis.features import compute_feature
from charlstm.analysis.neurons import FeatureCorrelation, open_checkpoint, ranked
from charlstm.analysis.tracing import LaneReport, chunk_chars, encode_text, lane_chunks
from charlstm.core import backend
from charlstm.core.backend import available_cores, torch_threads
from charlstm.core.engine import StepEngine
from charlstm.core.model import CharRNN, ModelConfig
from charlstm.core.vocab import Vocab

CODE = """    public static String abbreviate(final String str, final int maxWidth) {
        if (str == null || maxWidth < 4) { // too short to shorten
            return str;
        }
        return str.substring(0, maxWidth - 3) + "...";
    }
"""
SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "pretrained-python"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def small_model(args) -> None:
    text = (CODE * (args.chars // len(CODE) + 1))[: args.chars]
    vocab = Vocab.from_counts({ch: 1 for ch in text})
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), layers=3, hidden=512)).eval()
    tokens = encode_text(vocab, text)
    engines = {
        "step, fp16 weights (old default)": (StepEngine(model, torch.float16), False),
        "step, fp32 weights (old --exact)": (StepEngine(model), False),
        "fused, fp32": (StepEngine(model), True),
    }
    for engine, fused in engines.values():
        engine.trace(tokens[:200], fused=fused)  # warm up (and build the fused modules)
    times = {name: [] for name in engines}
    traces = {}
    for _ in range(args.rounds):
        for name, (engine, fused) in engines.items():
            seconds, traces[name] = timed(lambda engine=engine, fused=fused: engine.trace(tokens, fused=fused))
            times[name].append(seconds)
    print(f"1. all signals, random LSTM 3×512, {args.chars:,} characters, 1 thread, best of {args.rounds}:")
    best = {name: min(t) for name, t in times.items()}
    for name, seconds in best.items():
        print(
            f"   {name:34s} {seconds:6.2f} s  ({args.chars / seconds:7,.0f} chars/s; "
            f"rounds {', '.join(f'{t:.2f}' for t in times[name])})"
        )
    old, exact, new = best.values()
    print(f"   fused vs old default: {old / new:.2f}×   fused vs old --exact: {exact / new:.2f}×")
    step, fused = traces["step, fp32 weights (old --exact)"], traces["fused, fp32"]
    diffs = ", ".join(f"{s} {(fused[s] - step[s]).abs().max().item():.1e}" for s in step)
    print(f"   largest |fused − step fp32| per signal: {diffs}")


def python_text(chars: int, vocab: Vocab) -> str:
    """Standard-library Python files (tests left out), whole files the model's vocabulary covers."""
    parts, total = [], 0
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if "test" in path.parts or "tests" in path.parts:
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if source and not vocab.unknown_chars(source):
            parts.append(source)
            total += len(source)
            if total >= chars:
                break
    return "".join(parts)[:chars]


def find_indent(model, tokens, feature, chunk: int) -> dict[str, tuple[float, list]]:
    """Both sequential paths over the same chunks, alternating chunk by chunk (so load changes hit
    both alike), each with its own carried state and correlations, as `trace_chunks` ran them."""
    paths = {
        "step, fp16 weights (old default)": (StepEngine(model, torch.float16), False),
        "fused, fp32, sequential": (StepEngine(model), True),
    }
    stats = {name: FeatureCorrelation(feature) for name in paths}
    states = {name: engine.init_state(1) for name, (engine, _) in paths.items()}
    seconds = dict.fromkeys(paths, 0.0)
    with torch_threads(1):
        for start in range(0, tokens.shape[0], chunk):
            for name, (engine, fused) in paths.items():
                begin = time.perf_counter()
                part = engine.trace(tokens[start : start + chunk], states[name], fused=fused)
                stats[name].add(start, {signal: values.numpy() for signal, values in part.items()})
                states[name] = engine.state_after(part)
                seconds[name] += time.perf_counter() - begin
    return {name: (seconds[name], ranked(stats[name].scores(), 10)) for name in paths}


def find_in_lanes(model, vocab, text: str, feature, split: bool = True) -> tuple[float, list, LaneReport]:
    """The corpus path `--find` runs now: lanes side by side, on every core; `split=False` keeps
    every product in plain float32 whatever the probe says."""
    probe = backend.cpu_splits_float32_products
    if not split:
        backend.cpu_splits_float32_products = lambda: False
    try:
        return _find_in_lanes(model, vocab, text, feature)
    finally:
        backend.cpu_splits_float32_products = probe


def _find_in_lanes(model, vocab, text: str, feature) -> tuple[float, list, LaneReport]:
    begin = time.perf_counter()
    stats = FeatureCorrelation(feature)
    traced = lane_chunks(model, vocab, text)
    with torch_threads(available_cores()):
        for at, chunk in traced:
            stats.add(at, {signal: values.numpy() for signal, values in chunk.items()})
    seconds = time.perf_counter() - begin
    return seconds, ranked(stats.scores(), 10), LaneReport(traced.layout, traced.boundaries)


def same(a: list, b: list) -> bool:
    return [(u.layer, u.neuron, u.signal, round(u.score, 3)) for u in a] == [
        (u.layer, u.neuron, u.signal, round(u.score, 3)) for u in b
    ]


def shipped_model(args) -> None:
    inspection = open_checkpoint(SHIPPED)
    model, vocab = inspection.model, inspection.vocab
    text = python_text(args.big_chars, vocab)
    tokens = encode_text(vocab, text)
    feature = compute_feature("indent", text, "python")
    chunk = chunk_chars(model)
    print(
        f"2. --find indent, shipped {model.config.layers}×{model.config.hidden} model, {len(text):,} characters "
        f"of the Python standard library: the two sequential paths ({chunk:,}-character chunks, 1 thread, "
        f"alternating), then the lanes ({available_cores()} threads):"
    )
    results = find_indent(model, tokens, feature, chunk)
    lane_seconds, lane_units, report = find_in_lanes(model, vocab, text, feature)
    results["lanes (as the command runs)"] = (lane_seconds, lane_units)
    split = backend.cpu_splits_float32_products()
    if split:
        results["lanes, plain float32 products"] = find_in_lanes(model, vocab, text, feature, split=False)[:2]
    for name, (seconds, _) in results.items():
        print(f"   {name:34s} {seconds:7.1f} s  ({len(text) / seconds:7,.0f} chars/s)")
    (old_s, old), (fused_s, fused) = list(results.values())[:2]
    print(
        f"   lanes vs old default: {old_s / lane_seconds:.2f}×   "
        f"lanes vs fused sequential: {fused_s / lane_seconds:.2f}×   "
        f"products split into bf16 pieces on this CPU: {'yes' if split else 'no (the probe refused)'}"
    )
    print(f"   {report.describe()}")
    plain = results.get("lanes, plain float32 products")
    print(
        f"   top 10 the same, scores to three decimals: step = fused {same(old, fused)}, "
        f"fused = lanes {same(fused, lane_units)}"
        + (f", lanes = plain-product lanes {same(lane_units, plain[1])}" if plain else "")
    )
    for a, b in zip(fused[:5], lane_units[:5], strict=True):
        print(
            f"     {a.layer}:{a.neuron} {a.signal} {a.score:+.4f}   |   {b.layer}:{b.neuron} {b.signal} {b.score:+.4f}"
        )


def high_water_kb(pid: int) -> int:
    """A live process's peak resident memory so far (VmHWM), in KB; 0 where /proc does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def command_run(args) -> None:
    """3. The command itself over --command-chars characters: its wall time and peak memory."""
    vocab = open_checkpoint(SHIPPED).vocab
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.py"
        path.write_text(python_text(args.command_chars, vocab), encoding="utf-8")
        command = [sys.executable, "-m", "charlstm", "inspect-neuron", str(SHIPPED), "--find", "indent"]
        command += ["--text-file", str(path), "--json"]
        begin = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out:
            child = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, text=True)
            peak = 0
            while (
                child.poll() is None
            ):  # the child's own high-water mark (getrusage would count the fork's copy of this process)
                peak = max(peak, high_water_kb(child.pid))
                time.sleep(0.2)
            seconds = time.perf_counter() - begin
            if child.returncode != 0:
                raise SystemExit(f"the command failed (exit {child.returncode}): {' '.join(command)}")
            out.seek(0)
            found = json.loads(out.read())
    peak /= 1e6  # KB → GB
    top = found["neurons"][0]
    print(
        f"3. charlstm inspect-neuron --find indent over {args.command_chars:,} characters: {seconds:.0f} s "
        f"({args.command_chars / seconds:,.0f} chars/s), peak {peak:.2f} GB, {found['lanes']['lanes']} lanes; "
        f"first {top['layer']}:{top['neuron']} {top['signal']} {top['score']:+.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=10_000)
    parser.add_argument("--big-chars", type=int, default=1_000_000, help="0: skip part 2")
    parser.add_argument("--command-chars", type=int, default=5_000_000, help="0: skip part 3")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    small_model(args)
    if args.big_chars:
        shipped_model(args)
    if args.command_chars:
        command_run(args)
    print(f"load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
