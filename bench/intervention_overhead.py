"""What interventions cost the step engine: `trace` and `step` without any, with one clamp, and
(with --baseline) another version's engine without any, alternating in one process.

    .venv/bin/python bench/intervention_overhead.py [--chars 2000] [--steps 300] [--rounds 5] \\
        [--baseline OTHER_CHECKOUT/charlstm/core/engine.py]

Model: a 3×512 LSTM with random weights (the work does not depend on them), one thread, as
inspection and sampling run. Reports the best of --rounds for each variant and the ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from charlstm.core import engine as ours  # noqa: E402
from charlstm.core.model import CharRNN, ModelConfig  # noqa: E402
from charlstm.core.units import Intervention  # noqa: E402


def load_engine_module(path: str):
    spec = importlib.util.spec_from_file_location("baseline_engine", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, default=2000, help="characters traced per round")
    parser.add_argument("--steps", type=int, default=300, help="batch-1 steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="another checkout's charlstm/core/engine.py, timed without interventions")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=100, layers=3, hidden=512)).eval()
    tokens = torch.randint(0, 100, (args.chars,))
    clamp = [Intervention(2, 17, "cell", 3.0)]

    for dtype in (torch.float16, torch.float32):
        engine = ours.StepEngine(model, dtype)
        variants = {"none": (engine, None), "one clamp": (engine, engine.clamps(clamp))}
        if args.baseline:
            variants["baseline, none"] = (load_engine_module(args.baseline).StepEngine(model, dtype), None)
        trace_times = {name: [] for name in variants}
        step_times = {name: [] for name in variants}
        token = torch.tensor([3])
        for _ in range(args.rounds):
            for name, (e, clamps) in variants.items():
                extra = {} if clamps is None else {"clamps": clamps}
                start = time.perf_counter()
                e.trace(tokens, **extra)
                trace_times[name].append(time.perf_counter() - start)
                state = e.init_state(1)
                start = time.perf_counter()
                with torch.inference_mode():
                    for _ in range(args.steps):
                        _, state = e.step(token, state, **extra)
                step_times[name].append(time.perf_counter() - start)
        weights = str(engine.weight_dtype).removeprefix("torch.")
        for what, times, count in (("trace", trace_times, args.chars), ("step", step_times, args.steps)):
            best = {name: min(t) for name, t in times.items()}
            line = ", ".join(f"{name} {count / s:,.0f} chars/s" for name, s in best.items())
            ratios = f"one clamp / none {best['one clamp'] / best['none']:.3f}"
            if "baseline, none" in best:
                ratios += f", none / baseline {best['none'] / best['baseline, none']:.3f}"
            print(f"{what:5} ({weights} weights): {line}  [time ratios: {ratios}]")


if __name__ == "__main__":
    main()
