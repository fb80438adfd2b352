"""Lexically constrained drawing against plain drawing, batch 1 on the CPU, in the same run.

    .venv/bin/python bench/constrain_speed.py [--model python] [--rounds 5] [--length 3000]

Both sides are `Sampler.generate` on the shipped model with its default weights, one thread, at
temperature 0.7 from the same prime and seed; --constrain adds the lexer's update and the mask row
per character. Rounds are interleaved and the median kept (the machine may be shared). The ratio
is characters per second drawn (constrained / plain); the target is >= 0.9. --valid is timed once
too: characters accepted per second and seconds per accepted unit (rollbacks included).
The ratio reported is the median over rounds of each round's ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from charlstm.core.checkpoint import resolve_model  # noqa: E402
from charlstm.evaluation.syntax_eval import default_prime  # noqa: E402
from charlstm.sampling.sample import Sampler, SampleSettings  # noqa: E402

TARGET_RATIO = 0.9


def chars_per_sec(sampler: Sampler, settings: SampleSettings) -> float:
    steps, start = 0, time.perf_counter()
    for _ in sampler.generate(settings):
        steps += 1
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="python")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--length", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sampler, _ = Sampler.from_checkpoint(resolve_model(args.model), precision="auto")
    prime = default_prime(sampler.language)
    rates: dict[str, list[float]] = {"plain": [], "constrain": []}
    for round_ in range(args.rounds):
        for mode in rates:
            settings = SampleSettings(
                length=args.length, temperature=0.7, prime=prime, seed=round_, constrain=mode == "constrain"
            )
            rates[mode].append(chars_per_sec(sampler, settings))
    median = {mode: statistics.median(values) for mode, values in rates.items()}
    # Each round's two runs follow each other, so their ratio sees the same load: its median is
    # steadier on a shared machine than the ratio of the two sides' medians.
    ratio = statistics.median(c / p for c, p in zip(rates["constrain"], rates["plain"], strict=True))
    began = time.perf_counter()
    text = sampler.sample_texts(SampleSettings(length=args.length, temperature=0.7, prime=prime, seed=0, valid=True))[0]
    seconds, stats = time.perf_counter() - began, sampler.last_stats
    result = {
        "model": args.model,
        "weights": str(sampler.engine.weight_dtype),
        "length": args.length,
        "plain_chars_per_sec": round(median["plain"]),
        "constrain_chars_per_sec": round(median["constrain"]),
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "rounds": {k: [round(v) for v in vs] for k, vs in rates.items()},
        "valid_accepted_chars_per_sec": round((len(text) - len(prime)) / seconds),
        "valid_seconds_per_unit": round(seconds / max(1, len(stats.tries)), 3),
        "valid_draws_per_unit": round(statistics.mean(stats.tries), 2) if stats.tries else None,
        "valid_lines_redrawn": stats.lines_redrawn,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{args.model} model, {result['weights']} weights, batch 1, one thread, {args.length:,} characters, "
        f"median of {args.rounds} interleaved rounds"
    )
    print(f"  plain      {median['plain']:8,.0f} chars/s  (rounds {', '.join(f'{v:,.0f}' for v in rates['plain'])})")
    print(
        f"  constrain  {median['constrain']:8,.0f} chars/s  "
        f"(rounds {', '.join(f'{v:,.0f}' for v in rates['constrain'])})"
    )
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"  ratio {ratio:.2f}, the median of the rounds' ratios ({verdict} the target {TARGET_RATIO})")
    print(
        f"  --valid: {result['valid_accepted_chars_per_sec']:,} accepted chars/s, {result['valid_seconds_per_unit']} s "
        f"per accepted unit, {result['valid_draws_per_unit']} draws per unit, {stats.lines_redrawn} lines drawn again"
    )


if __name__ == "__main__":
    main()
