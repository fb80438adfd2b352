"""The command line: the Typer app and its commands, in pipeline order.

Each command lives in `ui/NAME_cli.py`: its options, declared once as `Annotated` aliases, and a
function that wires them to a library call, nothing more. Those modules import no torch: each
command imports its implementation when it runs (seconds), which `charlstm --help` and a mistyped
option do not need. Domain errors (CharlstmError) become one red line on stderr and exit code 1
(`ui/guard.py`). A command's docstring is its help, line breaks included (rich markup keeps them),
so a paragraph shown on one line stays one line in the source, marked `# noqa: E501`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import __version__
from .ui import eval_cli, experiment_cli, ingest_cli, inspect_cli, runs_cli, sample_cli, train_cli

app = typer.Typer(
    name="charlstm",
    help="Character-level LSTMs that learn to write code, and the tools to look inside them.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"charlstm {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
) -> None:
    """Character-level LSTMs that learn to write code, and the tools to look inside them."""


app.command("ingest", rich_help_panel="Pipeline")(ingest_cli.ingest_command)
app.command("train", no_args_is_help=False, rich_help_panel="Pipeline")(train_cli.train_command)
app.command("runs", rich_help_panel="Pipeline")(runs_cli.runs_command)
app.command("eval", rich_help_panel="Pipeline")(eval_cli.eval_command)
app.command("sample", rich_help_panel="Pipeline")(sample_cli.sample_command)
app.command("inspect-neuron", rich_help_panel="Look inside")(inspect_cli.inspect_neuron_command)
app.command("experiment", rich_help_panel="Look inside")(experiment_cli.experiment_command)
