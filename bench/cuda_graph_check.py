"""Check that sampling replayed from a CUDA graph gives the eager loop's text, and time both.

    .venv/bin/python bench/cuda_graph_check.py [--checkpoint PATH] [--device auto|cpu|cuda] [--quick]

For a dozen settings (seeds, temperatures, top-k, top-p, greedy, batches up to 300, primes, stop
texts, lengths inside and across launches and noise blocks, fp16 weights) it generates with the
eager loop and with the graphed one on the same device and compares every step's characters and
stop flags. It also replays one block of steps from the graph and runs it uncaptured from the
same start, and compares the logits and state bit for bit. On a CPU the graphed side runs its
block logic uncaptured (`graphs="blocks"`), so the script itself is checked before it meets a GPU.
Prints one JSON line on stdout (progress on stderr); exit status 0 when every text matched and,
on CUDA, the graph was really used. `block.logits_bitwise_equal` is expected true as well (the
graph runs the same kernels on the same inputs); false there with equal texts would mean the
texts agree only because the differences were too small to change a draw. Well under a minute on
an H100.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from charlstm.core.backend import sampling_device  # noqa: E402
from charlstm.core.checkpoint import PRETRAINED_RUN, open_model  # noqa: E402
from charlstm.core.engine import StepEngine  # noqa: E402
from charlstm.sampling.draw import DrawRule, GumbelNoise  # noqa: E402
from charlstm.sampling.graphed import GRAPH_STEPS, BlockSteps  # noqa: E402
from charlstm.sampling.sample import Sampler, SampleSettings  # noqa: E402

CASES = [
    dict(seed=1, length=300),
    dict(seed=2, length=257, temperature=1.2, num_samples=3),
    dict(seed=3, length=200, top_k=5, num_samples=4, prime="def "),
    dict(seed=4, length=400, top_p=0.9, num_samples=2, stop="\n\n"),
    dict(length=150, greedy=True, num_samples=2, prime="class "),
    dict(seed=5, length=128, top_k=10, top_p=0.8, temperature=0.6, num_samples=16),
    dict(seed=6, length=5),  # shorter than one launch
    dict(seed=7, length=100, temperature=1.0, num_samples=64),  # noise blocks of 73 steps
    dict(seed=8, length=500, num_samples=8, stop="return", prime="def f(x):\n    "),
    dict(seed=9, length=1000, temperature=0.5),  # across 256-step noise blocks
    dict(seed=10, length=40, top_p=0.95, num_samples=300),  # noise blocks of 15 steps
    dict(seed=12, length=400, num_samples=3, stop="\n", temperature=1.1),  # every sample stops early
    dict(seed=1, length=300),  # again: the graph is reused and still right
]
FP16_CASE = dict(seed=11, length=200, top_k=20, num_samples=4)


def say(message: str) -> None:
    print(f"[cuda_graph_check] {message}", file=sys.stderr, flush=True)


def run_steps(sampler: Sampler, settings: dict) -> list:
    return [(list(chars), list(done)) for chars, done in sampler.generate(SampleSettings(**settings))]


def first_difference(a: list, b: list) -> dict:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):  # runs of different lengths: reported below
        if x != y:
            return {"step": i, "eager": x, "graphed": y}
    return {"step": min(len(a), len(b)), "eager_steps": len(a), "graphed_steps": len(b)}


def compare_cases(
    eager: Sampler, graphed: Sampler, cases: list[dict], expect_path: str, label: str = ""
) -> tuple[int, list]:
    mismatches = []
    for settings in cases:
        a, b = run_steps(eager, settings), run_steps(graphed, settings)
        path = graphed.last_path
        ok = a == b and path[0] == expect_path
        say(f"{label}{settings}: {'same' if a == b else 'DIFFERENT'} over {len(a)} steps, path {path[0]}")
        if not ok:
            mismatches.append({"settings": settings, "path": path, **({} if a == b else first_difference(a, b))})
    return len(cases), mismatches


@torch.inference_mode()
def fused_cell_difference(sampler: Sampler, steps: int = 500) -> dict:
    """The same teacher-forced text through the engine with and without the fused cell: how far apart."""
    engines = [StepEngine(sampler.model, sampler.engine.weight_dtype, fused_cell=f) for f in (True, False)]
    gen = torch.Generator(device=sampler.device).manual_seed(2)
    tokens = torch.randint(0, engines[0].vocab_size, (steps, 4), generator=gen, device=sampler.device)
    states = [e.init_state(4) for e in engines]
    worst = 0.0
    for t in range(steps):
        (a, states[0]), (b, states[1]) = (e.step(tokens[t], s) for e, s in zip(engines, states, strict=True))
        worst = max(worst, float((a - b).abs().max()))
    return {"fused_cell_used": engines[0].fused_cell, "logits_max_abs_diff": worst, "steps": steps}


@torch.inference_mode()
def block_difference(sampler: Sampler, capture: bool) -> dict:
    """One block from the same start, captured (if `capture`) and uncaptured: how far apart."""
    engine, batch, rule = sampler.engine, 4, DrawRule(0.9, top_k=40, top_p=0.95)
    gen = torch.Generator(device=sampler.device).manual_seed(0)
    logits = torch.randn(1, engine.vocab_size, generator=gen, device=sampler.device)
    state = [
        tuple(torch.randn(1, engine.hidden, generator=gen, device=sampler.device).to(engine.dtype) for _ in layer)
        for layer in engine.init_state(1)
    ]
    results = []
    for captured in (capture, False):
        blocks = BlockSteps(engine, batch, rule, GRAPH_STEPS, capture=captured)
        noise = GumbelNoise(
            torch.Generator(device=sampler.device).manual_seed(1), batch, engine.vocab_size, sampler.device
        )
        blocks.load(logits, state)
        tokens = []
        for first in (0, GRAPH_STEPS):
            noise.fill(blocks.noise, first, GRAPH_STEPS)
            tokens += blocks.collect(blocks.launch())
        results.append((tokens, blocks.logits.clone(), [t.clone() for layer in blocks.state for t in layer]))
    (ta, la, sa), (tb, lb, sb) = results
    return {
        "tokens_equal": ta == tb,
        "logits_bitwise_equal": torch.equal(la, lb),
        "logits_max_abs_diff": float((la - lb).abs().max()),
        "state_bitwise_equal": all(torch.equal(x, y) for x, y in zip(sa, sb, strict=True)),
    }


def speed(sampler: Sampler, batch: int, length: int) -> float:
    settings = SampleSettings(length=length, num_samples=batch, seed=0)
    sampler.sample_texts(SampleSettings(length=GRAPH_STEPS, num_samples=batch, seed=1))  # capture untimed
    if sampler.device.type == "cuda":
        torch.cuda.synchronize(sampler.device)
    start = time.perf_counter()
    sampler.sample_texts(settings)
    return round(batch * length / (time.perf_counter() - start))


def timings(eager: Sampler, graphed: Sampler, cpu: bool) -> dict:
    out = {}
    for batch, length in ((1, 300 if cpu else 3000), (16, 200 if cpu else 2000)):
        e, g = speed(eager, batch, length), speed(graphed, batch, length)
        out[f"batch{batch}"] = {"eager_chars_per_s": e, "graphed_chars_per_s": g, "graphed_vs_eager": round(g / e, 2)}
        say(f"batch {batch}: eager {e:,} chars/s, graphed {g:,} chars/s ({g / e:.1f}×)")
    # The fused LSTM cell (torch.lstm_cell) that CUDA steps with by default, against the unfused math.
    plain = Sampler(graphed.model, graphed.vocab, graphed.device, "fp32", graphs=graphed.graphs, fused_cell=False)
    unfused = speed(plain, 1, 300 if cpu else 3000)
    out["batch1_unfused_cell"] = {
        "graphed_chars_per_s": unfused,
        "fused_vs_unfused": round(out["batch1"]["graphed_chars_per_s"] / unfused, 2),
    }
    say(f"batch 1, graphed with the unfused cell: {unfused:,} chars/s")
    start = time.perf_counter()
    with torch.inference_mode():
        BlockSteps(graphed.engine, 1, DrawRule(0.7), GRAPH_STEPS, capture=not cpu)
    out["build_ms"] = round(1000 * (time.perf_counter() - start), 1)
    return out


def check(checkpoint: str | Path, device: torch.device, quick: bool = False) -> dict:
    cpu = device.type != "cuda"
    cases, fp16_case = (
        (CASES, FP16_CASE) if not quick else ([dict(c, length=40) for c in CASES[:3]], dict(FP16_CASE, length=40))
    )
    mode, expect = ("blocks", "blocks") if cpu else ("capture", "graphed")
    opened = open_model(checkpoint, device)
    model, vocab = opened.model, opened.vocab
    eager = Sampler(model, vocab, device, "fp32", graphs="eager")
    graphed = Sampler(model, vocab, device, "fp32", graphs=mode)
    count, mismatches = compare_cases(eager, graphed, cases, expect)
    auto = Sampler(model, vocab, device, "fp32")  # what `charlstm sample` builds: graphed on CUDA by default
    n, more = compare_cases(eager, auto, cases[:1], "eager" if cpu else "graphed", "auto: ")
    count, mismatches = count + n, mismatches + more
    half = [Sampler(model, vocab, device, "fp16", graphs=g) for g in ("eager", mode)]
    n, more = compare_cases(*half, [fp16_case], expect, "fp16 weights: ")
    count, mismatches = count + n, mismatches + more
    block = block_difference(graphed, capture=not cpu)
    say(f"one block captured vs uncaptured: {block}")
    cell = fused_cell_difference(graphed, 50 if quick else 500)
    say(f"fused vs unfused LSTM cell: {cell}")
    return {
        "ok": not mismatches and block["tokens_equal"],
        "device": str(device),
        "gpu": None if cpu else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "mode": mode,
        "checkpoint": str(opened.path),
        "cases": count,
        "mismatches": mismatches,
        "block": block,
        "fused_cell": cell,
        "timings": None if quick else timings(eager, graphed, cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", default=str(PRETRAINED_RUN), help="checkpoint file or run folder (default: the shipped model)"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="three cases of 40 steps and the block check, no timings: a CPU's proof that the script runs",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    device = sampling_device(args.device)
    try:
        result = check(args.checkpoint, device, args.quick)
    except Exception as exc:  # one JSON line whatever happens, for the script that runs this
        traceback.print_exc()
        result = {"ok": False, "device": str(device), "error": f"{type(exc).__name__}: {exc}"}
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
