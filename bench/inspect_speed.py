"""How fast neuron inspection traces a 3×512 LSTM: every signal of every unit over 10,000 characters.

    .venv/bin/python bench/inspect_speed.py [--chars 10000] [--layers 3] [--hidden 512] [--compare-threads]

Prints the trace time (`neurons.activations`, single-threaded, the fused float32 trace) over
--rounds (best of them: this machine is shared and noisy), the time to rank all units against one
feature, and characters per second; then --find as the command runs it (the trace a chunk at a time,
correlations accumulated per chunk, no whole-text activations kept) beside the whole trace + rank;
with --compare-threads also torch's default thread count. The weights are random: the work does not
depend on them. bench/trace_speed.py compares the trace with the old per-step one.
"""

from __future__ import annotations

import argparse
import time

import torch

from charlstm.analysis.features import compute_feature
from charlstm.analysis.neurons import FeatureCorrelation, rank_units
from charlstm.analysis.tracing import activations, chunk_chars, trace_chunks
from charlstm.core.model import CharRNN, ModelConfig
from charlstm.core.vocab import Vocab

CODE = """    public static String abbreviate(final String str, final int maxWidth) {
        if (str == null || maxWidth < 4) { // too short to shorten
            return str;
        }
        return str.substring(0, maxWidth - 3) + "...";
    }
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=10_000)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-threads", action="store_true", help="also time torch's default thread count")
    args = parser.parse_args()
    text = (CODE * (args.chars // len(CODE) + 1))[: args.chars]
    vocab = Vocab.from_counts({ch: 1 for ch in text})
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), layers=args.layers, hidden=args.hidden)).eval()
    activations(model, vocab, text[:200])  # warm up

    timings = {"default (fused, fp32)": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        acts = activations(model, vocab, text)
        timings["default (fused, fp32)"].append(time.perf_counter() - start)
    start = time.perf_counter()
    feature = compute_feature("indent", text, "java")
    rank_units(acts, feature, top=10)
    ranked = time.perf_counter() - start
    start = time.perf_counter()
    stats = FeatureCorrelation(feature)
    for begin, chunk in trace_chunks(model, vocab, text):
        stats.add(begin, chunk)
    streamed = time.perf_counter() - start
    default_threads = None
    if args.compare_threads:
        start = time.perf_counter()
        activations(model, vocab, text, threads=None)
        default_threads = time.perf_counter() - start

    values = sum(v.size for v in acts.values())
    print(f"LSTM {args.layers}×{args.hidden}, {args.chars:,} characters, {len(acts)} signals ({values:,} values)")
    best = {name: min(times) for name, times in timings.items()}
    for name, seconds in best.items():
        print(
            f"trace, 1 thread, {name}: {seconds:6.2f} s  ({args.chars / seconds:,.0f} chars/s; "
            f"rounds {', '.join(f'{t:.2f}' for t in timings[name])})"
        )
    (fast,) = best.values()
    if default_threads is not None:
        print(
            f"trace, {torch.get_num_threads()} threads (default): {default_threads:6.2f} s  "
            f"(1 thread is {default_threads / fast:.2f}× faster)"
        )
    print(f"feature + rank all units: {ranked:6.2f} s")
    print(f"total (default trace + rank): {fast + ranked:6.2f} s")
    print(
        f"streamed, {chunk_chars(model):,}-character chunks (as --find runs): {streamed:6.2f} s, keeping "
        f"{sum(a.nbytes for d in (stats.mean, stats.m2, stats.co) for a in d.values()) / 1e6:.1f} MB "
        f"of statistics instead of {values * 4 / 1e6:,.0f} MB of activations"
    )


if __name__ == "__main__":
    main()
