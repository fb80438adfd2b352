"""Training: stateful truncated BPTT over memory-mapped lanes, mixed precision, exact resume, DDP.

Read top to bottom: `LaneBatcher` (the data), `lr_at` (the schedule), `Trainer` (set-up, the
loop, checkpoints), and `train()`, which the CLI calls. Its parts live beside it: every option and
its default in config.py (`TrainConfig`); the device, precision (autocast and grad scaler),
threads and process layout in backend.py; the run folder (its lock, config.json, metrics.jsonl,
what --resume reads) in runfolder.py; the hidden state and RNG states a checkpoint carries in
trainstate.py.

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
import os
import random
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from charlstm.backend import available_cores, check_training_memory, choose_precision, flush_denormals, resolve_device
from charlstm.checkpoint import BEST, LATEST, load_checkpoint, save_checkpoint
from charlstm.config import TrainConfig
from charlstm.distributed import distributed_layout, gather_lanes
from charlstm.dataset import Dataset, load_dataset, locate_recorded_dataset
from charlstm.errors import CharlstmError
from charlstm.evaluate import LN2, bits_per_char
from charlstm.files import append_line
from charlstm.finetune import (
    FINETUNE_LR,
    FINETUNE_WARMUP_STEPS,
    SHAPE_OPTIONS,
    InitSource,
    check_shape_options,
    load_init_source,
    merged_vocab,
    token_map,
    transfer_weights,
)
from charlstm.model import CharRNN, detach_state
from charlstm.runfolder import (
    check_resumable,
    check_run_dir,
    checkpoint_to_resume,
    clear_earlier_run,
    own_run_dir,
    truncate_metrics,
    write_run_config,
)
from charlstm.trainstate import hidden_for_checkpoint, lanes_from_checkpoint, restore_rng, rng_state
from charlstm.vocab import Vocab

# Options that may change when a run is resumed: the budget and how it is logged and run.
# Everything else (model shape, data layout, optimiser) is the run's and must stay as it was.
RESUMABLE_OVERRIDES = ("steps", "epochs", "minutes", "patience", "eval_every", "save_every", "log_every", "precision", "device", "threads", "data")


def default_run_dir(data: str, model: str) -> Path:
    return Path("checkpoints") / f"{Path(data).name}-{model}"


# ---------------------------------------------------------------------------------------------
# Data


class LaneBatcher:
    """The training stream cut into `lanes` contiguous lanes; batch k is window k of every lane.

    Lane i covers tokens [i·L, (i+1)·L). Each batch is the next `seq_len` characters of every lane
    (targets: the same window shifted by one), so the hidden state of row i at the end of one batch
    is the right context for row i of the next. After the last full window the position wraps to
    the start of a new epoch and `next()` reports `fresh=True` so the caller resets the state.

    Under DDP, rank r reads lanes [r·lanes/world, (r+1)·lanes/world). Windows are read from the
    memory-mapped file as they are needed: the corpus is never copied into RAM.
    """

    def __init__(self, tokens: np.ndarray, lanes: int, seq_len: int, rank: int = 0, world: int = 1,
                 token_map: np.ndarray | None = None):
        n = len(tokens)
        self.token_map = token_map  # dataset id → model id, for a model whose vocabulary is wider
        self.lane_len = n // lanes
        self.seq_len = seq_len
        self.windows = (self.lane_len - 1) // seq_len  # per epoch; a target needs one character more
        if self.windows < 1:
            need = lanes * (seq_len + 1)
            raise CharlstmError(
                f"the training split has {n:,} characters; --batch-size {lanes} × (--seq-len {seq_len} + 1) "
                f"needs at least {need:,}: lower --batch-size or --seq-len, or ingest more data"
            )
        if lanes % world:
            raise CharlstmError(f"--batch-size {lanes} must be divisible by the number of processes ({world})")
        grid = tokens[: lanes * self.lane_len].reshape(lanes, self.lane_len)  # a view, nothing read
        per_rank = lanes // world
        self.grid = grid[rank * per_rank : (rank + 1) * per_rank]
        self.epoch = 0
        self.window = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(inputs [lanes, T], targets [lanes, T], fresh): fresh when an epoch starts here."""
        if self.window == self.windows:
            self.epoch, self.window = self.epoch + 1, 0
        fresh = self.window == 0
        s = self.window * self.seq_len
        chunk = np.asarray(self.grid[:, s : s + self.seq_len + 1], dtype=np.int64)
        if self.token_map is not None:
            chunk = self.token_map[chunk]
        self.window += 1
        x = torch.from_numpy(np.ascontiguousarray(chunk[:, :-1]))
        y = torch.from_numpy(np.ascontiguousarray(chunk[:, 1:]))
        return x, y, fresh

    def position(self) -> dict:
        return {"epoch": self.epoch, "window": self.window, "windows": self.windows}

    def seek(self, position: dict) -> None:
        self.epoch, self.window = int(position["epoch"]), int(position["window"])
        if not 0 <= self.window <= self.windows:
            raise CharlstmError("the checkpoint's data position does not fit this dataset")


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule


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

    Linear warm-up to `peak`, then cosine decay from peak × from_ratio at `from_step` (default: the
    end of warm-up) to peak × min_ratio at `total`; constant while `total` is unknown. A resumed
    run with a new budget starts a new segment where the old one stood, so the rate never jumps.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    start = warmup if from_step is None else max(from_step, warmup)
    if total is None or total <= start:
        return peak * from_ratio
    progress = min(1.0, (step - start) / (total - start))
    return peak * (min_ratio + (from_ratio - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def resumed_schedule(schedule: dict, payload: dict, config: TrainConfig, step: int) -> dict:
    """The schedule's fixed numbers for a run resumed at `step` from `payload`: the saved ones when
    the budget is unchanged, else a new cosine segment from the rate the run had reached."""
    saved = payload.get("schedule") or {}
    old_budget = {k: (payload.get("train_config") or {}).get(k) for k in ("steps", "epochs", "minutes")}
    new_budget = {k: getattr(config, k) for k in old_budget}
    if new_budget == old_budget and config.minutes is None:
        return {**schedule, **saved}  # the same run goes on: the same schedule
    # A new budget (--minutes always is one: it counts this invocation): decay from the
    # rate the run had reached, over the new length.
    schedule = dict(schedule)
    old = {**schedule, **saved}
    rate = lr_at(step, 1.0, old["warmup"], old["total"], config.min_lr_ratio, old["from_step"], old["from_ratio"])
    schedule["warmup"] = old["warmup"]
    if step >= old["warmup"]:
        schedule["from_step"], schedule["from_ratio"] = step, rate
    return schedule


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TrainingInterrupted(Exception):
    """Ctrl-C: the run was saved; `message` says how to resume it."""


class TrainingStopped(CharlstmError):
    """The loss became NaN or infinite; nothing was saved after the last good checkpoint."""


# ---------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """Set up a run (fresh or resumed), then `run()` the loop."""

    def __init__(self, config: TrainConfig, run_dir: Path, resume_payload: dict | None = None, force: bool = False,
                 init_source: InitSource | None = None, finetune_defaults: str | None = None):
        config.validate()
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.rank, self.world, self.local_rank = distributed_layout()
        self.main = self.rank == 0

        self._set_up_backend()  # first: device, threads, denormals

        check_run_dir(self.run_dir, resume=resume_payload is not None, force=force)
        self.precision = choose_precision(config.precision, self.device, kind=config.model)

        self._load_data(resume_payload, init_source)

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
        self._skipped = torch.zeros((), dtype=torch.int64, device=self.device)  # fp16 steps skipped for inf/NaN gradients
        total = self._planned_total()
        # The schedule's fixed numbers (see lr_at), saved in checkpoints.
        self.schedule = {
            "warmup": min(config.warmup_steps, total // 10) if total else config.warmup_steps,
            "total": total,
            "from_step": None,
            "from_ratio": 1.0,
        }
        self.saved_step: int | None = None  # the step of the latest.pt on disk, once known
        if resume_payload is not None:
            self._restore_or_explain(resume_payload)
        elif self.world > 1:
            torch.manual_seed(config.seed + self.rank)  # distinct dropout masks per rank; DDP syncs the weights

        self.model = self.raw_model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.raw_model, device_ids=ids)

        if self.world > 1:
            dist.barrier()  # every rank has checked the run folder before rank 0 writes to it
        if self.main:
            self._prepare_run_dir(resume=resume_payload is not None)

    # -- set-up helpers ------------------------------------------------------------------------

    def _set_up_backend(self) -> None:
        """Device (this rank's GPU under torchrun), flushed denormals, threads, TF32, the process group."""
        config = self.cfg
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        flush_denormals(self.device)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        self.threads = config.threads or max(1, available_cores() // local_world)
        torch.set_num_threads(self.threads)
        if self.device.type == "cuda" and config.precision == "fp32":
            torch.backends.cuda.matmul.allow_tf32 = True  # the head's matmul; cuDNN RNNs use TF32 already
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    def _load_data(self, resume_payload: dict | None, init_source: InitSource | None) -> None:
        """The dataset, the model's vocabulary (fine-tuning: the source model's characters, then the
        corpus's new ones), this process's lanes and the validation tokens, both in the model's ids."""
        config = self.cfg
        self.dataset: Dataset = load_dataset(config.data)
        self.vocab: Vocab = self.dataset.vocab  # the model's; wider than the dataset's when fine-tuning
        if init_source is not None and resume_payload is None:
            self.vocab = merged_vocab(init_source.vocab, self.dataset.vocab)
        if resume_payload is not None:
            old = Vocab(resume_payload["vocab"])
            if config.init_from and all(s in old.index for s in self.vocab.symbols):
                self.vocab = old  # a fine-tuning run keeps its source model's characters
            elif old != self.vocab:
                raise CharlstmError(
                    f"{config.data} has a different vocabulary ({len(self.vocab)} symbols) from the checkpoint's "
                    f"({len(old)}); resume with the dataset the run was trained on "
                    f"({resume_payload.get('dataset', {}).get('path')})"
                )
        ids = token_map(self.dataset.vocab, self.vocab)
        self.batcher = LaneBatcher(self.dataset.tokens("train"), config.batch_size, config.seq_len, self.rank, self.world, ids)
        self.val_tokens = self.dataset.tokens("val")
        if ids is not None:
            self.val_tokens = ids[np.asarray(self.val_tokens, dtype=np.int64)]

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

    def _planned_total(self) -> int | None:
        """Total steps when the budget fixes it (--steps, or --epochs × windows per epoch)."""
        totals = []
        if self.cfg.steps is not None:
            totals.append(self.cfg.steps)
        if self.cfg.epochs is not None:
            steps = self.cfg.epochs * self.batcher.windows
            if math.isfinite(steps):  # --epochs 1e308: more steps than a float holds, so no bound at all
                totals.append(max(1, math.ceil(steps)))
        return min(totals) if totals else None

    def _build_model(self) -> CharRNN:
        try:
            return CharRNN(self.model_config).to(self.device)
        except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            raise CharlstmError(
                f"could not allocate the model on {self.device}: {_first_line(exc)}; lower --hidden or --layers"
            ) from None

    def _restore_or_explain(self, payload: dict) -> None:
        try:
            self._restore(payload)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CharlstmError(f"the checkpoint does not fit the run it should resume: {_first_line(exc)}") from None

    def _restore(self, payload: dict) -> None:
        self.raw_model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])  # moves its state to the parameters' device
        if payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.step = int(payload["step"])
        self.batcher.seek(payload["data_position"])
        self.best_val_bpc = payload.get("best_val_bpc")
        self.stale_validations = int(payload.get("stale_validations", 0))
        self.last_val_bpc = payload.get("val_bpc")
        self._skipped.fill_(int(payload.get("skipped_steps", 0)))
        self.schedule = resumed_schedule(self.schedule, payload, self.cfg, self.step)
        hidden = payload.get("hidden_state")
        if hidden is not None:
            self.state = lanes_from_checkpoint(hidden, self.cfg.batch_size, self.world, self.rank,
                                               self.model_config.kind, self.device)  # fmt: skip
        restore_rng(payload.get("rng") or {}, self.device, self.world, self.cfg.seed + self.rank + self.step)

    def _prepare_run_dir(self, resume: bool) -> None:
        if resume:
            truncate_metrics(self.run_dir, self.step)
        else:
            clear_earlier_run(self.run_dir, self._say)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(self.run_dir, {
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
        })  # fmt: skip

    # -- checkpoints ---------------------------------------------------------------------------

    def _payload(self, state) -> dict:
        return {
            "model_config": self.model_config.to_dict(),
            "vocab": self.vocab.symbols,
            "model": self.raw_model.state_dict(),  # the unwrapped module: no DDP prefix
            "dataset": self.dataset.summary(),
            "step": self.step,
            "train_config": asdict(self.cfg),
            "init_from": self.init_source,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data_position": self.batcher.position(),
            "hidden_state": hidden_for_checkpoint(state),
            "schedule": dict(self.schedule),
            "rng": rng_state(self.device),
            "best_val_bpc": self.best_val_bpc,
            "stale_validations": self.stale_validations,
            "val_bpc": self.last_val_bpc,
            "skipped_steps": self.skipped_steps,
            "precision": self.precision.name,
        }

    def save(self, name: str = LATEST, gather: bool = True) -> None:
        """Save on rank 0 (every rank takes part in gathering the lanes' hidden state)."""
        state = gather_lanes(self.state, self.world) if gather else (self.state if self.world == 1 else None)
        if self.main:
            with self._stop_if_writing_fails():
                save_checkpoint(self.run_dir / name, self._payload(state))
        if name == LATEST:
            self.saved_step = self.step

    # -- evaluation and logging ----------------------------------------------------------------

    def validate(self) -> float | None:
        """Validation bpc over the whole split (rank 0 only); other ranks wait."""
        bpc = None
        if self.main and len(self.val_tokens) >= 2:
            bpc = bits_per_char(self.raw_model, self.val_tokens, device=self.device, autocast=self.precision.autocast)["bpc"]
            self.last_val_bpc = bpc
        if self.world > 1:
            dist.barrier()
        return bpc

    def _log(self, record: dict) -> None:
        if self.main:
            with self._stop_if_writing_fails():
                append_line(self.run_dir / "metrics.jsonl", json.dumps(record) + "\n")

    @contextmanager
    def _stop_if_writing_fails(self):
        """A failed save or log line (a full disk, a folder made read-only) ends the run in one line
        that says what is kept. The write itself left the previous file whole."""
        try:
            yield
        except CharlstmError as exc:
            kept = (
                f"{self.run_dir / LATEST} (step {self.saved_step}) is intact; once the disk has room, resume with: "
                f"{self.resume_command()}"
                if self.saved_step is not None
                else "nothing had been saved yet"
            )
            raise TrainingStopped(f"{exc}; training stopped at step {self.step}, {kept}") from None

    def _say(self, message: str) -> None:
        if self.main:
            tqdm.write(message, file=sys.stderr)

    def resume_command(self) -> str:
        prefix = f"torchrun --nproc-per-node {self.world} -m charlstm" if self.world > 1 else "charlstm"
        return f"{prefix} train --resume --out {shlex.quote(str(self.run_dir))}"

    @property
    def skipped_steps(self) -> int:
        return int(self._skipped.item())

    def _out_of_patience(self) -> bool:
        """--patience: that many validations in a row without a new best end the run (every rank)."""
        if self.cfg.patience is None:
            return False
        exhausted = self._stop_flag(self.stale_validations >= self.cfg.patience)
        if exhausted:
            self.stopped_early = True
            if self.main:
                self._say(
                    f"no new best in {self.cfg.patience} validation(s): stopping at step {self.step:,} "
                    f"(--patience); best.pt holds {self.best_val_bpc:.4f} bpc"
                )
        return exhausted

    def _stop_flag(self, local: bool) -> bool:
        """Every rank must stop at the same step: agree on the flag."""
        if self.world == 1:
            return local
        flag = torch.tensor([1.0 if local else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    # -- the loop ------------------------------------------------------------------------------

    def train_step(self, x: torch.Tensor, y: torch.Tensor, fresh: bool) -> torch.Tensor:
        """One update; returns the loss as a tensor (no sync)."""
        if fresh:
            self.state = None  # a new epoch starts every lane from the beginning of its text
        sch = self.schedule
        lr = lr_at(self.step, self.cfg.lr, sch["warmup"], sch["total"], self.cfg.min_lr_ratio, sch["from_step"], sch["from_ratio"])
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
        cfg = self.cfg
        total = self.schedule["total"] if (cfg.steps or cfg.epochs) else None
        self._announce()
        bar = tqdm(
            total=total,
            initial=self.step,
            disable=None if self.main else True,
            file=sys.stderr,
            unit="step",
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        # Loss summed on the device since the last log line, and when/where that line was.
        meter = {"loss_sum": torch.zeros((), device=self.device), "time": start, "step": self.step}
        bad = torch.zeros((), dtype=torch.bool, device=self.device)  # any non-finite loss since the last check
        local = 0  # steps taken in this invocation
        self.saved_step = self.step if (self.run_dir / LATEST).exists() else None
        t_estimate = None
        last_eval_step = None
        self._interrupted = False
        previous_handler = self._catch_ctrl_c()
        try:
            while True:
                # Stop conditions, checked before each step so a resumed run that is done does nothing.
                done = (total is not None and self.step >= total) or (stop_after is not None and local >= stop_after)
                # Ranks agree on time-outs and Ctrl-C at log steps only: agreeing is a GPU sync.
                if self.world == 1 or self.step % cfg.log_every == 0:
                    out_of_time = cfg.minutes is not None and time.perf_counter() - start >= cfg.minutes * 60
                    done = self._stop_flag(out_of_time or self._interrupted) or done
                if done:
                    break
                x, y, fresh = self.batcher.next()
                loss = self.train_step(x, y, fresh)
                local += 1
                meter["loss_sum"] += loss
                bad |= ~torch.isfinite(loss)

                if self.schedule["total"] is None and cfg.minutes is not None:
                    t_estimate = self._estimate_schedule(local, loss, start, t_estimate)

                last = total is not None and self.step >= total
                evaluate_now = last or (cfg.eval_every and self.step % cfg.eval_every == 0)
                save_now = cfg.save_every and self.step % cfg.save_every == 0
                record = None
                if self.step % cfg.log_every == 0 or evaluate_now or last:
                    self._stop_if_nonfinite(bad)
                    record, meter = self._metrics_record(meter, bar, start)
                if evaluate_now:
                    val = self.validate()
                    last_eval_step = self.step
                    self._note_validation(val, record)
                if record is not None:
                    self._log(record)
                if save_now:
                    self._stop_if_nonfinite(bad)
                    self.save(LATEST)
                if evaluate_now or save_now:
                    meter["time"] = time.perf_counter()  # validation and saving are not training throughput
                bar.update(1)
                if evaluate_now and self._out_of_patience():
                    break
        except KeyboardInterrupt:
            # A second Ctrl-C (or one outside the loop's checks): the step may be half done, so
            # nothing is saved; the last checkpoint stays as it was.
            bar.close()
            raise TrainingInterrupted(
                f"interrupted at step {self.step} without saving; the last save is {self.run_dir / LATEST}. "
                f"Resume with: {self.resume_command()}"
            ) from None
        finally:
            self._restore_ctrl_c(previous_handler)
        bar.close()

        if self._interrupted:
            self._stop_if_nonfinite(bad)
            self.save(LATEST)
            raise TrainingInterrupted(
                f"interrupted at step {self.step}; saved {self.run_dir / LATEST}. Resume with: {self.resume_command()}"
            )
        self._stop_if_nonfinite(bad)
        paused = stop_after is not None and local >= stop_after and not (total is not None and self.step >= total)
        if meter["step"] != self.step:  # steps since the last log line (a --minutes run ends anywhere)
            record, meter = self._metrics_record(meter, bar, start)
        else:
            record = None
        if not paused and last_eval_step != self.step and local > 0:
            self._note_validation(self.validate(), record)
        if record is not None:
            self._log(record)
        self.save(LATEST)
        summary = self._summary(time.perf_counter() - start)
        if self.world > 1:
            dist.barrier()
        return summary

    def _announce(self) -> None:
        """What is about to train, where, and how (and, fine-tuning, from what)."""
        cfg = self.cfg
        self._say(
            f"{self.model_config.kind.upper()} {self.model_config.layers}×{self.model_config.hidden}, "
            f"{self.raw_model.num_parameters():,} parameters; {self.world} process(es) on {self.device}, "
            f"{self.threads} thread(s); precision {self.precision.name} ({self.precision.reason}; "
            f"the {self.model_config.kind.upper()} runs in {self.precision.rnn_dtype}); "
            f"{self.batcher.windows:,} steps per epoch; run folder {self.run_dir}"
        )
        if self.init_source is not None and self.step == 0:
            src, added = self.init_source, len(self.vocab) - self.init_source["vocab_size"]
            self._say(
                f"fine-tuning {src['checkpoint']} (step {src['step']:,}, trained on {src['dataset']}): shape from the "
                f"source model; {added} character(s) new to it start improbable; lr {cfg.lr:g} and "
                f"{cfg.warmup_steps} warm-up steps ({'as given' if self.finetune_defaults is None else self.finetune_defaults})"
            )

    def _summary(self, elapsed: float) -> dict:
        """What `train()` returns (and `charlstm train --json` prints)."""
        summary = {
            "steps": self.step,
            "epoch": self.batcher.epoch,
            "train_bpc": self.last_train_bpc,
            "val_bpc": self.last_val_bpc,
            "best_val_bpc": self.best_val_bpc,
            "chars_per_sec": self.last_chars_per_sec,
            "precision": self.precision.name,
            "rnn_dtype": self.precision.rnn_dtype,
            "device": str(self.device),
            "world_size": self.world,
            "parameters": self.raw_model.num_parameters(),
            "seconds": round(elapsed, 2),
            "stopped_early": self.stopped_early,
            "run_dir": str(self.run_dir),
        }
        if self.scaler.is_enabled():
            summary["skipped_steps"] = self.skipped_steps
        return summary

    def _stop_if_nonfinite(self, bad: torch.Tensor) -> None:
        """Every rank stops, saving nothing, once any saw a NaN or infinite loss since the last check."""
        if self._stop_flag(bool(bad.item())):
            raise self._nonfinite(self.saved_step)

    def _metrics_record(self, meter: dict, bar, start: float) -> tuple[dict, dict]:
        """The metrics line for the steps since the last one (the only place the loss is synced)."""
        loss_sum = meter["loss_sum"]
        if self.world > 1:  # the logged loss is the whole batch's, not rank 0's lanes'
            dist.all_reduce(loss_sum)
            loss_sum /= self.world
        now = time.perf_counter()
        n = self.step - meter["step"]
        mean_loss = loss_sum.item() / max(n, 1)
        chars_per_sec = n * self.cfg.batch_size * self.cfg.seq_len / max(now - meter["time"], 1e-9)
        self.last_train_bpc, self.last_chars_per_sec = mean_loss / LN2, round(chars_per_sec, 1)
        record = {
            "step": self.step,
            "epoch": self.batcher.epoch,
            "loss": mean_loss,
            "bpc": self.last_train_bpc,
            "lr": self.optimizer.param_groups[0]["lr"],
            "chars_per_sec": self.last_chars_per_sec,
        }
        if self.scaler.is_enabled():
            record["skipped_steps"] = self.skipped_steps
        postfix = {"loss": f"{mean_loss:.3f}", "bpc": f"{self.last_train_bpc:.3f}", "chars/s": f"{chars_per_sec:,.0f}"}
        if self.cfg.minutes is not None:
            postfix["left"] = f"{max(0.0, self.cfg.minutes * 60 - (now - start)) / 60:.1f}min"
        bar.set_postfix(postfix, refresh=False)
        return record, {"loss_sum": torch.zeros((), device=self.device), "time": now, "step": self.step}

    def _catch_ctrl_c(self):
        """First Ctrl-C: finish the current step, save, stop. A second one stops at once."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True
            self._say("interrupt: finishing this step and saving (Ctrl-C again to stop at once)")

        return signal.signal(signal.SIGINT, handler)

    @staticmethod
    def _restore_ctrl_c(previous) -> None:
        import signal

        if previous is not None:
            signal.signal(signal.SIGINT, previous)

    def _estimate_schedule(self, local: int, loss: torch.Tensor, start: float, t_estimate: float | None):
        """--minutes alone: time steps 3..12 of this invocation, then fix the schedule's length from
        them (saved in checkpoints, so a resumed run stays deterministic)."""
        if local == 2:
            loss.item()  # sync, so the clock measures finished steps
            return time.perf_counter()
        if local == 12:
            loss.item()
            per_step = (time.perf_counter() - t_estimate) / 10
            left = self.cfg.minutes * 60 - (time.perf_counter() - start)
            total = max(self.step + int(left / per_step), self.schedule["warmup"] + 1, (self.schedule["from_step"] or 0) + 1)
            if self.world > 1:  # every rank must use rank 0's number, or their learning rates differ
                t = torch.tensor([total], dtype=torch.float64, device=self.device)
                dist.broadcast(t, src=0)
                total = int(t.item())
            self.schedule["total"] = total
            self._say(f"--minutes {self.cfg.minutes:g}: about {total:,} steps; the learning rate decays over them")
        return t_estimate

    def _note_validation(self, val: float | None, record: dict | None) -> None:
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

    def _nonfinite(self, last_good_save: int | None) -> TrainingStopped:
        kept = (
            f"the last good checkpoint is {self.run_dir / LATEST} (step {last_good_save})"
            if last_good_save is not None
            else "no checkpoint had been saved yet"
        )
        return TrainingStopped(
            f"the loss became NaN or infinite by step {self.step}; training stopped without saving, "
            f"{kept}. Try a lower --lr, --grad-clip 1, or --precision fp32"
        )

    def close(self, finished: bool = False) -> None:
        if self.world > 1 and dist.is_initialized():
            if finished:
                # Every rank reaches the end before any tears the group down: a rank that destroyed
                # it while another was still in its last collective could abort the other at exit.
                # (Not after an error: a rank that died would leave the others waiting here.)
                dist.barrier()
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# Entry point


def _given_options(options: dict) -> dict:
    """The options the user gave: None-valued ones count as not given."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = set(given) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise CharlstmError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    return given


def _run_dir(given: dict) -> Path:
    data = given.get("data", TrainConfig.data)
    return Path(given.get("out") or default_run_dir(data, given.get("model", TrainConfig.model)))


def fresh_config(given: dict, run_dir: Path) -> TrainConfig:
    """A new run's config: TrainConfig defaults overridden by the options. Reads and writes nothing."""
    config = TrainConfig(**given)
    config.out = str(run_dir)
    config.validate()
    config.data = os.path.abspath(config.data)  # so `--resume` finds it from any folder
    return config


def resumed_config(given: dict, run_dir: Path) -> tuple[TrainConfig, dict]:
    """--resume: the run's saved config and checkpoint.

    Only the budget, logging and backend options may change (see RESUMABLE_OVERRIDES); any other
    option given with a different value is an error.
    """
    path = checkpoint_to_resume(run_dir)
    payload = load_checkpoint(path)
    check_resumable(payload, path)
    saved = payload["train_config"]
    config = TrainConfig(**{k: saved[k] for k in saved if k in TrainConfig.__dataclass_fields__})
    for key, value in given.items():
        if key == "out":
            continue
        if key in RESUMABLE_OVERRIDES:
            setattr(config, key, value)
        elif value != getattr(config, key):
            raise CharlstmError(
                f"--{key.replace('_', '-')} {value} differs from the run's {getattr(config, key)}; a resumed run keeps "
                f"its config (only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE_OVERRIDES)} may change)"
            )
    if any(k in given for k in ("steps", "epochs", "minutes")):
        # A new budget replaces the old one entirely.
        for k in ("steps", "epochs", "minutes"):
            if k not in given:
                setattr(config, k, None)
    if "data" not in given:
        config.data = str(locate_recorded_dataset(config.data, path))  # older runs recorded a relative path
    config.out = str(run_dir)
    config.validate()
    return config, payload


def finetune_options(options: dict) -> tuple[dict, InitSource, str | None]:
    """--init-from: the shape comes from the source model, and the learning rate and warm-up default
    to values for a model that already knows code. Returns the options, the source, and a note on
    the defaults used (None when the user gave both)."""
    given = {k: v for k, v in options.items() if v is not None}
    source = load_init_source(given["init_from"])
    check_shape_options(given, source)
    mc = source.model_config
    shape = dict(zip(SHAPE_OPTIONS, (mc.kind, mc.layers, mc.hidden, mc.embed)))
    defaults = {k: v for k, v in (("lr", FINETUNE_LR), ("warmup_steps", FINETUNE_WARMUP_STEPS)) if k not in given}
    note = None
    if defaults:
        note = "fine-tuning defaults: " + ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in defaults.items())
    return {**options, **shape, **defaults}, source, note


def train(options: dict, resume: bool = False, force: bool = False, stop_after: int | None = None) -> dict:
    """`charlstm train`: set up (or resume) a run from CLI-style options, train it, return the summary."""
    source = note = None
    if options.get("init_from") is not None and not resume:
        options, source, note = finetune_options(options)
    given = _given_options(options)
    run_dir = _run_dir(given)
    if resume and not run_dir.is_dir():
        raise CharlstmError(f"nothing to resume: {run_dir} not found (pass --out RUN, or start a run without --resume)")
    config = None if resume else fresh_config(given, run_dir)  # nonsense options fail before the folder is made
    with own_run_dir(run_dir):
        payload = None
        if resume:
            config, payload = resumed_config(given, run_dir)
        if config.steps is None and config.epochs is None and config.minutes is None:
            config.epochs = 1.0  # no budget given: one pass over the training split
        trainer = Trainer(config, run_dir, resume_payload=payload, force=force, init_source=source,
                          finetune_defaults=note)
        try:
            summary = trainer.run(stop_after=stop_after)
        except BaseException:
            trainer.close()
            raise
        trainer.close(finished=True)
        return summary
