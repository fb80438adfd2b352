"""Where one call of `Trainer.run` stands: its budget (the step it ends at, a pause after a number
of steps, --minutes), the figures its progress events carry, and the loss and time since the last
metrics line; what the run announces as it starts, and the summary it returns.

The clock is the caller's: every method that needs the time takes `now`.
"""

from __future__ import annotations

import torch

from ..core.distributed import average
from ..core.errors import shown_path
from .defaults import Chosen
from .schedule import describe


class Invocation:
    def __init__(
        self,
        total: int | None,
        stop_after: int | None,
        minutes: float | None,
        now: float,
        step: int,
        device: torch.device,
    ):
        self.total = total  # the step the budget ends at, when --steps or --epochs fixes it
        self.stop_after = stop_after  # pause after this many steps
        self.minutes = minutes  # --minutes, counted from `start`
        self.stats: dict[str, str] = {}  # the latest metrics line's figures, shown beside the progress
        self.start = now
        self.steps = 0  # taken in this call
        self.last_eval_step: int | None = None
        self.speed_mark: tuple[int, float] | None = None  # --minutes alone: (steps, time) its speed is timed from
        self.loss_sum = torch.zeros((), device=device)  # since the last metrics line, on the device: no sync per step
        self.logged_time = now  # when the last metrics line was, moved on past validations and saves
        self.logged_step = step

    def budget_spent(self, step: int) -> bool:
        return self.total is not None and step >= self.total

    def done(self, step: int) -> bool:
        """The budget is spent or the pause is reached: checked before each step."""
        return self.budget_spent(step) or (self.stop_after is not None and self.steps >= self.stop_after)

    def paused(self, step: int) -> bool:
        """Stopped by `stop_after` with budget left: the run goes on when resumed."""
        return self.stop_after is not None and self.steps >= self.stop_after and not self.budget_spent(step)

    def out_of_time(self, now: float) -> bool:
        return self.minutes is not None and now - self.start >= self.minutes * 60

    def seconds_left(self, now: float) -> float:
        """Of --minutes (which must be given); negative once past them."""
        return self.minutes * 60 - (now - self.start)

    def take_loss(self, step: int, now: float, world: int) -> tuple[float, int, float]:
        """(mean loss, steps, seconds) since the last metrics line, the loss averaged over the
        ranks (the one place it is synced), and start counting the next line's."""
        steps, seconds = step - self.logged_step, now - self.logged_time
        mean_loss = average(self.loss_sum, world).item() / max(steps, 1)
        self.loss_sum = torch.zeros((), device=self.loss_sum.device)
        self.logged_time, self.logged_step = now, step
        return mean_loss, steps, seconds


def announcement(trainer) -> list[str]:
    """What is about to train, where, and how (and, fine-tuning, from what): the lines a run starts with."""
    t, cfg, mc = trainer, trainer.cfg, trainer.model_config
    lines = [
        f"{mc.kind.upper()} {mc.layers}×{mc.hidden}, {t.raw_model.num_parameters():,} parameters; {t.world} "
        f"process(es) on {t.device}, {t.threads} thread(s); precision {t.precision.name} ({t.precision.reason}; "
        f"the {mc.kind.upper()} runs in {t.precision.rnn_dtype}); {t.batcher.windows:,} steps per epoch; "
        f"run folder {shown_path(t.run_dir)}"
    ]
    if t.step > 0:
        return lines
    if cfg.chosen:
        lines.append(Chosen(values={k: getattr(cfg, k) for k in cfg.chosen}, reasons=cfg.chosen).header())
    lines.append(describe(t.schedule, cfg))
    if t.init_source is not None:
        src, added, warmup = t.init_source, len(t.vocab) - t.init_source["vocab_size"], t.schedule["warmup"]
        lines.append(
            f"fine-tuning {src['checkpoint']} (step {src['step']:,}, trained on {src['dataset']}): shape from the "
            f"source model; {added} character(s) new to it start improbable; lr {cfg.lr:g} and {warmup} warm-up "
            f"steps{' (at most a twentieth of the run)' * (warmup < cfg.warmup_steps)} "
            f"({t.finetune_defaults or 'as given'})"
        )
    return lines


def run_summary(trainer, elapsed: float) -> dict:
    """What `train()` returns (and `charlstm train --json` prints, and summary.json keeps)."""
    t = trainer
    summary = {
        "steps": t.step,
        "epoch": t.batcher.epoch,
        "train_bpc": t.last_train_bpc,
        "val_bpc": t.last_val_bpc,
        "best_val_bpc": t.best_val_bpc,
        "chars_per_sec": t.last_chars_per_sec,
        "precision": t.precision.name,
        "rnn_dtype": t.precision.rnn_dtype,
        "device": str(t.device),
        "world_size": t.world,
        "parameters": t.raw_model.num_parameters(),
        "seconds": round(elapsed, 2),
        "stopped_early": t.stopped_early,
        "run_dir": str(t.run_dir),
    }
    if t.scaler.is_enabled():
        summary["skipped_steps"] = t.skipped_steps
    return summary
