"""`charlstm train`: the options become a run's config, then a Trainer runs it (`train()`).

A new run's config is decided in one place, `fresh_config`: TrainConfig's defaults, with
--init-from the source model's shape and the fine-tuning defaults, then batch, learning rate and
dropout fitted to the device and the corpus (defaults.py) where not given, and over them the
options given. A resumed run keeps the config it was saved with: `resumed_config` lets only the budget,
logging and backend options change.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..core.backend import choose_precision, resolve_device, training_memory
from ..core.checkpoint import load_checkpoint
from ..core.config import TrainConfig
from ..core.distributed import distributed_layout
from ..core.errors import CharlstmError, refuse_empty, shown_path
from ..core.events import Listener, Message, ignore
from ..corpus.dataset import check_same_data, load_dataset, locate_recorded_dataset, reading
from .defaults import Facts, choose_defaults
from .finetune import (
    FINETUNE_LR,
    FINETUNE_WARMUP_STEPS,
    SHAPE_OPTIONS,
    InitSource,
    check_shape_options,
    load_init_source,
)
from .runfolder import check_resumable, checkpoint_to_resume, own_run_dir, write_run_summary
from .tensorboard_log import check_tensorboard, tensorboard_log
from .train import Trainer

# Options that may change when a run is resumed: the budget and how it is logged and run.
# Everything else (model shape, data layout, optimiser) is the run's and must stay as it was.
RESUMABLE_OVERRIDES = (
    "steps",
    "epochs",
    "minutes",
    "patience",
    "eval_every",
    "save_every",
    "log_every",
    "precision",
    "device",
    "threads",
    "data",
)
BUDGET = ("steps", "epochs", "minutes")


def default_run_dir(data: str, model: str) -> Path:
    return Path("checkpoints") / f"{Path(data).name}-{model}"


@dataclass
class NewRun:
    config: TrainConfig
    init_source: InitSource | None = None  # --init-from: the model it starts from
    defaults_note: str | None = None  # which defaults were chosen for it, for the announcement


def given_options(options: dict) -> dict:
    """The options the user gave: None-valued ones count as not given."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = set(given) - ({f.name for f in fields(TrainConfig)} - {"chosen"})  # chosen: recorded, never given
    if unknown:
        raise CharlstmError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    return given


def run_dir_of(given: dict) -> Path:
    data = given.get("data", TrainConfig.data)
    return Path(given.get("out") or default_run_dir(data, given.get("model", TrainConfig.model)))


def fresh_config(options: dict) -> NewRun:
    """A new run's config, the one place its defaults are decided: TrainConfig's, then (fine-tuning)
    the source model's shape and `finetune_options`' learning rate, warm-up and dropout, then the
    options given, then (defaults.py) batch, learning rate and dropout fitted to the device and the
    corpus for those still not given; no budget means one epoch. Reads the dataset's meta.json and
    the source model at most; writes nothing."""
    source = note = None
    if options.get("init_from") is not None:
        options, source, note = finetune_options(options)
    given = given_options(options)
    config = TrainConfig(**given)
    config.out = str(run_dir_of(given))
    config.validate()
    chosen = choose_defaults(given, facts_for(config))
    if chosen.values:
        config = replace(config, **chosen.values, chosen=chosen.reasons)
    config.data = os.path.abspath(config.data)  # so `--resume` finds it from any folder
    _default_budget(config)
    return NewRun(config, source, note)


def facts_for(config: TrainConfig) -> Facts:
    """What the device- and corpus-aware defaults depend on: the device, the processes, the corpus
    size, the model's size and (on a CPU) whether it trains in bf16. Reads the dataset's meta.json."""
    dataset = load_dataset(config.data)
    device = resolve_device(config.device)
    mc = config.model_config(len(dataset.vocab))
    parameters, _ = training_memory(mc, config.batch_size, config.seq_len)  # refuses a model too large to build
    reduced = device.type == "cpu" and choose_precision(config.precision, device, kind=config.model).name == "bf16"
    return Facts(
        device=device.type,
        world=distributed_layout()[1],
        train_chars=int(dataset.meta.get("train_chars", 0)),
        parameters=parameters,
        vocab=len(dataset.vocab),
        layers=config.layers,
        hidden=config.hidden,
        reduced_precision=reduced,
    )


def finetune_options(options: dict) -> tuple[dict, InitSource, str | None]:
    """--init-from: the shape and dropout come from the source model, and the learning rate and
    warm-up default to values for a model that already knows code. Returns the options, the source, and a note on
    the defaults used (None when the user gave them all)."""
    given = {k: v for k, v in options.items() if v is not None}
    source = load_init_source(given["init_from"])
    check_shape_options(given, source)
    mc = source.model_config
    shape = dict(zip(SHAPE_OPTIONS, (mc.kind, mc.layers, mc.hidden, mc.embed), strict=True))
    # Dropout stays the source model's: one trained without it fine-tunes worse with it (measured on
    # rich's source, 150 steps from the shipped model: 1.418 bpc without, 1.569 with 0.2).
    defaults = {
        k: v
        for k, v in (("lr", FINETUNE_LR), ("warmup_steps", FINETUNE_WARMUP_STEPS), ("dropout", mc.dropout))
        if k not in given
    }
    note = None
    if defaults:
        note = "fine-tuning defaults: " + ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in defaults.items())
    return {**options, **shape, **defaults}, source, note


def resumed_config(
    given: dict, run_dir: Path, new_data: bool = False, on_event: Listener = ignore
) -> tuple[TrainConfig, dict]:
    """--resume: the run's saved config and checkpoint.

    Only the budget, logging and backend options may change (see RESUMABLE_OVERRIDES); any other
    option given with a different value is an error. The data must be what the run recorded
    (its content hash), unless `new_data` (--new-data: the difference is a warning to `on_event`).
    """
    path = checkpoint_to_resume(run_dir, on_event)
    payload = load_checkpoint(path)
    check_resumable(payload, path)
    # Runs saved before these options existed: forget gates opened at 1, cosine decay over the whole run.
    saved = {"forget_bias": 1.0, "decay_fraction": 1.0, **payload["train_config"]}
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
    if any(k in given for k in BUDGET):
        # A new budget replaces the old one entirely.
        for k in BUDGET:
            if k not in given:
                setattr(config, k, None)
    if "data" not in given:
        config.data = str(locate_recorded_dataset(config.data, path))  # older runs recorded a relative path
    config.data = os.path.abspath(config.data)  # as a new run records it: found again from any folder
    config.out = str(run_dir)
    config.validate()
    dataset = load_dataset(config.data)
    warning = None
    if set(dataset.vocab.symbols) <= set(payload["vocab"]):  # else training_data refuses the other vocabulary
        warning = check_same_data(dataset, payload.get("dataset"), path, new_data)
    if warning:
        on_event(Message(warning, warning=True))
    _default_budget(config)
    return config, payload


def _default_budget(config: TrainConfig) -> None:
    if all(getattr(config, k) is None for k in BUDGET):
        config.epochs = 1.0  # no budget given: one pass over the training split


def train(
    options: dict,
    resume: bool = False,
    force: bool = False,
    stop_after: int | None = None,
    tensorboard: str | None = None,
    new_data: bool = False,
    on_event: Listener | None = None,
) -> dict:
    """`charlstm train`: set up (or resume) a run from CLI-style options, train it, return the summary.

    `stop_after` pauses after that many steps (the run is not finished); `tensorboard` also logs
    to TENSORBOARD/<run folder's name> (see tensorboard_log.py); `new_data` resumes on data other
    than the run's (see check_same_data); `on_event` hears the run's messages and progress
    (events.py; the Trainer's on rank 0 only).
    """
    if new_data and not resume:
        raise CharlstmError("--new-data goes with --resume (a new run records the data it reads)")
    if tensorboard is not None:
        check_tensorboard(tensorboard)  # before any work: a missing extra is a one-line error
    if resume and force:
        raise CharlstmError("--resume continues the run, --force starts it over: give one of them")
    for option, what in (("data", "a dataset folder"), ("out", "a run folder")):  # not silently the default
        refuse_empty(options.get(option), f"--{option}", f"{what}, or leave it out for the default")
    if resume:
        given = given_options(options)
        run_dir = run_dir_of(given)
        if not run_dir.is_dir():
            raise CharlstmError(
                f"nothing to resume: {shown_path(run_dir)} not found (pass --out RUN, or start a run without --resume)"
            )
    else:
        new = fresh_config(options)  # nonsense options fail before the folder is made
        run_dir = Path(new.config.out)
    tell = on_event or ignore
    with own_run_dir(run_dir), ExitStack() as held:
        if resume:
            config, payload = resumed_config(given, run_dir, new_data, tell)
            held.enter_context(reading(config.data))  # `ingest --force` may not replace it while we train
            trainer = Trainer(config, run_dir, resume_payload=payload, force=force, on_event=on_event)
        else:
            held.enter_context(reading(new.config.data))
            trainer = Trainer(
                new.config,
                run_dir,
                force=force,
                init_source=new.init_source,
                finetune_defaults=new.defaults_note,
                on_event=on_event,
            )
        try:
            with tensorboard_log(trainer, tensorboard):
                summary = trainer.run(stop_after=stop_after)
            if stop_after is None and trainer.main:
                write_run_summary(run_dir, summary)  # `charlstm runs` shows it finished
        except BaseException:
            trainer.close()
            raise
        trainer.close(finished=True)
        return summary
