"""The learning-rate schedule: linear warm-up, the peak held, then cosine decay to a floor over
the run's last `decay_fraction` (warm-up, stable, decay).

`lr_at` is a pure function of the step and the schedule's fixed numbers (warmup, total,
from_step, from_ratio), which a checkpoint saves as a dict; the other functions decide those
numbers for a new run, a resumed one, and a --minutes run once its decay begins.

Why the peak is held: a run of minutes on a CPU is a few hundred steps, far from converged, and
every step spent at a decayed rate is lost progress; the decay pays only at the end, where it
settles the weights (bench/time_to_quality.py measures both; docs/performance.md, "Time to quality").
"""

from __future__ import annotations

import math

from ..core.config import TrainConfig
from ..core.errors import CharlstmError


def lr_at(
    step: int,
    peak: float,
    warmup: int,
    total: int | None,
    min_ratio: float,
    from_step: int | None = None,
    from_ratio: float = 1.0,
) -> float:
    """The learning rate of the update after `step` earlier updates, a pure function of the step.

    Linear warm-up to `peak`, held at peak × from_ratio until `from_step` (default: the end of
    warm-up), then cosine decay to peak × min_ratio at `total`; constant while `total` is unknown.
    A resumed run with a new budget starts a new segment where the old one stood, so the rate never jumps.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    start = warmup if from_step is None else max(from_step, warmup)
    if total is None or total <= start or step <= start:  # length unknown, or before the decay: held
        return peak * from_ratio
    progress = min(1.0, (step - start) / (total - start))
    return peak * (min_ratio + (from_ratio - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def planned_total(steps: int | None, epochs: float | None, windows_per_epoch: int) -> int | None:
    """Total steps when the budget fixes it (--steps, or --epochs × windows per epoch)."""
    totals = []
    if steps is not None:
        totals.append(steps)
    if epochs is not None:
        n = epochs * windows_per_epoch
        if math.isfinite(n):  # --epochs 1e308: more steps than a float holds, so no bound at all
            totals.append(max(1, math.ceil(n)))
    return min(totals) if totals else None


def decay_start(warmup: int, total: int, decay_fraction: float) -> int:
    """The step a run of known length starts to decay at: its last `decay_fraction`, after warm-up."""
    return max(warmup, total - math.ceil(decay_fraction * total))


def new_schedule(warmup_steps: int, total: int | None, decay_fraction: float = 1.0) -> dict:
    """A new run's fixed numbers: warm-up is at most a twentieth of a known length (a tenth cost a
    110-step run 0.16 bpc), and the decay is its last `decay_fraction` (1: all of it after warm-up).
    Unknown length (--minutes): held until the time left says when (`minutes_decay`)."""
    warmup = min(warmup_steps, total // 20) if total else warmup_steps
    from_step = decay_start(warmup, total, decay_fraction) if total else None
    return {"warmup": warmup, "total": total, "from_step": from_step, "from_ratio": 1.0}


def resumed_schedule(schedule: dict, payload: dict, config: TrainConfig, step: int) -> dict:
    """The schedule's fixed numbers for a run resumed at `step` from `payload`: the saved ones when
    the budget is unchanged, else a new cosine segment from the rate the run had reached. A budget
    that ends at `step` or before is refused (check_budget_left)."""
    saved = payload.get("schedule") or {}
    old_budget = {k: (payload.get("train_config") or {}).get(k) for k in ("steps", "epochs", "minutes")}
    new_budget = {k: getattr(config, k) for k in old_budget}
    if new_budget == old_budget and config.minutes is None:
        schedule = {**schedule, **saved}  # the same run goes on: the same schedule
        check_budget_left(schedule, config, step)
        return schedule
    # A new budget (--minutes always is one: it counts this invocation): hold the rate the run
    # had reached, then decay over the new budget's last decay_fraction (--minutes: once the time
    # left says so).
    schedule = dict(schedule)
    old = {**schedule, **saved}
    rate = lr_at(step, 1.0, old["warmup"], old["total"], config.min_lr_ratio, old["from_step"], old["from_ratio"])
    schedule["warmup"] = old["warmup"]
    if step >= old["warmup"]:
        total = schedule["total"]
        start = max(step, decay_start(old["warmup"], total, config.decay_fraction)) if total else step
        schedule["from_step"], schedule["from_ratio"] = start, rate
    elif schedule["total"]:
        schedule["from_step"] = decay_start(old["warmup"], schedule["total"], config.decay_fraction)
    check_budget_left(schedule, config, step)
    return schedule


def check_budget_left(schedule: dict, config: TrainConfig, step: int) -> None:
    """A resumed run already at the step its budget ends at (or past it) has nothing to train: say
    so, rather than report it done and save the same checkpoint again."""
    total = schedule.get("total")
    if total is None or step < total:
        return
    budget = " and ".join(
        f"--{k} {getattr(config, k):g}" for k in ("steps", "epochs") if getattr(config, k) is not None
    )
    if config.steps != total:
        budget += f", which ends at step {total:,}"
    raise CharlstmError(
        f"nothing to train: the run is already at step {step:,} and its budget ({budget}) is spent; "
        f"--steps and --epochs count from the run's start, so give a larger one (or --minutes) to go on"
    )


def minutes_decay(schedule: dict, step: int, seconds_per_step: float, seconds_left: float) -> dict:
    """--minutes alone, once the time left is the run's last decay_fraction: decay from here over
    the steps the time left allows at `seconds_per_step` (measured over the run so far, past its
    first steps), from the rate held until now."""
    start = max(step, schedule["warmup"])  # the rate held until now is peak × from_ratio: it stays the start
    total = max(step + int(seconds_left / seconds_per_step), start + 1)  # decays over at least one step
    return {**schedule, "total": total, "from_step": start}


def describe(schedule: dict, config: TrainConfig) -> str:
    """The run header's line on the learning rate: what a reader needs to reproduce its shape."""
    warm = (
        f"warm-up {schedule['warmup']} step(s) to {config.lr:g}"
        if schedule["warmup"]
        else f"{config.lr:g} from the first step"
    )
    held = f"{warm}, held, then cosine decay to {config.lr * config.min_lr_ratio:g}"
    if schedule["total"] is None:
        return f"learning rate: {held} over the last {config.decay_fraction:.0%} of the time (--decay-fraction)"
    return (
        f"learning rate: {held} from step {schedule['from_step'] or schedule['warmup']:,} to {schedule['total']:,} "
        f"(the last {config.decay_fraction:.0%}, --decay-fraction)"
    )
