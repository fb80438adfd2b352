"""Does clamping a unit change how deeply the model indents? Seeded samples with the unit held at
each value (and without), and the indentation of their non-blank lines.

    python scripts/clamp_indentation.py 1:59 -1.5 3.5 [--samples 8] [--length 1000] [--seed 1]

Each variant draws the same noise (same seed), so the samples differ only through the clamp.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from charlstm.analysis.interventions import parse_interventions
from charlstm.sampling.sample import Sampler, SampleSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("unit", help="L:N or L:N:cell|hidden, as sample --clamp takes it")
    parser.add_argument("values", nargs="+", type=float)
    parser.add_argument("--checkpoint", default=None, help="default: as charlstm sample picks it")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sampler, _ = Sampler.from_checkpoint(args.checkpoint)
    print(f"{'clamp':>18}  lines  median indent  most common  indented ≥ 8  not indented")
    for value in [None, *args.values]:
        clamps = parse_interventions([f"{args.unit}={value}"]) if value is not None else ()
        settings = SampleSettings(
            length=args.length,
            prime="\n",
            seed=args.seed,
            temperature=args.temperature,
            num_samples=args.samples,
            interventions=clamps,
        )
        widths = np.array(
            [
                len(line) - len(line.lstrip(" "))
                for text in sampler.sample_texts(settings)
                for line in text.split("\n")
                if line.strip()
            ]
        )
        name = "none" if value is None else f"{args.unit}={value:g}"
        common = np.bincount(widths).argmax()
        print(
            f"{name:>18}  {len(widths):5d}  {np.median(widths):13g}  {common:11d}  {(widths >= 8).mean():12.0%}  "
            f"{(widths == 0).mean():12.0%}"
        )


if __name__ == "__main__":
    main()
