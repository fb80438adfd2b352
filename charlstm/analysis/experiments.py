"""The article's four small studies: generate a synthetic language, train a tiny LSTM on it,
judge its greedy generations, and find the single units that solve the task.

Each study is one call to `run_study`, whose training reports its progress as events (events.py);
experiment_command.py draws the bar and prints the tables and coloured neurons. Generations and
units come from `StepEngine` (the same step math sampling and inspection use), and each trained
model is saved as an ordinary checkpoint so `charlstm inspect-neuron` can open it. The studies'
definitions and their unit finders are in studies.py.
Layers are numbered from 1, as in the article's explorer and in `inspect-neuron`.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.backend import cpu_threads, torch_threads
from ..core.checkpoint import BEST, save_checkpoint
from ..core.config import MAX_SEED
from ..core.engine import StepEngine
from ..core.errors import CharlstmError
from ..core.events import Listener, Progress, ignore
from ..core.files import atomic_write
from ..core.model import CharRNN, ModelConfig
from ..core.userio import ensure_writable_folder
from . import synthetic as syn
from .studies import FINDERS, NAMES, STUDIES, Study, _corr  # noqa: F401 (NAMES, _corr: used through this module)

PAD_TARGET = -100  # cross_entropy's ignore_index: padded positions carry no loss


# ----- training ----------------------------------------------------------------------------------


def _batch(vocab, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Framed examples → inputs and next-character targets, padded, the padding ignored by the loss."""
    seqs = [torch.from_numpy(vocab.encode(t)) for t in texts]
    width = max(len(s) for s in seqs) - 1
    x = torch.full((len(seqs), width), vocab.doc_sep, dtype=torch.long)
    y = torch.full((len(seqs), width), PAD_TARGET, dtype=torch.long)
    for row, s in enumerate(seqs):
        x[row, : len(s) - 1] = s[:-1]
        y[row, : len(s) - 1] = s[1:]
    return x, y


def train(
    study: Study, seed: int, device: torch.device = torch.device("cpu"), on_event: Listener = ignore
) -> tuple[CharRNN, dict]:
    """Train a fresh model on an endless stream of seeded random examples; one example a row.
    `on_event` hears each step's progress (events.Progress) and the loss every 100 steps."""
    vocab = syn.vocab()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    # Built on the CPU, then moved: the same seed starts from the same weights on every device.
    model = CharRNN(ModelConfig(len(vocab), "lstm", study.layers, study.hidden, study.embed)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=study.lr)
    generate = syn.GENERATORS[study.name]
    started = time.perf_counter()
    losses: list[float] = []
    task, stats = f"training {study.name}", {}
    on_event(Progress(task, 0, study.steps))
    # Not the Trainer's loop: its lanes carry one state through a corpus; here every batch is fresh padded examples.
    for step in range(study.steps):
        longest = study.max_n
        if study.curriculum > 0:
            longest = min(study.max_n, 2 + int((study.max_n - 1) * step / (study.curriculum * study.steps)))
        x, y = (t.to(device) for t in _batch(vocab, [syn.frame(generate(rng, longest)) for _ in range(study.batch)]))
        # Cosine decay to zero: a tiny model settles on exact counts instead of hovering near them.
        for group in optimizer.param_groups:
            group["lr"] = study.lr * 0.5 * (1 + math.cos(math.pi * step / study.steps))
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1), ignore_index=PAD_TARGET)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == study.steps - 1:
            losses.append(loss.item())
            stats = {"loss": f"{losses[-1]:.3f}"}
        on_event(Progress(task, step + 1, study.steps, "step", stats))
    on_event(Progress(task, study.steps, study.steps, "step", stats, finished=True))
    stats = {"train_seconds": round(time.perf_counter() - started, 2), "final_loss": round(losses[-1], 4)}
    return model.eval(), stats


# ----- evaluation: greedy generation, judged by the pure functions in synthetic -----------------


@torch.no_grad()
def greedy(engine: StepEngine, vocab, prompt: str, max_chars: int) -> str:
    """Feed `prompt`, then take the most likely character until END or `max_chars`."""
    # Not Sampler.generate: it starts each sample with the document separator, which these models never read.
    state = engine.init_state(1)
    for token in vocab.encode(prompt):
        logits, state = engine.step(torch.tensor([int(token)], device=engine.device), state)
    out = []
    for _ in range(max_chars):
        token = int(logits.argmax())
        out.append(vocab.symbols[token])
        if out[-1] == syn.END:
            break
        logits, state = engine.step(torch.tensor([token], device=engine.device), state)
    return "".join(out)


def eval_prompts(study: Study, seed: int) -> dict[int, list[str]]:
    """Prompts judged for each N: every possible one where few exist, else seeded random ones."""
    rng = random.Random(seed + 1)  # a stream apart from the training data's
    prompts: dict[int, list[str]] = {}
    for n in range(1, study.eval_max_n + 1):
        if study.name == "counter":
            bodies = [syn.counter_example(rng, n=n)]
        elif study.name == "state":
            bodies = [syn.state_example(rng, n=n, first=first) for first in "AB"]
        else:
            bodies = [syn.GENERATORS[study.name](rng, n=n) for _ in range(study.prompts_per_n)]
        prompts[n] = [syn.split_prompt(study.name, b)[0] for b in bodies]
    return prompts


def evaluate(study: Study, model: CharRNN, seed: int) -> dict:
    vocab, engine = syn.vocab(), StepEngine(model)
    per_n: dict[int, float] = {}
    failures: list[dict] = []
    for n, prompts in eval_prompts(study, seed).items():
        right = 0
        for prompt in prompts:
            expected = syn.EXPECTED[study.name](prompt)
            generated = greedy(engine, vocab, prompt, len(expected) + 5)
            if syn.is_correct(study.name, prompt, generated):
                right += 1
            elif len(failures) < 5:
                failures.append({"prompt": prompt, "generated": generated, "expected": expected})
        per_n[n] = right / len(prompts)
    trained = [per_n[n] for n in per_n if n <= study.max_n]
    result = {
        "accuracy": round(sum(trained) / len(trained), 4),  # over the training range of N
        # The counter has one prompt per N: right or wrong. The others: the fraction right.
        "per_n": {str(n): (acc == 1.0 if study.name == "counter" else round(acc, 4)) for n, acc in per_n.items()},
        "failures": failures,
    }
    if study.name == "counter":
        result["max_n_correct"] = syn.max_n_correct({n: acc == 1.0 for n, acc in per_n.items()})
    return result


# ----- one study end to end ---------------------------------------------------------------------


def summary_line(result: dict) -> str:
    """Our result in words, for the table beside the article's claim."""
    name, ev, found = result["study"], result["evaluation"], result["neurons"]
    if name == "counter":
        m, top = ev["max_n_correct"], max(int(n) for n in ev["per_n"])
        reach = f"counts to {m}, fails at {m + 1}" if m < top else f"correct for every N up to {top} (largest tried)"
        u = found["counting_unit"]
        return f"{reach}; cell L{u['layer']} #{u['neuron']} counts (r = {u['r_with_count']:+.2f})"
    if name == "selective-counter":
        u = found["counting_unit"]
        return (
            f"{ev['accuracy']:.0%} right for N ≤ {result['max_n']}; cell L{u['layer']} #{u['neuron']} counts "
            f"(r = {u['r_with_count']:+.2f}); its input gate {found['input_gate_on_X']:.2f} on X, "
            f"{found['input_gate_on_a']:.2f} on a"
        )
    if name == "state":
        a, b = found["A_neuron"], found["B_neuron"]
        return (
            f"{ev['accuracy']:.0%} right for ≤ {result['max_n']} x's; A neuron L{a['layer']} #{a['neuron']} "
            f"(r {a['r_with_A']:+.2f}), B neuron L{b['layer']} #{b['neuron']} (r {b['r_with_A']:+.2f})"
        )
    per_layer = found["units_next_over_current"]
    counts = ", ".join(f"{n}/{found['units_per_layer']} in L{k + 1}" for k, n in enumerate(per_layer))
    best_per_layer = {}
    for u in found["next_char_units"]:  # listed best first within each layer
        best_per_layer.setdefault(u["layer"], u)
    best = "".join(
        f"; L{u['layer']} #{u['neuron']} follows '{u['next_char']}' next (|r| {u['best_abs_r_next']:.2f} "
        f"vs {u['best_abs_r_current']:.2f} current)"
        for u in best_per_layer.values()
    )
    return (
        f"{ev['accuracy']:.0%} exact copies for length ≤ {result['max_n']}; units following the next char "
        f"more than the current: {counts}{best}"
    )


# Judging every N up to eval_max_n takes time that grows with its square (copy, untrained: 7 s
# for 100 on 2 CPU cores, so about ten minutes for this bound).
MAX_N = 1000
# The copy study's units are judged where a copied character is followed by another one.
MIN_MAX_N = {"copy": 2}


def configured_study(
    name: str, seed: int = 0, steps: int | None = None, max_n: int | None = None, eval_max_n: int | None = None
) -> Study:
    """The study with the user's overrides, checked: nonsense fails here, before any training."""
    if name not in STUDIES:
        raise CharlstmError(f"unknown experiment {name!r}; choose one of {', '.join(NAMES)} or all")
    if not 0 <= seed <= MAX_SEED:
        raise CharlstmError(f"--seed must be between 0 and {MAX_SEED}, got {seed}")
    overrides = {k: v for k, v in (("steps", steps), ("max_n", max_n), ("eval_max_n", eval_max_n)) if v is not None}
    for key, value in overrides.items():
        low = MIN_MAX_N.get(name, 1) if key == "max_n" else 1
        if value < low:
            study = f" for the {name} study" if low > 1 else ""
            raise CharlstmError(f"--{key.replace('_', '-')} must be at least {low}{study}, got {value}")
        if key != "steps" and value > MAX_N:
            raise CharlstmError(f"--{key.replace('_', '-')} must be at most {MAX_N}, got {value}")
    study = replace(STUDIES[name], **overrides)
    if study.eval_max_n < study.max_n:
        if eval_max_n is not None:  # the accuracy is over every N trained on: each must be judged
            limit = "--max-n" if max_n is not None else "the default --max-n"
            raise CharlstmError(
                f"--eval-max-n {eval_max_n} is below {limit} {study.max_n}: every N the model "
                f"trained on is judged, so give {study.max_n} or more"
            )
        study = replace(study, eval_max_n=study.max_n)  # the study's own, raised to the training range
    return study


def run_study(
    name: str,
    seed: int = 0,
    out_dir: Path | str = Path("checkpoints"),
    steps: int | None = None,
    max_n: int | None = None,
    eval_max_n: int | None = None,
    device: torch.device = torch.device("cpu"),
    on_event: Listener | None = None,
) -> dict:
    """Train, evaluate, find the units, save the run; return a JSON-ready result. `on_event` hears
    the training's progress (events.py)."""
    study = configured_study(name, seed, steps, max_n, eval_max_n)
    ensure_writable_folder(out_dir)  # fail now, not after a minute of training
    vocab = syn.vocab()
    # Tiny models run fastest on one CPU thread, and a fixed count keeps results repeatable.
    with torch_threads(cpu_threads(device, 1)):
        model, stats = train(study, seed, device, on_event or ignore)
        evaluation = evaluate(study, model, seed)
        neurons, views = FINDERS[name](study, StepEngine(model), vocab, seed)
    run_dir = Path(out_dir) / f"experiment-{name}"
    result = {
        "study": name,
        "seed": seed,
        "model": {"kind": "lstm", "layers": study.layers, "hidden": study.hidden},
        "device": device.type,
        "steps": study.steps,
        "max_n": study.max_n,
        **stats,
        "evaluation": evaluation,
        "neurons": neurons,
        "article": study.article,
        "run": str(run_dir),
        "views": views,
    }
    result["ours"] = summary_line(result)
    save_checkpoint(
        run_dir / BEST,
        {
            "model_config": model.config.to_dict(),
            "vocab": vocab.symbols,
            "model": {k: v.cpu() for k, v in model.state_dict().items()},  # a file free of the device
            "dataset": {"name": f"experiment-{name}", "path": None, "content_hash": None, "language": None},
            "step": study.steps,
            "experiment": {**asdict(study), "seed": seed},
        },
    )
    atomic_write(run_dir / "results.json", lambda f: f.write(json.dumps(result, indent=2).encode() + b"\n"))
    return result


def write_html(result: dict, out: Path | str, device: torch.device = torch.device("cpu")) -> dict:
    """The inspection explorer page for a study's run, over its example sequence, opened on the
    first unit found."""
    from .explorer import write_explorer
    from .neurons import open_checkpoint

    view = result["views"][0]
    inspection = open_checkpoint(result["run"], device=device)
    return write_explorer(
        out,
        inspection,
        view["text"],
        f"experiment {result['study']}",
        layer=view["layer"],
        neuron=view["neuron"],
        signal=view["signal"],
    )
