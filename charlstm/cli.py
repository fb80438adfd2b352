"""The command line: each command wires its options to a library function, nothing more.

Domain errors (CharlstmError) become one red line on stderr and exit code 1.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from charlstm import __version__
from charlstm.config import WEIGHT_PRECISIONS, Preset
from charlstm.config import TrainConfig as _TC  # its defaults are shown in the help
from charlstm.errors import CharlstmError, one_line_text, os_error_message

# Each command imports its implementation when it runs: they import torch (seconds), which
# `charlstm --help` and a mistyped option do not need.

app = typer.Typer(
    name="charlstm",
    help="Character-level LSTMs that learn to write code, and the tools to look inside them.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
# Messages, tables and progress go to stderr; generated text and --json go to stdout.
err = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {escape(one_line_text(message))}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def user_errors(command):
    """Turn domain errors into a one-line message and a non-zero exit, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            from charlstm.userio import guarded_stdout  # imports torch: inside, so Ctrl-C meanwhile is caught

            with guarded_stdout():  # a full stdout (/dev/full, a full disk) is a CharlstmError too
                return command(*args, **kwargs)
        except CharlstmError as exc:
            raise fail(str(exc)) from None
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
            return None
        except OSError as exc:  # a path the OS refuses wherever it is first touched (ENAMETOOLONG, EACCES)
            raise fail(os_error_message(exc)) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(code=130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"charlstm {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
) -> None:
    """Character-level LSTMs that learn to write code, and the tools to look inside them."""


# Commands, one section each, in pipeline order.


# ----- ingest ------------------------------------------------------------------------------------


@app.command("ingest", rich_help_panel="Pipeline")
@user_errors
def ingest_command(
    sources: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Folders, single files, .zip/.tar/.tar.gz archives or git URLs; several make one dataset. "
            "None: the running Python's standard library (--preset python-stdlib).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Dataset name: it is written to DATA_DIR/NAME/. Default: the preset's name.", rich_help_panel="Output")] = None,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Folder holding datasets.", rich_help_panel="Output")] = Path("data"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing dataset of that name.", rich_help_panel="Output")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout instead of a table.", rich_help_panel="Output")] = False,
    preset: Annotated[Optional[Preset], typer.Option("--preset", help="python-stdlib: this Python's standard library without its tests (.py). jdk: an installed JDK's src.zip (.java).", rich_help_panel="Sources", show_default=False)] = None,
    ext: Annotated[Optional[list[str]], typer.Option("--ext", help="Keep files with this extension (repeatable or comma-separated; .java or java). Default: the preset's, else common source-code extensions.", rich_help_panel="Filtering", show_default=False)] = None,
    max_file_bytes: Annotated[int, typer.Option("--max-file-bytes", help="Skip files larger than this (generated code, data tables).", rich_help_panel="Filtering")] = 1_000_000,
    min_char_count: Annotated[int, typer.Option("--min-char-count", help="Characters seen fewer times map to the unknown symbol. 1 keeps every character (lossless).", rich_help_panel="Vocabulary and split")] = 1,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of characters held out for validation, as whole files.", rich_help_panel="Vocabulary and split")] = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="Chooses which files go to validation.", rich_help_panel="Vocabulary and split")] = 0,
) -> None:
    """Turn source code into a dataset: DATA_DIR/NAME/ with train.bin, val.bin and meta.json.

    Binary, empty, duplicate, oversized and non-UTF-8 files are skipped and counted by reason, as are
    VCS, vendored and build folders; files are split into train and validation whole.
    """
    from charlstm.ingest import ingest
    from charlstm.render import ingest_table

    report = ingest(
        sources,
        name,
        preset=preset.value if preset is not None else None,
        extensions=ext,
        data_dir=data_dir,
        max_file_bytes=max_file_bytes,
        min_char_count=min_char_count,
        val_fraction=val_fraction,
        seed=seed,
        force=force,
        progress=True,  # on stderr, and only on a terminal
    )
    for warning in report["warnings"]:
        err.print(f"[yellow]warning:[/yellow] {escape(one_line_text(warning))}", highlight=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(report))
    else:
        err.print(ingest_table(report))


# ----- train and eval --------------------------------------------------------------------------


_TRAIN_OPTIONS = frozenset(f.name for f in dataclasses.fields(_TC))  # the parameters that become a TrainConfig
_DATA, _MODEL, _OPTIM, _RUN, _BACKEND = "Data and output", "Model", "Optimisation", "Logging and checkpoints", "Backend"


@app.command("train", no_args_is_help=False, rich_help_panel="Pipeline")
@user_errors
def train_command(
    data: Annotated[Optional[str], typer.Option(help=f"Ingested dataset folder (default: {_TC.data})", rich_help_panel=_DATA)] = None,
    out: Annotated[Optional[str], typer.Option(help="Run folder (default: checkpoints/<dataset>-<model>)", rich_help_panel=_DATA)] = None,
    resume: Annotated[bool, typer.Option("--resume", help=(
        "Continue the run in --out from its latest.pt, exactly where it stopped. It keeps its config: only the budget "
        "(--steps/--epochs/--minutes: they replace the old budget, and the learning rate decays from where it stood "
        "over the new length), --eval-every, --save-every, --log-every, --precision, --device, --threads and --data "
        "(same vocabulary) may be given again; other options that differ are an error."
    ), rich_help_panel=_DATA)] = False,
    force: Annotated[bool, typer.Option("--force", help="Start over in a run folder that already holds a run (its checkpoints are deleted).", rich_help_panel=_DATA)] = False,
    new_data: Annotated[bool, typer.Option("--new-data", help="With --resume: continue on data other than the run's (ingested again): exact resumption and the validation split are then the new data's.", rich_help_panel=_DATA)] = False,
    init_from: Annotated[Optional[str], typer.Option(help=(
        "Fine-tune: start from this trained model (a checkpoint, a run folder, or pretrained-python, the shipped "
        "model). Its shape is kept (shape options are then an error if they differ); characters both know keep their "
        "weights, characters new to it start improbable; --lr and --warmup-steps default to 1e-3 and 50, --dropout to the source's."
    ), rich_help_panel=_MODEL)] = None,
    model: Annotated[Optional[str], typer.Option(help=f"Recurrent cell: lstm, gru or rnn (tanh) (default: {_TC.model})", rich_help_panel=_MODEL)] = None,
    layers: Annotated[Optional[int], typer.Option(help=f"Stacked recurrent layers (default: {_TC.layers})", rich_help_panel=_MODEL)] = None,
    hidden: Annotated[Optional[int], typer.Option(help=f"Units per layer (default: {_TC.hidden})", rich_help_panel=_MODEL)] = None,
    embed: Annotated[Optional[int], typer.Option(help=f"Character embedding width (default: {_TC.embed})", rich_help_panel=_MODEL)] = None,
    dropout: Annotated[Optional[float], typer.Option(help=(
        "Dropout between layers and before the head (default: none within one pass over the corpus; beyond, up to "
        "0.3 as the passes × parameters per training character grow; printed with its reason)"
    ), rich_help_panel=_MODEL)] = None,
    forget_bias: Annotated[Optional[float], typer.Option(help="LSTM forget-gate bias at initialisation, e.g. 1 as torch-rnn (default: PyTorch's init)", rich_help_panel=_MODEL)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=(
        f"Lanes: contiguous streams through the corpus, trained side by side (split across processes under torchrun) "
        f"(default: {_TC.batch_size} on a CPU, 256 per GPU; fewer when the corpus is short)"
    ), rich_help_panel=_OPTIM)] = None,
    seq_len: Annotated[Optional[int], typer.Option(help=f"Characters back-propagated through per step; the hidden state carries across steps (default: {_TC.seq_len})", rich_help_panel=_OPTIM)] = None,
    lr: Annotated[Optional[float], typer.Option(help=f"Peak AdamW learning rate (linear warm-up, held, cosine decay at the end) (default: {_TC.lr}, × √(batch/64) above 64 lanes, at most 4e-3)", rich_help_panel=_OPTIM)] = None,
    min_lr_ratio: Annotated[Optional[float], typer.Option(help=f"Decay ends at lr × this (default: {_TC.min_lr_ratio})", rich_help_panel=_OPTIM)] = None,
    decay_fraction: Annotated[Optional[float], typer.Option(help=f"The peak rate is held, then decays over this last share of the run (1: cosine over all of it) (default: {_TC.decay_fraction})", rich_help_panel=_OPTIM)] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(help=f"Linear warm-up steps (at most a twentieth of a run of known length) (default: {_TC.warmup_steps})", rich_help_panel=_OPTIM)] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help=f"AdamW weight decay on weight matrices (default: {_TC.weight_decay})", rich_help_panel=_OPTIM)] = None,
    grad_clip: Annotated[Optional[float], typer.Option(help=f"Clip the global gradient norm to this (0: off) (default: {_TC.grad_clip})", rich_help_panel=_OPTIM)] = None,
    steps: Annotated[Optional[int], typer.Option(help="Stop after this many steps in all; also the schedule's length.", rich_help_panel=_OPTIM)] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Stop after this many passes over the training split (default: 1 when no budget is given)", rich_help_panel=_OPTIM)] = None,
    minutes: Annotated[Optional[float], typer.Option(help="Stop after this many minutes of this invocation. Alone, the rate decays over the last --decay-fraction of the time, over the steps the speed so far allows.", rich_help_panel=_OPTIM)] = None,
    seed: Annotated[Optional[int], typer.Option(help=f"Random seed (initialisation, dropout) (default: {_TC.seed})", rich_help_panel=_OPTIM)] = None,
    eval_every: Annotated[Optional[int], typer.Option(help=f"Steps between validations over the whole val split (0: only at the end) (default: {_TC.eval_every})", rich_help_panel=_RUN)] = None,
    patience: Annotated[Optional[int], typer.Option(help="Stop after this many validations in a row without a new best validation bpc (best.pt keeps the best). Off by default.", rich_help_panel=_RUN)] = None,
    save_every: Annotated[Optional[int], typer.Option(help=f"Steps between saves of latest.pt (0: only at the end) (default: {_TC.save_every})", rich_help_panel=_RUN)] = None,
    log_every: Annotated[Optional[int], typer.Option(help=f"Steps between lines of metrics.jsonl (default: {_TC.log_every})", rich_help_panel=_RUN)] = None,
    precision: Annotated[Optional[str], typer.Option(help=(
        "auto, bf16, fp16 or fp32. auto: on a GPU, mixed precision only where it was measured faster for this hidden "
        "size (fp32 elsewhere; the run log says which measurement); on a CPU bf16 where it has native bf16, else fp32 "
        "(default: auto)"
    ), rich_help_panel=_BACKEND)] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cuda, mps or cpu (default: auto)", rich_help_panel=_BACKEND)] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: the cores available)", rich_help_panel=_BACKEND)] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout at the end.", rich_help_panel=_RUN)] = False,
    tensorboard: Annotated[Optional[str], typer.Option("--tensorboard", metavar="DIR", help="Also log to TensorBoard in DIR/<run name>: scalars, hyperparameters, a sample at each validation (needs charlstm[tensorboard]; view with `tensorboard --logdir DIR`).", rich_help_panel=_RUN, show_default=False)] = None,
) -> None:
    """Train a character-level LSTM (or GRU/RNN) on an ingested dataset.

    Stateful truncated BPTT over memory-mapped lanes, mixed precision, exact --resume; multi-GPU with
    `torchrun --nproc-per-node N -m charlstm train ...`.
    """
    options = {k: v for k, v in locals().items() if k in _TRAIN_OPTIONS}

    from charlstm.stopping import TrainingInterrupted
    from charlstm.train_setup import train

    try:
        summary = train(options, resume=resume, force=force, tensorboard=tensorboard, new_data=new_data)
    except TrainingInterrupted as exc:
        err.print(f"[yellow]{escape(one_line_text(str(exc)))}[/yellow]", highlight=False, soft_wrap=True)
        raise typer.Exit(code=130) from None
    if summary.get("world_size", 1) > 1 and os.environ.get("RANK", "0") != "0":
        return  # only rank 0 reports
    from charlstm.eval_command import syntax_line, training_syntax
    from charlstm.runs_command import report_training  # the 'done' line, and on a terminal the run's curve

    summary["syntax"] = training_syntax(summary["run_dir"])
    report_training(summary, json_output, err)
    if summary["syntax"] is not None and not json_output:
        err.print(syntax_line(summary["syntax"]), highlight=False, soft_wrap=True)


@app.command("runs", rich_help_panel="Pipeline")
@user_errors
def runs_command(
    runs: Annotated[Optional[list[str]], typer.Argument(metavar="[FOLDER | RUN...]", help="A folder of runs (default: checkpoints/); with --plot, the run folders to draw (default: the newest run).", show_default=False)] = None,
    plot: Annotated[bool, typer.Option("--plot", help="Draw training and validation bpc of the runs, overlaid with a legend, in the terminal.", rich_help_panel="Curves")] = False,
    x: Annotated[str, typer.Option("--x", help="The curves' x-axis: steps, chars (characters trained on) or minutes (of training, validation excluded).", rich_help_panel="Curves")] = "steps",
    svg: Annotated[Optional[str], typer.Option("--svg", metavar="FILE", help="Also write the figure as an SVG picture (implies --plot).", rich_help_panel="Curves", show_default=False)] = None,
    html: Annotated[Optional[str], typer.Option("--html", metavar="FILE", help="Also write the figure as an HTML page (implies --plot).", rich_help_panel="Curves", show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows (with --plot: the curves' points) as JSON on stdout.")] = False,
) -> None:
    """List the runs in a folder, oldest first: model, data, steps, best validation bpc, training time, and whether each finished, stopped (with the command that resumes it), is training now (the PID), or is damaged (and how)."""  # noqa: E501
    from charlstm.runs_command import show_runs

    show_runs(runs, plot=plot, x=x, svg=svg, html=html, json_out=json_out, err=err)


@app.command("eval", rich_help_panel="Pipeline")
@user_errors
def eval_command(
    checkpoint: Annotated[Optional[str], typer.Argument(help="Checkpoint file or run folder (default: the newest run under checkpoints/)")] = None,
    data: Annotated[Optional[str], typer.Option(help="Score this dataset's validation split (default: the checkpoint's dataset)")] = None,
    text_file: Annotated[Optional[str], typer.Option(help="Score this text file instead (as one document).")] = None,
    device: Annotated[str, typer.Option(help="auto, cuda, mps or cpu.")] = "auto",
    precision: Annotated[Optional[str], typer.Option(help="auto, bf16, fp16 or fp32 (default: the run's own where it runs here, else auto: as training picks it).", show_default=False)] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help=(
        "Also score the text under dynamic evaluation: the model (a copy) takes an SGD step on each 100-character "
        "segment after scoring it, adapting to the text as it reads. Reported beside the static figure; sequential, "
        "so slower."
    ))] = False,
    dynamic_lr: Annotated[Optional[float], typer.Option("--dynamic-lr", help="SGD learning rate for --dynamic (default: 0.3).", show_default=False)] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (bpc, chars, ...).")] = False,
    per_char: Annotated[bool, typer.Option("--per-char", help=(
        "With --text-file: where is the model surprised? The text coloured by each character's bits (white expected, "
        "red 10 bits or more) and the most surprising characters; with --json, every character's bits and the model's "
        "top 5 guesses. Scored as one stream, every character with the whole file before it."
    ), rich_help_panel="Surprise")] = False,
    html: Annotated[Optional[str], typer.Option("--html", help="With --per-char: also write the coloured text as a self-contained HTML page (hover a character for its bits and top 5); at most 16 MB: a longer text's page shows its start and says so.", rich_help_panel="Surprise")] = None,
    syntax: Annotated[bool, typer.Option("--syntax", help="Instead of bits: draw samples and report the share of their complete top-level units that parse (Python: ast; Java: tree-sitter), with the first errors.", rich_help_panel="Syntax")] = False,
    samples: Annotated[int, typer.Option("--samples", help="With --syntax: samples drawn, as one batch.", rich_help_panel="Syntax")] = 16,
    length: Annotated[int, typer.Option("--length", help="With --syntax: characters per sample.", rich_help_panel="Syntax")] = 2500,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="With --syntax: the sampling temperature.", rich_help_panel="Syntax")] = 0.7,
    prime: Annotated[Optional[str], typer.Option("--prime", help="With --syntax: the prime (default: 'import os\\n\\n\\ndef ' for Python, a class body for Java).", show_default=False, rich_help_panel="Syntax")] = None,
    seed: Annotated[int, typer.Option("--seed", help="With --syntax: the seed (the same seed gives the same samples).", rich_help_panel="Syntax")] = 0,
    draw: Annotated[str, typer.Option("--draw", help="With --syntax: plain, constrain (as sample --constrain) or valid (as sample --valid).", rich_help_panel="Syntax")] = "plain",
) -> None:
    """Score a checkpoint in bits per character on a validation split or any text file (or, with --syntax, how often its code parses)."""
    from charlstm.eval_command import run_syntax_eval
    from charlstm.evaluate import evaluate_checkpoint

    if syntax:
        return run_syntax_eval(checkpoint, err, json_output, device=device, samples=samples, length=length,
                               temperature=temperature, prime=prime, seed=seed, draw=draw, text_options=(data, text_file, per_char, dynamic))  # fmt: skip
    if html is not None and not per_char:
        raise CharlstmError("--html goes with --per-char")
    if per_char:
        from charlstm.eval_command import run_per_char

        if text_file is None or data is not None:
            raise CharlstmError("--per-char scores one file: give --text-file (and no --data)")
        if dynamic:
            raise CharlstmError("--per-char shows the model as it is: drop --dynamic")
        return run_per_char(checkpoint, text_file, html, json_output, err, device=device, precision=precision)
    result = evaluate_checkpoint(checkpoint, data=data, text_file=text_file, device=device, precision=precision,
                                 dynamic=dynamic, dynamic_lr=dynamic_lr)
    from charlstm.eval_command import report_score

    report_score(result, err, json_output)


# ----- sample ------------------------------------------------------------------------------------


@app.command("sample", rich_help_panel="Pipeline")
@user_errors
def sample_command(
    checkpoint: Annotated[
        Optional[str],
        typer.Argument(help="Run folder or checkpoint file. Default: the newest run under checkpoints/, else the shipped model."),
    ] = None,
    length: Annotated[int, typer.Option("--length", "-n", help="Characters to generate per sample.", rich_help_panel="Sampling")] = 2000,
    temperature: Annotated[Optional[float], typer.Option("--temperature", "-t", help="> 0; lower is safer, higher is wilder (default: 0.8).", rich_help_panel="Sampling")] = None,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always take the most likely character (ignores temperature, top-k, top-p).", rich_help_panel="Sampling")] = False,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Draw only among the K most likely characters.", rich_help_panel="Sampling")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Draw only from the most likely characters holding this much probability, in (0, 1].", rich_help_panel="Sampling")] = None,
    prime: Annotated[Optional[str], typer.Option("--prime", "-p", help="Text fed through the model first and printed as the start of each sample.", rich_help_panel="Sampling")] = None,
    prime_file: Annotated[Optional[Path], typer.Option("--prime-file", help="Read the prime from a file.", rich_help_panel="Sampling")] = None,
    stop: Annotated[Optional[str], typer.Option("--stop", help="End a sample once it generates this text (kept). Backslash escapes work: --stop '\\n\\n'.", rich_help_panel="Sampling")] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-N", help="Samples generated together as one batch, printed one after another under a '──── sample i/N ────' line.", rich_help_panel="Sampling")] = 1,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Same seed and device give the same text.", rich_help_panel="Sampling")] = None,
    beam: Annotated[Optional[int], typer.Option("--beam", help=(
        "Beam search of width K instead of drawing: the most likely continuation (log-probability per character), "
        "deterministic, one sample; not with --temperature, --top-k, --top-p, --greedy, --seed or --num-samples. "
        "Streams each character once every beam agrees on it (a short lag), the rest at the end."
    ), rich_help_panel="Sampling")] = None,
    clamp: Annotated[Optional[list[str]], typer.Option("--clamp", metavar="L:N[:cell|hidden]=VALUE", help=(
        "Hold a unit at a value at every step, prime included: L:N[:cell|hidden]=VALUE, layer from 1 and neuron from "
        "0 as inspect-neuron numbers them (default: the cell of an LSTM; clamping it also sets the unit's output to "
        "o·tanh(VALUE)). Repeatable. With --seed, the draws are the same as without it: the text differs only through "
        "the unit."
    ), rich_help_panel="Interventions", show_default=False)] = None,
    ablate: Annotated[Optional[list[str]], typer.Option("--ablate", metavar="L:N", help="Zero a unit at every step (cell and hidden state): L:N. Repeatable.", rich_help_panel="Interventions", show_default=False)] = None,
    watch: Annotated[Optional[str], typer.Option("--watch", metavar="L:N[:hidden|cell]", help=(
        "Colour the sample as it streams by one unit's value after each character: L:N[:hidden|cell] (default "
        "hidden), red negative, blue positive. On a terminal; piped output stays plain. One sample, not with --beam."
    ), rich_help_panel="Interventions", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help=(
        "Also save the samples (plain text, as a pipe receives them) to this file: a regular file is replaced "
        "atomically, a device or FIFO written in place, a symlink followed."
    ), rich_help_panel="Output")] = None,
    no_color: Annotated[bool, typer.Option("--no-color", help="No syntax highlighting on a terminal (piped output never has any).", rich_help_panel="Output")] = False,
    device: Annotated[str, typer.Option("--device", help="auto (a CUDA GPU when present, else the CPU), cpu or cuda. A model trained on either samples on either.", rich_help_panel="Backend")] = "auto",
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads. Default 1: one step is too small to share, and a second thread stalls whenever another process uses the cores.", rich_help_panel="Backend")] = None,
    precision: Annotated[str, typer.Option("--precision", "--dtype", help=(
        f"Engine weights: {'|'.join(WEIGHT_PRECISIONS)}. auto = int8 weights on a CPU with FBGEMM (fastest; "
        f"next-character distributions within a KL of ~0.002 bits of fp32), else fp16, else fp32. fp16: near exact; "
        f"fp32: exact."
    ), rich_help_panel="Backend")] = "auto",
    model: Annotated[Optional[str], typer.Option("--model", help="A shipped model by name (python, java) or a run folder or checkpoint, instead of CHECKPOINT.", show_default=False)] = None,
    constrain: Annotated[bool, typer.Option("--constrain", help="Never draw a character that makes the code lexically impossible (a closer with no opener, a newline in a one-line string, a dedent to a level never opened); past --length, go on until the units close.", rich_help_panel="Syntax")] = False,
    valid: Annotated[bool, typer.Option("--valid", help="Emit only top-level units that parse: a unit (and in Python a line) that cannot is drawn again from its start. Implies --constrain.", rich_help_panel="Syntax")] = False,
    max_tries: Annotated[int, typer.Option("--max-tries", help="With --valid: draws of one unit before it is dropped.", rich_help_panel="Syntax")] = 8,
) -> None:
    """Stream generated code from a trained model, character by character.

    On a terminal each finished line is syntax-highlighted in the corpus's language; piped or redirected, the output is plain text. A new file the model starts shows as a '── new file ──' line; the unknown symbol prints as \ufffd.
    """  # noqa: E501
    from charlstm.checkpoint import resolve_model
    from charlstm.interventions import WATCHABLE, parse_interventions, parse_unit
    from charlstm.sample import SampleSettings, read_prime_file, unescape
    from charlstm.sample_command import run_sampling
    from charlstm.userio import refuse_output_over_input, text_from_argv

    if prime is not None and prime_file is not None:
        raise CharlstmError("give --prime or --prime-file, not both")
    refuse_output_over_input({"-o": out}, {"--prime-file": prime_file})
    prime_text = read_prime_file(prime_file) if prime_file is not None else text_from_argv(prime or "")
    settings = SampleSettings(
        length=length, temperature=temperature, greedy=greedy, top_k=top_k, top_p=top_p, prime=prime_text,
        stop=unescape(text_from_argv(stop)) if stop is not None else None, num_samples=num_samples, seed=seed,
        beam=beam, interventions=parse_interventions(clamp, ablate),
        watch=parse_unit(watch, "--watch", WATCHABLE) if watch is not None else None,
        constrain=constrain or valid, valid=valid, max_tries=max_tries,
    )  # fmt: skip
    settings.validate()
    if model is not None:
        if checkpoint is not None:
            raise CharlstmError("give a CHECKPOINT or --model, not both")
        checkpoint = str(resolve_model(model))
    run_sampling(checkpoint, settings, out=out, color=not no_color, device=device, precision=precision, threads=threads, console=err)


# ----- inspect-neuron ------------------------------------------------------------------------------

@app.command("inspect-neuron", rich_help_panel="Look inside")
@user_errors
def inspect_neuron_command(
    checkpoint: Annotated[Optional[str], typer.Argument(help="Run folder or checkpoint file (default: the newest run, else the shipped model).")] = None,
    layer: Annotated[Optional[int], typer.Option("--layer", "-l", help="Layer, 1-based (1 is nearest the input).", rich_help_panel="Neuron")] = None,
    neuron: Annotated[Optional[int], typer.Option("--neuron", "-n", help="Unit within the layer, 0-based.", rich_help_panel="Neuron")] = None,
    state: Annotated[Optional[str], typer.Option("--state", "-s", help=(
        "Signal to colour by: hidden|cell|input|forget|output|candidate (LSTM), reset|update|candidate|hidden (GRU), "
        "hidden (RNN), or all (default: hidden)."
    ), rich_help_panel="Neuron")] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="Inspect this text.", rich_help_panel="Text")] = None,
    text_file: Annotated[Optional[str], typer.Option("--text-file", help="Inspect this UTF-8 file.", rich_help_panel="Text")] = None,
    from_val: Annotated[Optional[int], typer.Option("--from-val", "--chars", help=(
        "Inspect the first CHARS characters of the checkpoint's validation split (the default text: 1000 characters; "
        "5000 for --find/--stats/--ablate; up to 2000 for --html; the whole split for --top-contexts)."
    ), rich_help_panel="Text")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Dataset folder for --from-val (default: the checkpoint's).", rich_help_panel="Text")] = None,
    max_chars: Annotated[Optional[int], typer.Option("--max-chars", help=(
        "Inspect only the first MAX_CHARS characters of the text (--html pages and --svg pictures have their own "
        "limits; long texts otherwise stream, in bounded memory)."
    ), rich_help_panel="Text")] = None,
    find: Annotated[Optional[str], typer.Option("--find", help="Rank every (layer, neuron, signal) by correlation with a feature: indent, column, string, comment, brackets, spaces, or regex:PATTERN.", rich_help_panel="Discovery")] = None,
    top: Annotated[int, typer.Option("--top", help="How many ranked units --find shows.", rich_help_panel="Discovery")] = 10,
    stats: Annotated[bool, typer.Option("--stats", help="Gate saturation per layer: time fractions < 0.1 and > 0.9.", rich_help_panel="Discovery")] = False,
    top_contexts: Annotated[Optional[int], typer.Option("--top-contexts", help=(
        "With --layer and --neuron (and --state): the K places of the text where the unit is most positive and the K "
        "where it is most negative, coloured, with their positions. Default text: the whole validation split, traced "
        "in chunks."
    ), rich_help_panel="Discovery", show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print --find, --stats, --ablate or --top-contexts results as JSON on stdout.", rich_help_panel="Output")] = False,
    html: Annotated[Optional[str], typer.Option("--html", help="Write a self-contained HTML explorer (every neuron and signal, switchable in the page) to this file; at most 16 MB: a longer text's page shows its start and says so.", rich_help_panel="Output")] = None,
    svg: Annotated[Optional[str], typer.Option("--svg", help="Also save the coloured view of one neuron as an SVG picture.", rich_help_panel="Output")] = None,
    exact: Annotated[bool, typer.Option("--exact", help=(
        "Kept for old scripts: every trace now runs the fused float32 layers, whose values equal training's forward "
        "pass to float32 rounding (before, the default read float16 weights on a CPU)."
    ), rich_help_panel="Output")] = False,
    ablate: Annotated[Optional[list[str]], typer.Option("--ablate", metavar="L:N", help=(
        "Measure what a unit does: bits per character with it zeroed at every step (L:N; repeat to ablate several "
        "together) minus without, overall and per class of character (indentation, strings, comments, brackets, "
        "other), beside random units of the same layer ablated alike. Scored in float32."
    ), rich_help_panel="Causal", show_default=False)] = None,
    causal: Annotated[bool, typer.Option("--causal", help="With --find: ablate each ranked unit and add its effect on bits per character (all characters, and the feature's own) to the table.", rich_help_panel="Causal")] = False,
    controls: Annotated[int, typer.Option("--controls", help="Random control ablations for --ablate and --causal.", rich_help_panel="Causal")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Chooses the control units.", rich_help_panel="Causal")] = 0,
    device: Annotated[str, typer.Option("--device", help=(
        "auto (a CUDA GPU, else MPS, else the CPU), cuda, mps or cpu: where the trace, --find, --ablate/--causal, "
        "--top-contexts and --html run. A model trained on either inspects on either."
    ), rich_help_panel="Backend")] = "auto",
) -> None:
    """Colour text by one neuron's activation, find the neurons that track code, test what they do, or write an HTML explorer.

    One neuron's signal colours each character, red negative and blue positive (--layer, --neuron,
    --state; --svg saves it as a picture); --find ranks every unit by a feature of code (--causal:
    and ablates each); --ablate measures what zeroing units costs; --top-contexts lists where a unit
    peaks across the corpus; --stats measures gate saturation; --html writes the explorer.

    Layers are numbered from 1, neurons from 0, here, in --json and in the HTML explorer.
    """  # noqa: E501
    # The parameters, read before any other local exists: all but the checkpoint are inspect options.
    options = {k: v for k, v in locals().items() if k != "checkpoint"}

    from charlstm.inspect_command import InspectOptions, inspect_neuron
    from charlstm.userio import text_from_argv

    if text is not None:
        options["text"] = text_from_argv(text)
    inspect_neuron(checkpoint, InspectOptions(**options), err=err)


# ----- experiment --------------------------------------------------------------------------------


@app.command("experiment", rich_help_panel="Look inside")
@user_errors
def experiment_command(
    name: Annotated[
        str, typer.Argument(help="counter | selective-counter | state | copy | all (the four, then one table).")
    ],
    seed: Annotated[int, typer.Option(help="Seed for data, initial weights and evaluation prompts.")] = 0,
    steps: Annotated[
        Optional[int], typer.Option(help="Training steps (default: each study's own, about a minute in all).")
    ] = None,
    max_n: Annotated[
        Optional[int], typer.Option(help="Largest N (or length) in the training data, up to 1000; copy needs 2 or more (default 10, as the article).")
    ] = None,
    eval_max_n: Annotated[
        Optional[int], typer.Option(help="Judge every N from 1 to this, up to 1000, and at least --max-n (default: each study's own, past training).")
    ] = None,
    out_dir: Annotated[
        Path, typer.Option(help="Runs are kept in OUT_DIR/experiment-NAME/ (best.pt and results.json).")
    ] = Path("checkpoints"),
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the results as one JSON object on stdout (for all: keyed by study).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or per-study report.")] = False,
    html: Annotated[
        Optional[Path],
        typer.Option(help="Also write the HTML explorer of the run, opened on the unit found (all: OUT-STUDY.html)."),
    ] = None,
    device: Annotated[
        str, typer.Option(help="auto (a CUDA GPU when present, else the CPU), cuda or cpu: where the studies train and are judged.")
    ] = "auto",
) -> None:
    """Reproduce the source article's small studies: train a tiny LSTM on a synthetic language,
    judge its greedy generations, and show the units that solve it (layers numbered from 1)."""
    from charlstm.experiment_command import run_experiments
    from charlstm.experiments import strip_views

    results = run_experiments(
        name, err, quiet=quiet, html=html, seed=seed, out_dir=out_dir, steps=steps, max_n=max_n,
        eval_max_n=eval_max_n, device=device,
    )
    if json_out:
        payload = {k: strip_views(v) for k, v in results.items()} if name == "all" else strip_views(results[name])
        typer.echo(json.dumps(payload))
