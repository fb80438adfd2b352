"""`charlstm inspect-neuron`: its options, and the call they make."""

from __future__ import annotations

from typing import Annotated

import typer

from .guard import err, user_errors

Checkpoint = Annotated[
    str | None, typer.Argument(help="Run folder or checkpoint file (default: the newest run, else the shipped model).")
]

Layer = Annotated[
    int | None, typer.Option("--layer", "-l", help="Layer, 1-based (1 is nearest the input).", rich_help_panel="Neuron")
]

Neuron = Annotated[
    int | None, typer.Option("--neuron", "-n", help="Unit within the layer, 0-based.", rich_help_panel="Neuron")
]

State = Annotated[
    str | None,
    typer.Option(
        "--state",
        "-s",
        help=(
            "Signal to colour by: hidden|cell|input|forget|output|candidate (LSTM), reset|update|candidate|hidden "
            "(GRU), hidden (RNN), or all (default: hidden)."
        ),
        rich_help_panel="Neuron",
    ),
]

Text = Annotated[str | None, typer.Option("--text", help="Inspect this text.", rich_help_panel="Text")]

TextFile = Annotated[str | None, typer.Option("--text-file", help="Inspect this UTF-8 file.", rich_help_panel="Text")]

FromVal = Annotated[
    int | None,
    typer.Option(
        "--from-val",
        "--chars",
        help=(
            "Inspect the first CHARS characters of the checkpoint's validation split (the default text: 1000 "
            "characters; 5000 for --find/--stats/--ablate; up to 2000 for --html; the whole split for "
            "--top-contexts)."
        ),
        rich_help_panel="Text",
    ),
]

Split = Annotated[
    str | None,
    typer.Option(
        "--split",
        help=(
            "The split of the checkpoint's dataset that --chars and the default text read: val (the default) or "
            "train (the default for --top-contexts when the dataset is at hand; otherwise the validation excerpt a "
            "run carries)."
        ),
        rich_help_panel="Text",
    ),
]

Data = Annotated[
    str | None,
    typer.Option("--data", help="Dataset folder for --from-val (default: the checkpoint's).", rich_help_panel="Text"),
]

MaxChars = Annotated[
    int | None,
    typer.Option(
        "--max-chars",
        help=(
            "Inspect only the first MAX_CHARS characters of the text (--html pages and --svg pictures have their own "
            "limits; long texts otherwise stream, in bounded memory)."
        ),
        rich_help_panel="Text",
    ),
]

Find = Annotated[
    str | None,
    typer.Option(
        "--find",
        help=(
            "Rank every (layer, neuron, signal) by correlation with a feature: indent, column, string, comment, "
            "brackets, spaces, or regex:PATTERN."
        ),
        rich_help_panel="Discovery",
    ),
]

Top = Annotated[int, typer.Option("--top", help="How many ranked units --find shows.", rich_help_panel="Discovery")]

Stats = Annotated[
    bool,
    typer.Option(
        "--stats", help="Gate saturation per layer: time fractions < 0.1 and > 0.9.", rich_help_panel="Discovery"
    ),
]

TopContexts = Annotated[
    int | None,
    typer.Option(
        "--top-contexts",
        help=(
            "With --layer and --neuron (and --state): the K places of the text where the unit is most positive and "
            "the K where it is most negative, coloured, with their positions. Default text: the whole validation "
            "split, traced in chunks."
        ),
        rich_help_panel="Discovery",
        show_default=False,
    ),
]

JsonOut = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print --find, --stats, --ablate or --top-contexts results as JSON on stdout.",
        rich_help_panel="Output",
    ),
]

Html = Annotated[
    str | None,
    typer.Option(
        "--html",
        help=(
            "Write a self-contained HTML explorer (every neuron and signal, switchable in the page) to this file; "
            "at most 16 MB: a longer text's page shows its start and says so."
        ),
        rich_help_panel="Output",
    ),
]

Svg = Annotated[
    str | None,
    typer.Option(
        "--svg", help="Also save the coloured view of one neuron as an SVG picture.", rich_help_panel="Output"
    ),
]

Exact = Annotated[
    bool,
    typer.Option(
        "--exact",
        help=(
            "Kept for old scripts: every trace now runs the fused float32 layers, whose values equal training's "
            "forward pass to float32 rounding (before, the default read float16 weights on a CPU)."
        ),
        rich_help_panel="Output",
    ),
]

Ablate = Annotated[
    list[str] | None,
    typer.Option(
        "--ablate",
        metavar="L:N",
        help=(
            "Measure what a unit does: bits per character with it zeroed at every step (L:N; repeat to ablate several "
            "together) minus without, overall and per class of character (indentation, strings, comments, brackets, "
            "other), beside random units of the same layer ablated alike. Scored in float32."
        ),
        rich_help_panel="Causal",
        show_default=False,
    ),
]

Causal = Annotated[
    bool,
    typer.Option(
        "--causal",
        help=(
            "With --find: ablate each ranked unit and add its effect on bits per character (all characters, and the "
            "feature's own) to the table."
        ),
        rich_help_panel="Causal",
    ),
]

Controls = Annotated[
    int,
    typer.Option("--controls", help="Random control ablations for --ablate and --causal.", rich_help_panel="Causal"),
]

Seed = Annotated[int, typer.Option("--seed", help="Chooses the control units.", rich_help_panel="Causal")]

Device = Annotated[
    str,
    typer.Option(
        "--device",
        help=(
            "auto (a CUDA GPU, else MPS, else the CPU), cuda, mps or cpu: where the trace, --find, --ablate/--causal, "
            "--top-contexts and --html run. A model trained on either inspects on either."
        ),
        rich_help_panel="Backend",
    ),
]


@user_errors
def inspect_neuron_command(
    checkpoint: Checkpoint = None,
    layer: Layer = None,
    neuron: Neuron = None,
    state: State = None,
    text: Text = None,
    text_file: TextFile = None,
    from_val: FromVal = None,
    split: Split = None,
    data: Data = None,
    max_chars: MaxChars = None,
    find: Find = None,
    top: Top = 10,
    stats: Stats = False,
    top_contexts: TopContexts = None,
    json_out: JsonOut = False,
    html: Html = None,
    svg: Svg = None,
    exact: Exact = False,
    ablate: Ablate = None,
    causal: Causal = False,
    controls: Controls = 8,
    seed: Seed = 0,
    device: Device = "auto",
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

    from ..core.userio import text_from_argv
    from .inspect_command import InspectOptions, inspect_neuron

    if text is not None:
        options["text"] = text_from_argv(text)
    inspect_neuron(checkpoint, InspectOptions(**options), err=err)
