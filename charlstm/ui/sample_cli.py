"""`charlstm sample`: its options, and the call they make."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..core.config import WEIGHT_PRECISIONS
from ..core.errors import CharlstmError
from .guard import err, user_errors

Checkpoint = Annotated[
    str | None,
    typer.Argument(
        help="Run folder or checkpoint file. Default: the newest run under checkpoints/, else the shipped model."
    ),
]

Length = Annotated[
    int, typer.Option("--length", "-n", help="Characters to generate per sample.", rich_help_panel="Sampling")
]

Temperature = Annotated[
    float | None,
    typer.Option(
        "--temperature", "-t", help="> 0; lower is safer, higher is wilder (default: 0.8).", rich_help_panel="Sampling"
    ),
]

Greedy = Annotated[
    bool,
    typer.Option(
        "--greedy",
        help="Always take the most likely character (ignores temperature, top-k, top-p).",
        rich_help_panel="Sampling",
    ),
]

TopK = Annotated[
    int | None,
    typer.Option("--top-k", help="Draw only among the K most likely characters.", rich_help_panel="Sampling"),
]

TopP = Annotated[
    float | None,
    typer.Option(
        "--top-p",
        help="Draw only from the most likely characters holding this much probability, in (0, 1].",
        rich_help_panel="Sampling",
    ),
]

Prime = Annotated[
    str | None,
    typer.Option(
        "--prime",
        "-p",
        help="Text fed through the model first and printed as the start of each sample.",
        rich_help_panel="Sampling",
    ),
]

PrimeFile = Annotated[
    Path | None, typer.Option("--prime-file", help="Read the prime from a file.", rich_help_panel="Sampling")
]

Stop = Annotated[
    str | None,
    typer.Option(
        "--stop",
        help="End a sample once it generates this text (kept). Backslash escapes work: --stop '\\n\\n'.",
        rich_help_panel="Sampling",
    ),
]

NumSamples = Annotated[
    int,
    typer.Option(
        "--num-samples",
        "-N",
        help="Samples generated together as one batch, printed one after another under a '──── sample i/N ────' line.",
        rich_help_panel="Sampling",
    ),
]

Seed = Annotated[
    int | None, typer.Option("--seed", help="Same seed and device give the same text.", rich_help_panel="Sampling")
]

Beam = Annotated[
    int | None,
    typer.Option(
        "--beam",
        help=(
            "Beam search of width K instead of drawing: the most likely continuation (log-probability per character), "
            "deterministic, one sample; not with --temperature, --top-k, --top-p, --greedy, --seed or --num-samples. "
            "Streams each character once every beam agrees on it (a short lag), the rest at the end."
        ),
        rich_help_panel="Sampling",
    ),
]

Clamp = Annotated[
    list[str] | None,
    typer.Option(
        "--clamp",
        metavar="L:N[:cell|hidden]=VALUE",
        help=(
            "Hold a unit at a value at every step, prime included: L:N[:cell|hidden]=VALUE, layer from 1 and neuron "
            "from 0 as inspect-neuron numbers them (default: the cell of an LSTM; clamping it also sets the unit's "
            "output to o·tanh(VALUE)). Repeatable. With --seed, the draws are the same as without it: the text "
            "differs only through the unit."
        ),
        rich_help_panel="Interventions",
        show_default=False,
    ),
]

Ablate = Annotated[
    list[str] | None,
    typer.Option(
        "--ablate",
        metavar="L:N",
        help="Zero a unit at every step (cell and hidden state): L:N. Repeatable.",
        rich_help_panel="Interventions",
        show_default=False,
    ),
]

Watch = Annotated[
    str | None,
    typer.Option(
        "--watch",
        metavar="L:N[:hidden|cell]",
        help=(
            "Colour the sample as it streams by one unit's value after each character: L:N[:hidden|cell] (default "
            "hidden), red negative, blue positive. On a terminal; piped output stays plain. One sample, not with "
            "--beam."
        ),
        rich_help_panel="Interventions",
        show_default=False,
    ),
]

Out = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help=(
            "Also save the samples (plain text, as a pipe receives them) to this file: a regular file is replaced "
            "atomically, a device or FIFO written in place, a symlink followed."
        ),
        rich_help_panel="Output",
    ),
]

NoColor = Annotated[
    bool,
    typer.Option(
        "--no-color",
        help="No syntax highlighting on a terminal (piped output never has any).",
        rich_help_panel="Output",
    ),
]

Device = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto (a CUDA GPU when present, else the CPU), cpu or cuda. A model trained on either samples on either.",
        rich_help_panel="Backend",
    ),
]

Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help=(
            "CPU threads. Default 1: one step is too small to share, and a second thread stalls whenever another "
            "process uses the cores."
        ),
        rich_help_panel="Backend",
    ),
]

Precision = Annotated[
    str,
    typer.Option(
        "--precision",
        "--dtype",
        help=(
            f"Engine weights: {'|'.join(WEIGHT_PRECISIONS)}. auto = int8 weights on a CPU with FBGEMM (fastest; "
            "next-character distributions within a KL of ~0.002 bits of fp32), else fp16, else fp32. fp16: near "
            "exact; fp32: exact."
        ),
        rich_help_panel="Backend",
    ),
]

Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="A shipped model by name (python, java) or a run folder or checkpoint, instead of CHECKPOINT.",
        show_default=False,
    ),
]

Constrain = Annotated[
    bool,
    typer.Option(
        "--constrain",
        help=(
            "Never draw a character that makes the code lexically impossible (a closer with no opener, a newline in "
            "a one-line string, a dedent to a level never opened); past --length, go on until the units close."
        ),
        rich_help_panel="Syntax",
    ),
]

Valid = Annotated[
    bool,
    typer.Option(
        "--valid",
        help=(
            "Emit only top-level units that parse: a unit (and in Python a line) that cannot is drawn again from its "
            "start. Implies --constrain."
        ),
        rich_help_panel="Syntax",
    ),
]

MaxTries = Annotated[
    int,
    typer.Option("--max-tries", help="With --valid: draws of one unit before it is dropped.", rich_help_panel="Syntax"),
]


@user_errors
def sample_command(
    checkpoint: Checkpoint = None,
    length: Length = 2000,
    temperature: Temperature = None,
    greedy: Greedy = False,
    top_k: TopK = None,
    top_p: TopP = None,
    prime: Prime = None,
    prime_file: PrimeFile = None,
    stop: Stop = None,
    num_samples: NumSamples = 1,
    seed: Seed = None,
    beam: Beam = None,
    clamp: Clamp = None,
    ablate: Ablate = None,
    watch: Watch = None,
    out: Out = None,
    no_color: NoColor = False,
    device: Device = "auto",
    threads: Threads = None,
    precision: Precision = "auto",
    model: Model = None,
    constrain: Constrain = False,
    valid: Valid = False,
    max_tries: MaxTries = 8,
) -> None:
    """Stream generated code from a trained model, character by character.

    On a terminal each finished line is syntax-highlighted in the corpus's language; piped or redirected, the output is plain text. A new file the model starts shows as a '── new file ──' line; the unknown symbol prints as \ufffd.
    """  # noqa: E501
    from ..core.checkpoint import resolve_model
    from ..core.units import WATCHABLE, parse_interventions, parse_unit
    from ..core.userio import refuse_output_over_input, text_from_argv
    from ..sampling.sample import SampleSettings, read_prime_file, unescape
    from .sample_command import run_sampling

    if prime is not None and prime_file is not None:
        raise CharlstmError("give --prime or --prime-file, not both")
    refuse_output_over_input({"-o": out}, {"--prime-file": prime_file})
    prime_text = read_prime_file(prime_file) if prime_file is not None else text_from_argv(prime or "")
    stop_text = unescape(text_from_argv(stop)) if stop is not None else None
    interventions = parse_interventions(clamp, ablate)
    watched = parse_unit(watch, "--watch", WATCHABLE) if watch is not None else None
    settings = SampleSettings(
        length=length,
        temperature=temperature,
        greedy=greedy,
        top_k=top_k,
        top_p=top_p,
        prime=prime_text,
        stop=stop_text,
        num_samples=num_samples,
        seed=seed,
        beam=beam,
        interventions=interventions,
        watch=watched,
        constrain=constrain or valid,
        valid=valid,
        max_tries=max_tries,
    )
    settings.validate()
    if model is not None:
        if checkpoint is not None:
            raise CharlstmError("give a CHECKPOINT or --model, not both")
        checkpoint = str(resolve_model(model))
    run_sampling(
        checkpoint,
        settings,
        out=out,
        color=not no_color,
        device=device,
        precision=precision,
        threads=threads,
        console=err,
    )
