"""`train --tensorboard DIR`: the run's metrics, configuration and samples as TensorBoard events.

Written through `torch.utils.tensorboard` to DIR/<run folder's name>, so `tensorboard --logdir DIR`
shows each run under its own name. Every metrics.jsonl record becomes scalars at its step (the same
numbers, stored as TensorBoard's float32); each validation adds a short sample drawn from the
model as text; the configuration is logged as hyperparameters. A resumed run opens the writer
with `purge_step` one past its checkpoint's step: TensorBoard's reader then drops what the first
session logged after that checkpoint, as metrics.jsonl is cut back, so no step appears twice.

The `tensorboard` package is an optional extra (`pip install 'charlstm[tensorboard]'`).
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from ..core.errors import CharlstmError, first_line, refuse_empty
from ..core.events import Metrics

EXTRA = "charlstm[tensorboard]"
# metrics.jsonl key → TensorBoard tag. Train and validation bpc share a section, so they sit side by side.
TAGS = {
    "bpc": "bpc/train",
    "val_bpc": "bpc/val",
    "loss": "loss/train",
    "lr": "optim/lr",
    "grad_norm": "optim/grad_norm",
    "skipped_steps": "optim/skipped_fp16_steps",
    "chars_per_sec": "speed/chars_per_sec",
    "epoch": "data/epoch",
}
SAMPLE_CHARS = 240  # characters of the text sample drawn at each validation
SAMPLE_TEMPERATURE = 0.8


def check_tensorboard(log_root: str) -> None:
    """Fail in one line, before any work, when the extra is missing or DIR cannot be a folder."""
    refuse_empty(log_root, "--tensorboard", "a folder for TensorBoard's event files")
    if os.path.lexists(log_root) and not os.path.isdir(log_root):
        raise CharlstmError(f"--tensorboard {log_root} exists and is not a folder")
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise CharlstmError(
            f"--tensorboard needs the tensorboard package: pip install '{EXTRA}' ({first_line(exc)})"
        ) from None


def run_log_dir(log_root: str | Path, run_dir: Path) -> Path:
    """DIR/<run folder's name>: one TensorBoard run per charlstm run."""
    return Path(log_root) / (Path(run_dir).resolve().name or "run")


@contextmanager
def tensorboard_log(trainer, log_root: str | None):
    """Log `trainer`'s records to TensorBoard while the block runs (rank 0 only; nothing without DIR)."""
    if log_root is None or not trainer.main:
        yield None
        return
    log = TensorBoardLog(trainer, run_log_dir(log_root, trainer.run_dir))
    trainer.listeners.append(log)
    try:
        yield log
    finally:
        trainer.listeners.remove(log)
        log.close()


class TensorBoardLog:
    """A listener of the Trainer's events: logs each metrics record (events.Metrics) as it is written."""

    def __init__(self, trainer, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.trainer = trainer
        self.log_dir = log_dir
        # Resuming at step S: events the first session wrote after S are dropped on reading.
        purge = trainer.step + 1 if trainer.step > 0 else None
        try:
            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge)
        except OSError as exc:
            raise CharlstmError(f"could not write {log_dir}: {exc.strerror or exc}") from None
        self._hparams()

    def __call__(self, event) -> None:
        if not isinstance(event, Metrics):
            return
        record = event.record
        step = int(record["step"])
        for key, tag in TAGS.items():
            value = record.get(key)
            if isinstance(value, (int, float)):
                self.writer.add_scalar(tag, value, step)
        if "val_bpc" in record:
            self.writer.add_text("sample", as_markdown_code(self.sample(step)), step)
        self.writer.flush()  # each record is on disk for a TensorBoard watching the run

    def sample(self, step: int) -> str:
        """A short sample from a copy of the model: the training model's mode, weights and RNG are untouched."""
        from ..sampling.sample import Sampler, SampleSettings

        t = self.trainer
        sampler = Sampler(copy.deepcopy(t.raw_model), t.vocab, t.device, precision="fp32", graphs="eager")
        settings = SampleSettings(length=SAMPLE_CHARS, temperature=SAMPLE_TEMPERATURE, seed=step)
        return sampler.sample_texts(settings)[0]

    def _hparams(self) -> None:
        """The run's configuration as hyperparameters, beside its validation and training bpc."""
        from torch.utils.tensorboard.summary import hparams

        t = self.trainer
        values = {
            **asdict(t.cfg),
            "parameters": t.raw_model.num_parameters(),
            "precision_used": t.precision.name,
            "device_used": str(t.device),
            "world_size": t.world,
        }
        values.pop("chosen", None)
        # TensorBoard takes numbers, strings and booleans only.
        clean = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in values.items()}
        for summary in hparams(clean, {TAGS["val_bpc"]: 0.0, TAGS["bpc"]: 0.0}):
            self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.close()


def as_markdown_code(text: str) -> str:
    """TensorBoard renders text as Markdown: an indented block keeps code's spacing and symbols."""
    text = text.replace("\x1c", "\n── new file ──\n")  # the document separator
    return "\n".join("    " + line for line in text.split("\n"))
