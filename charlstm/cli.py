"""The command line: each command wires its options to a library function, nothing more.

Domain errors (CharlstmError) become one red line on stderr and exit code 1.
"""

from __future__ import annotations

import functools
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from charlstm import __version__
from charlstm.errors import CharlstmError

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
    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def user_errors(command):
    """Turn domain errors into a one-line message and a non-zero exit, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CharlstmError as exc:
            raise fail(str(exc)) from None
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


# Commands follow, one section each, in pipeline order: ingest, train, eval, sample,
# inspect-neuron, experiment.
