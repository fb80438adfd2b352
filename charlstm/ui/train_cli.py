"""`charlstm train`: its options, and the library call they make."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from ..core.config import TrainConfig as _TC  # its defaults are shown in the help
from .guard import err, user_errors

_TRAIN_OPTIONS = frozenset(f.name for f in dataclasses.fields(_TC))  # the parameters that become a TrainConfig
_DATA, _MODEL, _OPTIM = "Data and output", "Model", "Optimisation"
_RUN, _BACKEND = "Logging and checkpoints", "Backend"

Data = Annotated[str | None, typer.Option(help=f"Ingested dataset folder (default: {_TC.data})", rich_help_panel=_DATA)]

Out = Annotated[
    str | None, typer.Option(help="Run folder (default: checkpoints/<dataset>-<model>)", rich_help_panel=_DATA)
]

Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help=(
            "Continue the run in --out from its latest.pt, exactly where it stopped. It keeps its config: only the "
            "budget (--steps/--epochs/--minutes: they replace the old budget, and the learning rate decays from "
            "where it stood over the new length), --eval-every, --save-every, --log-every, --precision, --device, "
            "--threads and --data (same vocabulary) may be given again; other options that differ are an error."
        ),
        rich_help_panel=_DATA,
    ),
]

Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Start over in a run folder that already holds a run (its checkpoints are deleted).",
        rich_help_panel=_DATA,
    ),
]

NewData = Annotated[
    bool,
    typer.Option(
        "--new-data",
        help=(
            "With --resume: continue on data other than the run's (ingested again): exact resumption and the "
            "validation split are then the new data's."
        ),
        rich_help_panel=_DATA,
    ),
]

InitFrom = Annotated[
    str | None,
    typer.Option(
        help=(
            "Fine-tune: start from this trained model (a checkpoint, a run folder, or pretrained-python, the shipped "
            "model). Its shape is kept (shape options are then an error if they differ); characters both know keep "
            "their weights, characters new to it start improbable; --lr and --warmup-steps default to 1e-3 and 50, "
            "--dropout to the source's."
        ),
        rich_help_panel=_MODEL,
    ),
]

Model = Annotated[
    str | None,
    typer.Option(help=f"Recurrent cell: lstm, gru or rnn (tanh) (default: {_TC.model})", rich_help_panel=_MODEL),
]

Layers = Annotated[
    int | None, typer.Option(help=f"Stacked recurrent layers (default: {_TC.layers})", rich_help_panel=_MODEL)
]

Hidden = Annotated[int | None, typer.Option(help=f"Units per layer (default: {_TC.hidden})", rich_help_panel=_MODEL)]

Embed = Annotated[
    int | None, typer.Option(help=f"Character embedding width (default: {_TC.embed})", rich_help_panel=_MODEL)
]

Dropout = Annotated[
    float | None,
    typer.Option(
        help=(
            "Dropout between layers and before the head (default: none within one pass over the corpus; beyond, up to "
            "0.3 as the passes × parameters per training character grow; printed with its reason)"
        ),
        rich_help_panel=_MODEL,
    ),
]

ForgetBias = Annotated[
    float | None,
    typer.Option(
        help="LSTM forget-gate bias at initialisation, e.g. 1 as torch-rnn (default: PyTorch's init)",
        rich_help_panel=_MODEL,
    ),
]

BatchSize = Annotated[
    int | None,
    typer.Option(
        help=(
            "Lanes: contiguous streams through the corpus, trained side by side (split across processes under "
            f"torchrun) (default: {_TC.batch_size} on a CPU, 256 per GPU; fewer when the corpus is short)"
        ),
        rich_help_panel=_OPTIM,
    ),
]

SeqLen = Annotated[
    int | None,
    typer.Option(
        help=(
            "Characters back-propagated through per step; the hidden state carries across steps "
            f"(default: {_TC.seq_len})"
        ),
        rich_help_panel=_OPTIM,
    ),
]

Lr = Annotated[
    float | None,
    typer.Option(
        help=(
            f"Peak AdamW learning rate (linear warm-up, held, cosine decay at the end) (default: {_TC.lr}, × "
            "√(batch/64) above 64 lanes, at most 4e-3)"
        ),
        rich_help_panel=_OPTIM,
    ),
]

MinLrRatio = Annotated[
    float | None, typer.Option(help=f"Decay ends at lr × this (default: {_TC.min_lr_ratio})", rich_help_panel=_OPTIM)
]

DecayFraction = Annotated[
    float | None,
    typer.Option(
        help=(
            "The peak rate is held, then decays over this last share of the run (1: cosine over all of it) (default: "
            f"{_TC.decay_fraction})"
        ),
        rich_help_panel=_OPTIM,
    ),
]

WarmupSteps = Annotated[
    int | None,
    typer.Option(
        help=f"Linear warm-up steps (at most a twentieth of a run of known length) (default: {_TC.warmup_steps})",
        rich_help_panel=_OPTIM,
    ),
]

WeightDecay = Annotated[
    float | None,
    typer.Option(help=f"AdamW weight decay on weight matrices (default: {_TC.weight_decay})", rich_help_panel=_OPTIM),
]

GradClip = Annotated[
    float | None,
    typer.Option(
        help=f"Clip the global gradient norm to this (0: off) (default: {_TC.grad_clip})", rich_help_panel=_OPTIM
    ),
]

Steps = Annotated[
    int | None,
    typer.Option(help="Stop after this many steps in all; also the schedule's length.", rich_help_panel=_OPTIM),
]

Epochs = Annotated[
    float | None,
    typer.Option(
        help="Stop after this many passes over the training split (default: 1 when no budget is given)",
        rich_help_panel=_OPTIM,
    ),
]

Minutes = Annotated[
    float | None,
    typer.Option(
        help=(
            "Stop after this many minutes of this invocation. Alone, the rate decays over the last --decay-fraction "
            "of the time, over the steps the speed so far allows."
        ),
        rich_help_panel=_OPTIM,
    ),
]

Seed = Annotated[
    int | None,
    typer.Option(help=f"Random seed (initialisation, dropout) (default: {_TC.seed})", rich_help_panel=_OPTIM),
]

EvalEvery = Annotated[
    int | None,
    typer.Option(
        help=f"Steps between validations over the whole val split (0: only at the end) (default: {_TC.eval_every})",
        rich_help_panel=_RUN,
    ),
]

Patience = Annotated[
    int | None,
    typer.Option(
        help=(
            "Stop after this many validations in a row without a new best validation bpc (best.pt keeps the best). "
            "Off by default."
        ),
        rich_help_panel=_RUN,
    ),
]

SaveEvery = Annotated[
    int | None,
    typer.Option(
        help=f"Steps between saves of latest.pt (0: only at the end) (default: {_TC.save_every})", rich_help_panel=_RUN
    ),
]

LogEvery = Annotated[
    int | None,
    typer.Option(help=f"Steps between lines of metrics.jsonl (default: {_TC.log_every})", rich_help_panel=_RUN),
]

Precision = Annotated[
    str | None,
    typer.Option(
        help=(
            "auto, bf16, fp16 or fp32. auto: on a GPU, mixed precision only where it was measured faster for this "
            "hidden size (fp32 elsewhere; the run log says which measurement); on a CPU bf16 where it has native "
            "bf16, else fp32 (default: auto)"
        ),
        rich_help_panel=_BACKEND,
    ),
]

Device = Annotated[str | None, typer.Option(help="auto, cuda, mps or cpu (default: auto)", rich_help_panel=_BACKEND)]

Threads = Annotated[
    int | None, typer.Option(help="CPU threads (default: the cores available)", rich_help_panel=_BACKEND)
]

JsonOutput = Annotated[
    bool, typer.Option("--json", help="Print a JSON summary on stdout at the end.", rich_help_panel=_RUN)
]

Tensorboard = Annotated[
    str | None,
    typer.Option(
        "--tensorboard",
        metavar="DIR",
        help=(
            "Also log to TensorBoard in DIR/<run name>: scalars, hyperparameters, a sample at each validation (needs "
            "charlstm[tensorboard]; view with `tensorboard --logdir DIR`)."
        ),
        rich_help_panel=_RUN,
        show_default=False,
    ),
]


@user_errors
def train_command(
    data: Data = None,
    out: Out = None,
    resume: Resume = False,
    force: Force = False,
    new_data: NewData = False,
    init_from: InitFrom = None,
    model: Model = None,
    layers: Layers = None,
    hidden: Hidden = None,
    embed: Embed = None,
    dropout: Dropout = None,
    forget_bias: ForgetBias = None,
    batch_size: BatchSize = None,
    seq_len: SeqLen = None,
    lr: Lr = None,
    min_lr_ratio: MinLrRatio = None,
    decay_fraction: DecayFraction = None,
    warmup_steps: WarmupSteps = None,
    weight_decay: WeightDecay = None,
    grad_clip: GradClip = None,
    steps: Steps = None,
    epochs: Epochs = None,
    minutes: Minutes = None,
    seed: Seed = None,
    eval_every: EvalEvery = None,
    patience: Patience = None,
    save_every: SaveEvery = None,
    log_every: LogEvery = None,
    precision: Precision = None,
    device: Device = None,
    threads: Threads = None,
    json_output: JsonOutput = False,
    tensorboard: Tensorboard = None,
) -> None:
    """Train a character-level LSTM (or GRU/RNN) on an ingested dataset.

    Stateful truncated BPTT over memory-mapped lanes, mixed precision, exact --resume; multi-GPU with
    `torchrun --nproc-per-node N -m charlstm train ...`.
    """
    options = {k: v for k, v in locals().items() if k in _TRAIN_OPTIONS}

    from .train_command import run_training

    run_training(
        options,
        resume=resume,
        force=force,
        tensorboard=tensorboard,
        new_data=new_data,
        json_output=json_output,
        err=err,
    )
