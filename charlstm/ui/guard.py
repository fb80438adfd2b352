"""The console every command talks on, and the guard each command runs under.

Domain errors (CharlstmError) become one red line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import functools

import typer
from rich.console import Console
from rich.markup import escape

from ..core.errors import CharlstmError, one_line_text, os_error_message

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
            from ..core.userio import guarded_stdout  # imports torch: inside, so Ctrl-C meanwhile is caught

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
