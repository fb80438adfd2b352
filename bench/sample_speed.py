"""Sampling speed: charlstm's sampling loop against the naive nn.LSTM loop, in the same run.

    .venv/bin/python bench/sample_speed.py [--device cpu|cuda] [--rounds 3] [--seconds 4]

Model: a 3×512 LSTM, embedding 64, vocabulary 100 (random weights: speed does not depend on
training). Both loops sample the next character at temperature 0.8, so the figures are end to
end. The naive loop calls the `nn.LSTM` module one character at a time with its state, as a
first attempt would; ours is `Sampler.generate` (one engine step per character) with its default
weights (`--precision auto`: int8 on a CPU with FBGEMM), and with fp16 and fp32 weights for
comparison. Variants are measured in interleaved rounds and the median kept, since the machine is
shared. The naive loop is timed at one thread and at all threads, and the ratio is taken against
the faster of the two.
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

from charlstm.model import CharRNN, ModelConfig  # noqa: E402
from charlstm.sample import Sampler, SampleSettings  # noqa: E402
from charlstm.vocab import SPECIALS, Vocab  # noqa: E402

VOCAB = Vocab([*SPECIALS, *(chr(c) for c in range(32, 32 + 98))])


def naive_chars_per_sec(model: CharRNN, device: torch.device, seconds: float, generator: torch.Generator) -> float:
    token = torch.zeros(1, 1, dtype=torch.long, device=device)
    state, chars, start = None, 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - start < seconds:
            logits, state = model(token, state)
            probs = torch.softmax(logits[0, -1] / 0.8, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).view(1, 1)
            VOCAB.symbols[token.item()]
            chars += 1
    return chars / (time.perf_counter() - start)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--seconds", type=float, default=4.0, help="time per variant per round")
    args = parser.parse_args()
    device = torch.device(args.device)
    cores = torch.get_num_threads()

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(VOCAB), layers=3, hidden=512, embed=64)).to(device).eval()
    default = Sampler(model, VOCAB, device, precision="auto")
    others = [Sampler(model, VOCAB, device, precision=p) for p in ("fp16", "fp32")]
    generator = torch.Generator(device=device).manual_seed(0)
    cpu = device.type == "cpu"

    thread_counts = [1, cores] if cpu and cores > 1 else [1]
    label = (lambda n: f", {n} thread{'s' if n > 1 else ''}") if cpu else (lambda n: "")
    s = args.seconds
    variants = {}
    for n in thread_counts:
        variants[f"naive nn.LSTM loop{label(n)}"] = lambda n=n: with_threads(n, naive_chars_per_sec, model, device, s, generator)
    variants[f"ours default ({_weights(default)}), batch 1{label(1)}"] = lambda: with_threads(1, ours_chars_per_sec, default, 1, s, 0)
    for other in others:
        if other.engine.weight_dtype != default.engine.weight_dtype:
            variants[f"ours {_weights(other)}, batch 1{label(1)}"] = lambda o=other: with_threads(1, ours_chars_per_sec, o, 1, s, 0)
    for n in thread_counts:
        variants[f"ours default, batch 16{label(n)}"] = lambda n=n: with_threads(n, ours_chars_per_sec, default, 16, s, 0)

    results: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, run in variants.items():
            results[name].append(run())
            print(f"round {r + 1}: {name:<52} {results[name][-1]:>9,.0f} chars/s", file=sys.stderr, flush=True)
    median = {name: statistics.median(values) for name, values in results.items()}

    naive = max(v for k, v in median.items() if k.startswith("naive"))
    # The headline: the default precision (`--precision auto`).
    ours_1 = next(v for k, v in median.items() if k.startswith("ours default ("))
    ours_16 = max(v for k, v in median.items() if "batch 16" in k)
    print(f"\nsampling speed, 3×512 LSTM (embed 64, vocab {len(VOCAB)}) on {device}, median of {args.rounds} rounds")
    for name, value in median.items():
        print(f"  {name:<52} {value:>9,.0f} chars/s   {value / naive:6.1f}× naive")
    print(f"ratio (ours, batch 1 / naive): {ours_1 / naive:.1f}×   (target ≥ 8×)")
    print(f"batched: 16 samples at once give {ours_16:,.0f} chars/s in all ({ours_16 / 16:,.0f} per sample)")
    print(json.dumps({"device": str(device), "naive": round(naive), "ours_batch1": round(ours_1), "ratio": round(ours_1 / naive, 2), "ours_batch16": round(ours_16)}))


def _weights(sampler: Sampler) -> str:
    return f"{str(sampler.engine.weight_dtype).removeprefix('torch.')} weights"


if __name__ == "__main__":
    main()
