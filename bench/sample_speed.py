"""Sampling speed: charlstm's sampling loops against the naive nn.LSTM loop, in the same run.

    .venv/bin/python bench/sample_speed.py [--device cpu|cuda] [--rounds 3] [--seconds 4] [--json]

Model: a 3×512 LSTM, embedding 64, vocabulary 100 (random weights: speed does not depend on
training). Every loop samples the next character at temperature 0.8 and hands it to the host, so
the figures are end to end. The naive loop calls the `nn.LSTM` module one character at a time
with its state, as a first attempt would; ours is `Sampler.generate`: the eager step loop (one
engine step per character) with its default weights (`--precision auto`: int8 on a CPU with
FBGEMM), with fp16 and fp32 weights for comparison on a CPU, and on a CUDA GPU also the steps
replayed from a CUDA graph (graphed.py; on a CPU it is reported as skipped, with the reason).
Batch 1 and batch 16. Variants are measured in interleaved rounds and the median kept, since the
machine may be shared. On a CPU the naive loop is timed at one thread and at all threads, and
the ratio is taken against the faster of the two.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from charlstm.core.model import CharRNN, ModelConfig  # noqa: E402
from charlstm.core.vocab import SPECIALS, Vocab  # noqa: E402
from charlstm.sampling.graphed import capture_unavailable  # noqa: E402
from charlstm.sampling.sample import Sampler, SampleSettings  # noqa: E402

VOCAB = Vocab([*SPECIALS, *(chr(c) for c in range(32, 32 + 98))])
TARGET_GRAPHED_VS_NAIVE = 10  # batch 1, on a GPU
TARGET_GRAPHED_BATCH16 = 100_000  # chars/s in all, on a GPU


def naive_chars_per_sec(
    model: CharRNN, device: torch.device, seconds: float, generator: torch.Generator, batch: int = 1
) -> float:
    token = torch.zeros(batch, 1, dtype=torch.long, device=device)
    state, steps, start = None, 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - start < seconds:
            logits, state = model(token, state)
            probs = torch.softmax(logits[:, -1] / 0.8, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)
            [VOCAB.symbols[i] for i in token.view(-1).tolist()]
            steps += 1
    return batch * steps / (time.perf_counter() - start)


def ours_chars_per_sec(sampler: Sampler, batch: int, seconds: float, seed: int) -> float:
    settings = SampleSettings(length=1_000_000, temperature=0.8, num_samples=batch, seed=seed)
    steps, start = 0, time.perf_counter()
    for _ in sampler.generate(settings):
        steps += 1
        if steps % 32 == 0 and time.perf_counter() - start > seconds:
            break
    return batch * steps / (time.perf_counter() - start)


def with_threads(n: int, fn, *args):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(before)


def variants_for(model: CharRNN, device: torch.device, seconds: float, uncaptured: bool = False) -> tuple[dict, dict]:
    """{name: () -> chars/s} in the order they run each round, and {name: why} for those skipped."""
    cpu, cores = device.type == "cpu", torch.get_num_threads()
    thread_counts = [1, cores] if cpu and cores > 1 else [1]
    label = (lambda n: f", {n} thread{'s' if n > 1 else ''}") if cpu else (lambda n: "")
    generator = torch.Generator(device=device).manual_seed(0)
    eager = Sampler(model, VOCAB, device, precision="auto", graphs="eager")
    others = [Sampler(model, VOCAB, device, precision=p, graphs="eager") for p in ("fp16", "fp32")] if cpu else []
    unavailable = None if uncaptured else capture_unavailable(device)
    mode = "blocks" if uncaptured else "capture"
    graphed = None if unavailable else Sampler(model, VOCAB, device, precision="auto", graphs=mode)
    variants, skipped = {}, {}
    for batch in (1, 16):
        counts = thread_counts if batch == 16 or not cpu else [1]
        for n in thread_counts:
            variants[f"naive nn.LSTM loop, batch {batch}{label(n)}"] = lambda n=n, b=batch: with_threads(
                n, naive_chars_per_sec, model, device, seconds, generator, b
            )
        variants[f"ours eager ({_weights(eager)}), batch {batch}{label(1)}"] = lambda b=batch: with_threads(
            1, ours_chars_per_sec, eager, b, seconds, 0
        )
        for n in counts[1:]:
            variants[f"ours eager, batch {batch}{label(n)}"] = lambda n=n, b=batch: with_threads(
                n, ours_chars_per_sec, eager, b, seconds, 0
            )
        if batch == 1:
            for other in (o for o in others if o.engine.weight_dtype != eager.engine.weight_dtype):
                variants[f"ours eager {_weights(other)}, batch 1{label(1)}"] = lambda o=other: with_threads(
                    1, ours_chars_per_sec, o, 1, seconds, 0
                )
        name = f"ours graphed{' (uncaptured)' if uncaptured else ''}, batch {batch}"
        if graphed is None:
            skipped[name] = unavailable
        else:
            graphed.sample_texts(SampleSettings(length=64, num_samples=batch, seed=0))  # capture outside the timing
            variants[name] = lambda b=batch: with_threads(1, ours_chars_per_sec, graphed, b, seconds, 0)
    return variants, skipped


def summary(median: dict[str, float], skipped: dict[str, str], device: torch.device) -> dict:
    def best(prefix: str, batch: int) -> float | None:
        found = [v for k, v in median.items() if k.startswith(prefix) and _batch_of(k) == batch]
        return round(max(found)) if found else None

    out = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    for batch in (1, 16):
        out[f"naive_batch{batch}"] = best("naive", batch)
        out[f"eager_batch{batch}"] = best("ours eager (", batch) if batch == 1 else best("ours eager", batch)
        out[f"graphed_batch{batch}"] = best("ours graphed", batch)
    naive, eager, graphed = out["naive_batch1"], out["eager_batch1"], out["graphed_batch1"]
    out["eager_vs_naive_batch1"] = round(eager / naive, 2)
    out["graphed_vs_naive_batch1"] = round(graphed / naive, 2) if graphed else None
    out["graphed_vs_eager_batch1"] = round(graphed / eager, 2) if graphed else None
    out["graphed_vs_eager_batch16"] = round(out["graphed_batch16"] / out["eager_batch16"], 2) if graphed else None
    if graphed:
        out["targets_met"] = (
            out["graphed_vs_naive_batch1"] >= TARGET_GRAPHED_VS_NAIVE
            and out["graphed_batch16"] >= TARGET_GRAPHED_BATCH16
        )
    out["skipped"] = skipped
    # The figures earlier versions printed, under their old names.
    out.update(naive=naive, ours_batch1=eager, ratio=out["eager_vs_naive_batch1"], ours_batch16=out["eager_batch16"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--seconds", type=float, default=4.0, help="time per variant per round")
    parser.add_argument(
        "--json", action="store_true", help="print only the JSON summary on stdout (the table goes to stderr)"
    )
    parser.add_argument(
        "--uncaptured",
        action="store_true",
        help="time the graphed path's block logic without the capture (checks this script on a CPU)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(VOCAB), layers=3, hidden=512, embed=64)).to(device).eval()
    variants, skipped = variants_for(model, device, args.seconds, args.uncaptured)

    results: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, run in variants.items():
            results[name].append(run())
            print(f"round {r + 1}: {name:<52} {results[name][-1]:>9,.0f} chars/s", file=sys.stderr, flush=True)
    median = {name: statistics.median(values) for name, values in results.items()}
    out = summary(median, skipped, device)

    table = sys.stderr if args.json else sys.stdout
    print(
        f"\nsampling speed, 3×512 LSTM (embed 64, vocab {len(VOCAB)}) on {device}, median of {args.rounds} rounds",
        file=table,
    )
    for name, value in median.items():
        naive = out[f"naive_batch{_batch_of(name)}"]
        print(f"  {name:<52} {value:>9,.0f} chars/s   {value / naive:6.1f}× naive at its batch", file=table)
    for name, why in skipped.items():
        print(f"  {name:<52}   skipped: {why}", file=table)
    print(f"ratio (ours eager, batch 1 / naive): {out['eager_vs_naive_batch1']:.1f}×", file=table)
    if out["graphed_batch1"]:
        print(
            f"ratio (graphed, batch 1 / naive): {out['graphed_vs_naive_batch1']:.1f}×   "
            f"(target ≥ {TARGET_GRAPHED_VS_NAIVE}×);"
            f" graphed / eager: {out['graphed_vs_eager_batch1']:.1f}×",
            file=table,
        )
        print(
            f"graphed, batch 16: {out['graphed_batch16']:,} chars/s in all   (target ≥ {TARGET_GRAPHED_BATCH16:,})",
            file=table,
        )
    print(
        f"eager, batch 16: {out['eager_batch16']:,} chars/s in all ({out['eager_batch16'] / 16:,.0f} per sample)",
        file=table,
    )
    print(json.dumps(out))


def _batch_of(name: str) -> int:
    return int(re.search(r"batch (\d+)", name).group(1))


def _weights(sampler: Sampler) -> str:
    return f"{str(sampler.engine.weight_dtype).removeprefix('torch.')} weights"


if __name__ == "__main__":
    main()
