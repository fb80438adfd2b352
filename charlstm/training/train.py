"""The Trainer: stateful truncated BPTT over memory-mapped lanes, mixed precision, exact resume, DDP.

Read top to bottom: set-up (fresh or resumed), checkpoints, evaluation and logging, then the
loop (`train_step`, `run`). Its parts live beside it: options and defaults in config.py and
defaults.py, their resolution and `train()` (what the CLI calls) in train_setup.py; lanes and the
model's vocabulary in batching.py; the learning-rate schedule in schedule.py; device, precision
and threads in backend.py; torchrun's processes in distributed.py; the run folder (lock,
config.json, metrics.jsonl, what --resume reads) in runfolder.py; what a checkpoint carries (the
Trainer's state, the hidden and RNG states) and how a resume puts it back in trainstate.py; Ctrl-C
and early ends in stopping.py; one call of `run` (its budget, progress figures, loss since the
last metrics line) in progress.py.

The Trainer prints nothing: what it has to say (the announcement, validations, a step's progress,
each metrics record) goes as events (events.py) to its listeners, `on_event` and any added to
`listeners`; the CLI's draws the progress bar and writes the lines on stderr (terminal.py).

Exact resumption: a checkpoint holds the weights, the optimizer and scaler, the step, the data
position (epoch and window), the hidden state of every lane, the learning-rate schedule's fixed
numbers and the RNG states, so on the CPU N steps + resume + N steps reproduce 2N steps bit for bit.

Multi-GPU: under `torchrun --nproc-per-node N -m charlstm train ...` (WORLD_SIZE > 1) each process
takes batch_size / N of the lanes, so the global batch, the schedule and the numbers match a
single-process run; gradients are averaged by DistributedDataParallel. Only rank 0 logs, evaluates
and saves; the checkpoint holds all lanes' hidden states (gathered), so a run started on N processes
can resume on any number that divides the batch size.
"""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core import distributed
from ..core.backend import check_training_memory, training_device, training_precision
from ..core.checkpoint import BEST, LATEST, save_checkpoint
from ..core.config import TrainConfig
from ..core.errors import CharlstmError, first_line, shell_path, shown_path
from ..core.events import Listener, Message, Metrics, Progress
from ..core.files import append_line
from ..core.model import LN2, CharRNN, detach_state
from ..core.stopping import CtrlC, TrainingInterrupted, TrainingStopped
from ..evaluation.evaluate import bits_per_char
from .batching import training_data
from .finetune import InitSource, transfer_weights
from .progress import Invocation, announcement, run_summary
from .runfolder import check_run_dir, prepare_run_dir, write_run_config
from .schedule import lr_at, minutes_decay, new_schedule, planned_total
from .trainstate import restore_trainer, trainer_payload


class Trainer:
    """Set up a run (fresh or resumed), then `run()` the loop."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        resume_payload: dict | None = None,
        force: bool = False,
        init_source: InitSource | None = None,
        finetune_defaults: str | None = None,
        on_event: Listener | None = None,
    ):
        config.validate()
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.rank, self.world, self.local_rank = distributed.distributed_layout()
        self.main = self.rank == 0
        # Who hears the run's events (events.py) on rank 0: messages, progress, each metrics record.
        self.listeners: list[Listener] = [on_event] if on_event is not None else []

        # First: the device, threads and denormals, then the process group.
        self.device, self.threads = training_device(config.device, config.threads, self.world, self.local_rank)
        distributed.start_process_group(self.device, self.world)

        check_run_dir(self.run_dir, resume=resume_payload is not None, force=force)
        self.precision = training_precision(
            config.precision, self.device, config.model, config.hidden, lanes=config.batch_size // self.world
        )

        init_vocab = init_source.vocab if init_source is not None else None
        data = training_data(config, self.rank, self.world, init_vocab, resume_payload)
        self.dataset, self.vocab, self.batcher = data.dataset, data.vocab, data.batcher
        self.val_tokens = data.val_tokens
        # Model and optimiser.
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.model_config = config.model_config(len(self.vocab))
        check_training_memory(self.model_config, config.batch_size // self.world, config.seq_len, self.device)
        self.raw_model = self._build_model()
        self.init_source = init_source.record() if init_source is not None else None
        if resume_payload is not None:
            self.init_source = resume_payload.get("init_from")
        self.finetune_defaults = finetune_defaults
        if init_source is not None and resume_payload is None:
            self.raw_model.load_state_dict(transfer_weights(init_source, self.vocab, config.seed))
        self._build_optimizer()

        # Run state, replaced by the checkpoint's when resuming.
        self.step = 0
        self.state = None  # hidden state of this process's lanes
        self.best_val_bpc: float | None = None
        self.stale_validations = 0  # validations since the last new best, for --patience
        self.stopped_early = False
        self.last_val_bpc: float | None = None
        self.last_train_bpc: float | None = None
        self.last_chars_per_sec: float | None = None
        self.grad_norm: torch.Tensor | None = None  # the last step's, before clipping (when clipping or fp16)
        self._skipped = torch.zeros((), dtype=torch.int64, device=self.device)  # fp16 steps skipped: inf/NaN gradients
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)  # any NaN/inf loss so far
        # The schedule's fixed numbers (see lr_at), saved in checkpoints.
        total = planned_total(config.steps, config.epochs, self.batcher.windows)
        self.schedule = new_schedule(config.warmup_steps, total, config.decay_fraction)
        self.saved_step: int | None = None  # the step of the latest.pt on disk, once known
        if resume_payload is not None:
            self._restore_or_explain(resume_payload)
        elif self.world > 1:
            torch.manual_seed(config.seed + self.rank)  # distinct dropout masks per rank; DDP syncs the weights

        self.model = distributed.wrap_model(self.raw_model, self.device, self.world)
        distributed.barrier(self.world)  # every rank has checked the run folder before rank 0 writes to it
        if self.main:
            self._prepare_run_dir(resume=resume_payload is not None)

    # -- set-up helpers ------------------------------------------------------------------------

    def _build_optimizer(self) -> None:
        """The grad scaler (a no-op unless fp16) and AdamW, decaying weight matrices only."""
        config = self.cfg
        self.scaler = self.precision.grad_scaler()
        decay = [p for p in self.raw_model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.raw_model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
            foreach=True,
        )

    def _build_model(self) -> CharRNN:
        try:
            return CharRNN(self.model_config).to(self.device)
        except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            raise CharlstmError(
                f"could not allocate the model on {self.device}: {first_line(exc)}; lower --hidden or --layers"
            ) from None

    def _restore_or_explain(self, payload: dict) -> None:
        try:
            self._restore(payload)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CharlstmError(f"the checkpoint does not fit the run it should resume: {first_line(exc)}") from None

    def _restore(self, payload: dict) -> None:
        restore_trainer(self, payload)

    def _prepare_run_dir(self, resume: bool) -> None:
        prepare_run_dir(self.run_dir, self.step if resume else None, self._emit)
        write_run_config(
            self.run_dir,
            {
                "train_config": asdict(self.cfg),
                "model_config": self.model_config.to_dict(),
                "parameters": self.raw_model.num_parameters(),
                "dataset": {
                    **self.dataset.summary(),
                    "train_chars": int(self.dataset.meta.get("train_chars", 0)),
                    "val_chars": int(self.dataset.meta.get("val_chars", 0)),
                    "vocab_size": len(self.dataset.vocab),
                },
                "windows_per_epoch": self.batcher.windows,
                "precision": self.precision.name,
                "rnn_dtype_under_autocast": self.precision.rnn_dtype,
                "init_from": self.init_source,
                "device": str(self.device),
                "world_size": self.world,
                "threads": self.threads,
                "torch": torch.__version__,
            },
        )

    # -- checkpoints ---------------------------------------------------------------------------

    def _payload(self, state) -> dict:
        return trainer_payload(self, state)

    def save(self) -> None:
        """Save latest.pt on rank 0 (every rank takes part in gathering the lanes' hidden state)."""
        self._stop_if_nonfinite()
        state = distributed.gather_lanes(self.state, self.world)
        if self.main:
            with self._stop_if_writing_fails():
                save_checkpoint(self.run_dir / LATEST, self._payload(state))
        self.saved_step = self.step

    def _stop_if_nonfinite(self) -> None:
        """Every rank stops, saving nothing, once any saw a NaN or infinite loss: nothing is logged,
        validated or saved after one."""
        if not distributed.agree(bool(self._nonfinite.item()), self.world, self.device):
            return
        kept = (
            f"the last good checkpoint is {shown_path(self.run_dir / LATEST)} (step {self.saved_step})"
            if self.saved_step is not None
            else "no checkpoint had been saved yet"
        )
        raise TrainingStopped(
            f"the loss or validation became NaN or infinite by step {self.step}; training stopped without saving, "
            f"{kept}. Try a lower --lr, --grad-clip 1, or --precision fp32"
        )

    @contextmanager
    def _stop_if_writing_fails(self):
        """A failed save or log line (a full disk, a folder made read-only) ends the run in one line
        that says what is kept. The write itself left the previous file whole."""
        try:
            yield
        except CharlstmError as exc:
            kept = (
                f"{shown_path(self.run_dir / LATEST)} (step {self.saved_step}) is intact; "
                "once the disk has room, resume with: "
                f"{self.resume_command()}"
                if self.saved_step is not None
                else "nothing had been saved yet"
            )
            raise TrainingStopped(f"{exc}; training stopped at step {self.step}, {kept}") from None

    def resume_command(self) -> str:
        prefix = f"torchrun --nproc-per-node {self.world} -m charlstm" if self.world > 1 else "charlstm"
        return f"{prefix} train --resume --out {shell_path(self.run_dir)}"

    # -- evaluation and logging ----------------------------------------------------------------

    def validate(self) -> float | None:
        """Validation bpc over the whole split (rank 0 only); other ranks wait. NaN stops every rank,
        as a NaN loss does."""
        bpc = None
        if self.main and len(self.val_tokens) >= 2:
            self.last_val_bpc = bpc = bits_per_char(
                self.raw_model, self.val_tokens, device=self.device, autocast=self.precision.autocast
            )["bpc"]
            self._nonfinite |= not math.isfinite(bpc)  # weights an update blew up can score NaN before the loss is
        self._stop_if_nonfinite()  # every rank takes part: the barrier, too
        return bpc

    def _note_validation(self, val: float | None, record: dict | None) -> None:
        """The best so far and --patience's count; a new best is saved as best.pt."""
        if val is None or not self.main:
            return
        improved = self.best_val_bpc is None or val < self.best_val_bpc
        self.stale_validations = 0 if improved else self.stale_validations + 1
        if improved:
            self.best_val_bpc = val
        if record is not None:
            record["val_bpc"] = val
        else:
            self._log({"step": self.step, "epoch": self.batcher.epoch, "val_bpc": val})
        self._say(f"step {self.step:,}: validation {val:.4f} bpc" + (" (best so far)" if improved else ""))
        if improved:
            with self._stop_if_writing_fails():
                save_checkpoint(self.run_dir / BEST, self._payload(None if self.world > 1 else self.state))

    def _out_of_patience(self) -> bool:
        """--patience: that many validations in a row without a new best end the run (every rank)."""
        if self.cfg.patience is None:
            return False
        exhausted = distributed.agree(self.stale_validations >= self.cfg.patience, self.world, self.device)
        if exhausted:
            self.stopped_early = True
            self._say(
                f"no new best in {self.cfg.patience} validation(s): stopping at step {self.step:,} "
                f"(--patience); best.pt holds {self.best_val_bpc:.4f} bpc"
            )
        return exhausted

    def _metrics_record(self, inv: Invocation) -> dict:
        """The metrics line for the steps since the last one (the only place the loss is synced)."""
        now = time.perf_counter()
        mean_loss, steps, seconds = inv.take_loss(self.step, now, self.world)
        chars_per_sec = steps * self.cfg.batch_size * self.cfg.seq_len / max(seconds, 1e-9)
        self.last_train_bpc, self.last_chars_per_sec = mean_loss / LN2, round(chars_per_sec, 1)
        record = {
            "step": self.step,
            "epoch": self.batcher.epoch,
            "loss": mean_loss,
            "bpc": self.last_train_bpc,
            "lr": self.optimizer.param_groups[0]["lr"],
            "chars_per_sec": self.last_chars_per_sec,
        }
        if self.grad_norm is not None and math.isfinite(norm := float(self.grad_norm)):  # inf: a skipped fp16 step
            record["grad_norm"] = norm
        if self.scaler.is_enabled():
            record["skipped_steps"] = self.skipped_steps
        postfix = {"loss": f"{mean_loss:.3f}", "bpc": f"{self.last_train_bpc:.3f}", "chars/s": f"{chars_per_sec:,.0f}"}
        if self.cfg.minutes is not None:
            postfix["left"] = f"{max(0.0, inv.seconds_left(now)) / 60:.1f}min"
        inv.stats = postfix
        return record

    def _report(self, inv: Invocation, record: bool, evaluate: bool) -> None:
        """A metrics line and/or a validation (whose score joins the line), after the NaN check."""
        if record or evaluate:
            self._stop_if_nonfinite()
        line = self._metrics_record(inv) if record else None
        if evaluate:
            self._note_validation(self.validate(), line)
            inv.last_eval_step = self.step
        if line is not None:
            self._log(line)

    def _log(self, record: dict) -> None:
        if self.main:
            with self._stop_if_writing_fails():
                append_line(self.run_dir / "metrics.jsonl", json.dumps(record) + "\n")
            self._emit(Metrics(record))

    def _emit(self, event) -> None:
        if self.main:
            for listener in self.listeners:
                listener(event)

    def _say(self, message: str) -> None:
        self._emit(Message(message))

    def _progress(self, inv: Invocation, finished: bool = False) -> None:
        if self.listeners:  # one event a step: none built when nobody listens
            self._emit(Progress("training", self.step, inv.total, "step", inv.stats, finished))

    @property
    def skipped_steps(self) -> int:
        return int(self._skipped.item())

    # -- the loop ------------------------------------------------------------------------------

    def train_step(self, x: torch.Tensor, y: torch.Tensor, fresh: bool) -> torch.Tensor:
        """One update; returns the loss as a tensor (no sync)."""
        if fresh:
            self.state = None  # a new epoch starts every lane from the beginning of its text
        sch = self.schedule
        lr = lr_at(
            self.step,
            self.cfg.lr,
            sch["warmup"],
            sch["total"],
            self.cfg.min_lr_ratio,
            sch["from_step"],
            sch["from_ratio"],
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        with self.precision.autocast():
            logits, state = self.model(x, self.state)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0 or self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            norm = torch.nn.utils.clip_grad_norm_(
                self.raw_model.parameters(), self.cfg.grad_clip or math.inf, foreach=True
            )
            self.grad_norm = norm.detach()  # read at log steps only: no sync here
            if self.scaler.is_enabled():
                # The scaler skips exactly the steps whose gradients hold inf/NaN; counted on the
                # device, so there is no GPU sync here.
                self._skipped += ~torch.isfinite(norm)
        self.scaler.step(self.optimizer)  # a plain optimizer.step() when the scaler is off
        self.scaler.update()
        self.state = detach_state(state)  # truncated BPTT: keep the values, cut the graph
        self.step += 1
        return loss.detach()

    def run(self, stop_after: int | None = None) -> dict:
        """Train until the budget is spent (or `stop_after` more steps, as a pause); return a summary.

        Ctrl-C saves latest.pt and raises TrainingInterrupted with the command that resumes.
        """
        total = self.schedule["total"] if (self.cfg.steps or self.cfg.epochs) else None
        for line in announcement(self):  # what is about to train, where, and how
            self._say(line)
        start = time.perf_counter()
        inv = Invocation(total, stop_after, self.cfg.minutes, start, self.step, self.device)
        self.saved_step = self.step if (self.run_dir / LATEST).exists() else None
        self._progress(inv)
        try:
            with CtrlC(self._say) as ctrl_c:
                self._loop(inv, ctrl_c)
        except KeyboardInterrupt:
            # A second Ctrl-C (or one outside the loop's checks): the step may be half done, so
            # nothing is saved; the last checkpoint stays as it was.
            raise TrainingInterrupted(
                f"interrupted at step {self.step} without saving; "
                f"the last save is {shown_path(self.run_dir / LATEST)}. "
                f"Resume with: {self.resume_command()}"
            ) from None
        finally:
            self._progress(inv, finished=True)
        if ctrl_c.pressed:
            self.save()
            raise TrainingInterrupted(
                f"interrupted at step {self.step}; saved {shown_path(self.run_dir / LATEST)}. "
                f"Resume with: {self.resume_command()}"
            )
        # The steps since the last log line (a --minutes run ends anywhere), and a validation of
        # the final weights unless this is a pause or the loop just ran one.
        evaluate = not inv.paused(self.step) and inv.last_eval_step != self.step and inv.steps > 0
        self._report(inv, record=inv.logged_step != self.step, evaluate=evaluate)
        self.save()
        summary = run_summary(self, time.perf_counter() - start)
        distributed.barrier(self.world)
        return summary

    def _loop(self, inv: Invocation, ctrl_c: CtrlC) -> None:
        cfg = self.cfg
        while True:
            # Stop conditions, checked before each step so a resumed run that is done does nothing.
            done = inv.done(self.step)
            # Ranks agree on time-outs and Ctrl-C at log steps only: agreeing is a GPU sync.
            if self.world == 1 or self.step % cfg.log_every == 0:
                stop = inv.out_of_time(time.perf_counter()) or ctrl_c.pressed
                done = distributed.agree(stop, self.world, self.device) or done
            if done:
                return
            x, y, fresh = self.batcher.next()
            loss = self.train_step(x, y, fresh)
            inv.steps += 1
            inv.loss_sum += loss
            self._nonfinite |= ~torch.isfinite(loss)
            if (
                self.schedule["total"] is None
                and cfg.minutes is not None
                and (self.world == 1 or self.step % cfg.log_every == 0)
            ):
                self._maybe_start_decay(inv, loss)

            evaluate = inv.budget_spent(self.step) or bool(cfg.eval_every and self.step % cfg.eval_every == 0)
            save = bool(cfg.save_every and self.step % cfg.save_every == 0)
            self._report(inv, record=evaluate or self.step % cfg.log_every == 0, evaluate=evaluate)
            if save:
                self.save()
            if evaluate or save:
                inv.logged_time = time.perf_counter()  # validation and saving are not training throughput
            self._progress(inv)
            if evaluate and self._out_of_patience():
                return

    def _maybe_start_decay(self, inv: Invocation, loss: torch.Tensor) -> None:
        """--minutes alone: once the time left is the run's last decay_fraction, fix the schedule's
        length from the speed since halfway to that point (past a slow start: timing only the first
        steps left runs at the floor for long stretches). Saved in checkpoints, so a resumed run
        stays deterministic."""
        cfg, now = self.cfg, time.perf_counter()
        budget = cfg.minutes * 60
        if inv.speed_mark is None and now - inv.start >= (1 - cfg.decay_fraction) * budget / 2:
            loss.item()  # sync, so the clock measures finished steps
            inv.speed_mark = (inv.steps, time.perf_counter())
        due = inv.seconds_left(now) <= cfg.decay_fraction * budget
        if not distributed.agree(due, self.world, self.device):  # every rank decides at the same step
            return
        loss.item()
        now = time.perf_counter()
        marked, since = inv.speed_mark if inv.speed_mark and inv.steps > inv.speed_mark[0] else (0, inv.start)
        schedule = minutes_decay(self.schedule, self.step, (now - since) / (inv.steps - marked), inv.seconds_left(now))
        # Every rank must use rank 0's number, or their learning rates differ.
        schedule["total"] = distributed.rank_0s(schedule["total"], self.world, self.device)
        self.schedule = schedule
        self._say(
            f"step {self.step:,}: the last {cfg.decay_fraction:.0%} of --minutes {cfg.minutes:g}; the learning "
            f"rate decays over the ~{schedule['total'] - self.step:,} steps left (to step {schedule['total']:,})"
        )

    def close(self, finished: bool = False) -> None:
        self.model = self.raw_model  # DDP's reducer goes before the process group (see end_process_group)
        distributed.end_process_group(self.world, finished)
