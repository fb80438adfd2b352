"""`charlstm eval`: its options, and the library calls they make."""

from __future__ import annotations

from typing import Annotated

import typer

from ..core.errors import CharlstmError
from .guard import err, user_errors

Checkpoint = Annotated[
    str | None, typer.Argument(help="Checkpoint file or run folder (default: the newest run under checkpoints/)")
]

Data = Annotated[
    str | None, typer.Option(help="Score this dataset's validation split (default: the checkpoint's dataset)")
]

TextFile = Annotated[str | None, typer.Option(help="Score this text file instead (as one document).")]

Device = Annotated[str, typer.Option(help="auto, cuda, mps or cpu.")]

Precision = Annotated[
    str | None,
    typer.Option(
        help="auto, bf16, fp16 or fp32 (default: the run's own where it runs here, else auto: as training picks it).",
        show_default=False,
    ),
]

Dynamic = Annotated[
    bool,
    typer.Option(
        "--dynamic",
        help=(
            "Also score the text under dynamic evaluation: the model (a copy) takes an SGD step on each "
            "100-character segment after scoring it, adapting to the text as it reads. Reported beside the static "
            "figure; sequential, so slower."
        ),
    ),
]

DynamicLr = Annotated[
    float | None,
    typer.Option("--dynamic-lr", help="SGD learning rate for --dynamic (default: 0.3).", show_default=False),
]

JsonOutput = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (bpc, chars, ...).")]

PerChar = Annotated[
    bool,
    typer.Option(
        "--per-char",
        help=(
            "With --text-file: where is the model surprised? The text coloured by each character's bits (white "
            "expected, red 10 bits or more) and the most surprising characters; with --json, every character's bits "
            "and the model's top 5 guesses. Scored as one stream, every character with the whole file before it."
        ),
        rich_help_panel="Surprise",
    ),
]

Html = Annotated[
    str | None,
    typer.Option(
        "--html",
        help=(
            "With --per-char: also write the coloured text as a self-contained HTML page (hover a character for its "
            "bits and top 5); at most 16 MB: a longer text's page shows its start and says so."
        ),
        rich_help_panel="Surprise",
    ),
]

Syntax = Annotated[
    bool,
    typer.Option(
        "--syntax",
        help=(
            "Instead of bits: draw samples and report the share of their complete top-level units that parse "
            "(Python: ast; Java: tree-sitter), with the first errors."
        ),
        rich_help_panel="Syntax",
    ),
]

Samples = Annotated[
    int, typer.Option("--samples", help="With --syntax: samples drawn, as one batch.", rich_help_panel="Syntax")
]

Length = Annotated[
    int, typer.Option("--length", help="With --syntax: characters per sample.", rich_help_panel="Syntax")
]

Temperature = Annotated[
    float,
    typer.Option("--temperature", "-t", help="With --syntax: the sampling temperature.", rich_help_panel="Syntax"),
]

Prime = Annotated[
    str | None,
    typer.Option(
        "--prime",
        help="With --syntax: the prime (default: 'import os\\n\\n\\ndef ' for Python, a class body for Java).",
        show_default=False,
        rich_help_panel="Syntax",
    ),
]

Seed = Annotated[
    int,
    typer.Option(
        "--seed", help="With --syntax: the seed (the same seed gives the same samples).", rich_help_panel="Syntax"
    ),
]

Draw = Annotated[
    str,
    typer.Option(
        "--draw",
        help="With --syntax: plain, constrain (as sample --constrain) or valid (as sample --valid).",
        rich_help_panel="Syntax",
    ),
]


@user_errors
def eval_command(
    checkpoint: Checkpoint = None,
    data: Data = None,
    text_file: TextFile = None,
    device: Device = "auto",
    precision: Precision = None,
    dynamic: Dynamic = False,
    dynamic_lr: DynamicLr = None,
    json_output: JsonOutput = False,
    per_char: PerChar = False,
    html: Html = None,
    syntax: Syntax = False,
    samples: Samples = 16,
    length: Length = 2500,
    temperature: Temperature = 0.7,
    prime: Prime = None,
    seed: Seed = 0,
    draw: Draw = "plain",
) -> None:
    """Score a checkpoint in bits per character on a validation split or any text file (or, with --syntax, how often its code parses)."""  # noqa: E501
    from ..evaluation.evaluate import evaluate_checkpoint
    from .eval_command import run_syntax_eval

    if syntax:
        text_options = (data, text_file, per_char, dynamic)  # the scoring options: --syntax refuses them
        return run_syntax_eval(
            checkpoint,
            err,
            json_output,
            device=device,
            samples=samples,
            length=length,
            temperature=temperature,
            prime=prime,
            seed=seed,
            draw=draw,
            text_options=text_options,
        )
    if html is not None and not per_char:
        raise CharlstmError("--html goes with --per-char")
    if per_char:
        from .eval_command import run_per_char

        if text_file is None or data is not None:
            raise CharlstmError("--per-char scores one file: give --text-file (and no --data)")
        if dynamic:
            raise CharlstmError("--per-char shows the model as it is: drop --dynamic")
        return run_per_char(checkpoint, text_file, html, json_output, err, device=device, precision=precision)
    result = evaluate_checkpoint(
        checkpoint,
        data=data,
        text_file=text_file,
        device=device,
        precision=precision,
        dynamic=dynamic,
        dynamic_lr=dynamic_lr,
    )
    from .eval_command import report_score

    report_score(result, err, json_output)
