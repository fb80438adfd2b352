"""Where `inspect-neuron --html OUT --ablate L:N` spends its time, before and after, in one run.

    .venv/bin/python bench/explorer_speed.py [--chars 30000] [--layers 2] [--hidden 16] [--rounds 3]

The page's slow parts over a text, each timed as it ran before (kept below as a reference) and as
it runs now, alternating over --rounds (best of each; this machine may be shared: trust the ratios):

- the ablation row of the surprise data: two streams (as is, ablated) scored one step at a time.
  Before: the output layer and a float64 log-softmax per step, at torch's default thread count
  (the explorer never asked for one thread). Now: `bits_with_interventions`, one thread, the
  output layer and the log-softmax once per block of steps. The bits are checked equal.
- the features the page ranks units by. Before: Pygments lexed the text once per syntax feature
  and the per-character loops set numpy elements one by one. Now: one lexing, lists. Checked equal.
- the trace's recurrence (every mode's floor: --html, --find, --top-contexts, --stats). Before:
  `lstm_pointwise` every step; now `StepEngine.trace`'s step loop (`fused=False`, the path
  interventions take) with fewer tensor operations per step. h and c are checked equal. The
  default trace without interventions is the fused one now: bench/trace_speed.py times it.
- the whole page now.

The weights are random: the work does not depend on them.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import charlstm.analysis.features as features
from charlstm.analysis.explorer import write_explorer
from charlstm.analysis.features import FEATURES, compute_feature
from charlstm.analysis.interventions import bits_with_interventions
from charlstm.analysis.neurons import Inspection
from charlstm.analysis.tracing import trace_weights
from charlstm.core.backend import torch_threads
from charlstm.core.engine import StepEngine
from charlstm.core.model import CharRNN, ModelConfig
from charlstm.core.units import ablation
from charlstm.core.vocab import Vocab

CODE = Path(__file__).resolve().parents[1].joinpath("charlstm", "explorer.py").read_text(encoding="utf-8")


@torch.no_grad()
def stepwise_bits(engine, tokens: torch.Tensor, conditions) -> np.ndarray:
    """The scoring as it was: logits, float64 log-softmax and the pick, every step."""
    rows = len(conditions)
    clamps, state = engine.clamps(conditions, per_stream=True), engine.init_state(rows)
    out = torch.empty(rows, tokens.shape[0] - 1, dtype=torch.float64)
    for t in range(tokens.shape[0] - 1):
        logits, state = engine.step(tokens[t].expand(rows), state, clamps)
        log_probs = torch.log_softmax(logits.to(torch.float64), dim=-1)
        out[:, t] = -log_probs.index_select(1, tokens[t + 1 : t + 2])[:, 0] / math.log(2.0)
    return out.numpy()


def features_before(text: str) -> list[np.ndarray]:
    """The page's features as they were computed: the lexer once per syntax feature."""
    lex = features._syntax_labels.__wrapped__  # the uncached lexing
    out = []
    for name in FEATURES:
        if name in ("string", "comment", "brackets"):
            labels = lex(text, "python")
            out.append(
                (labels == features.STRING).astype(np.float32)
                if name == "string"
                else (labels == features.COMMENT).astype(np.float32)
                if name == "comment"
                else _brackets_before(text, labels)
            )
        else:
            out.append(_layout_before(name, text))
    return out


def _layout_before(name: str, text: str) -> np.ndarray:
    from charlstm.analysis.features import DOC_SEP, advance_column

    out = np.zeros(len(text), dtype=np.float32)
    width, leading, col, run = 0, True, 0, 0
    for t, ch in enumerate(text):
        if name == "indent":
            if leading and ch in " \t":
                width = advance_column(width, ch)
            else:
                leading = False
            out[t] = width
            if ch in ("\n", DOC_SEP):
                width, leading = 0, True
        elif name == "column":
            out[t] = col
            col = 0 if ch in ("\n", DOC_SEP) else advance_column(col, ch)
        else:
            run = run + 1 if ch == " " else 0
            out[t] = run
    return out


def _brackets_before(text: str, labels: np.ndarray) -> np.ndarray:
    from charlstm.analysis.features import CLOSE, DOC_SEP, OPEN
    from charlstm.analysis.features import CODE as IN_CODE

    out = np.zeros(len(text), dtype=np.float32)
    depth = 0
    for t, ch in enumerate(text):
        if ch == DOC_SEP:
            depth = 0
        elif labels[t] == IN_CODE:
            if ch in OPEN:
                depth += 1
            elif ch in CLOSE:
                depth = max(depth - 1, 0)
        out[t] = depth
    return out


@torch.no_grad()
def trace_before(engine, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h and c [layers, T, hidden] as the trace computed them before: `lstm_pointwise` every step."""
    from charlstm.core.engine import lstm_pointwise

    x_seq, hs, cs = engine.embedding[tokens], [], []
    for k, w in enumerate(engine.weights):
        h = c = torch.zeros(engine.hidden, dtype=engine.dtype)
        add, pre, rows = engine._recurrent_adder(k), torch.addmm(w.b_sum, x_seq, w.w_ih_t), []
        for t in range(tokens.shape[0]):
            h, c, _ = lstm_pointwise(add(pre[t], h), c)
            rows.append((h, c))
        hs.append(torch.stack([r[0] for r in rows]).float())
        cs.append(torch.stack([r[1] for r in rows]).float())
        x_seq = hs[-1].to(engine.dtype)
    return torch.stack(hs), torch.stack(cs)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=30_000)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    text = (CODE * (args.chars // len(CODE) + 1))[: args.chars]
    vocab = Vocab.from_counts({ch: 1 for ch in text})
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), layers=args.layers, hidden=args.hidden)).eval()
    engine = StepEngine(model, torch.float32)
    tokens = torch.from_numpy(np.concatenate([[vocab.doc_sep], vocab.encode(text)]))
    conditions = [[], [ablation("lstm", 1, 3)]]
    default_threads = torch.get_num_threads()

    tracer = StepEngine(model, trace_weights(model))
    names = ("score", "features", "trace loop")
    times: dict[str, list[float]] = {f"{n} {when}": [] for n in names for when in ("before", "now")}
    for _ in range(args.rounds):
        seconds, before = timed(lambda: stepwise_bits(engine, tokens, conditions))  # default threads, as it ran
        times["score before"].append(seconds)
        with torch_threads(1):
            seconds, now = timed(lambda: bits_with_interventions(engine, tokens, conditions))
        times["score now"].append(seconds)
        # Within float32 rounding, not bit for bit: a block of steps and one step at a time are
        # differently blocked products, which some CPUs' BLAS round differently.
        np.testing.assert_allclose(now, before, rtol=1e-5, atol=1e-5, err_msg="the blocked scoring changed the bits")
        seconds, f_before = timed(lambda: features_before(text))
        times["features before"].append(seconds)
        features._syntax_labels.cache_clear()
        seconds, f_now = timed(lambda: [compute_feature(name, text, "python") for name in FEATURES])
        times["features now"].append(seconds)
        assert all(np.array_equal(a, b) for a, b in zip(f_before, f_now, strict=True)), "the features must not change"
        with torch_threads(1):
            seconds, (h, c) = timed(lambda: trace_before(tracer, tokens[1:]))
            times["trace loop before"].append(seconds)
            seconds, trace = timed(
                lambda: tracer.trace(tokens[1:], fused=False)
            )  # the step loop (bench/trace_speed.py: fused)
            times["trace loop now"].append(seconds)
        assert torch.equal(h, trace["hidden"]) and torch.equal(c, trace["cell"]), "the trace must not change"
    inspection = Inspection(path=Path("bench"), payload={"dataset": {"language": "python"}}, model=model, vocab=vocab)
    features._syntax_labels.cache_clear()  # the page lexes its text itself
    with tempfile.TemporaryDirectory() as tmp:
        page, _ = timed(lambda: write_explorer(Path(tmp) / "page.html", inspection, text, "bench", ablate=[(1, 3)]))

    best = {name: min(values) for name, values in times.items()}
    print(f"LSTM {args.layers}×{args.hidden}, {args.chars:,} characters, torch default threads {default_threads}")
    for name, values in times.items():
        print(f"  {name:18s} {best[name]:7.2f} s  (rounds {', '.join(f'{v:.2f}' for v in values)})")
    print(
        f"ablation scoring: {best['score before'] / best['score now']:.1f}× faster, same bits within float32 rounding"
    )
    print(f"features:         {best['features before'] / best['features now']:.1f}× faster, same values")
    print(
        f"trace loop ({tracer.weight_dtype} weights): "
        f"{best['trace loop before'] / best['trace loop now']:.2f}× faster, same h and c"
    )
    saved = sum(best[f"{n} before"] - best[f"{n} now"] for n in names)
    print(
        f"whole page now (--html --ablate): {page:.2f} s; "
        f"before, adding back what these parts saved: ~{page + saved:.2f} s"
    )


if __name__ == "__main__":
    main()
