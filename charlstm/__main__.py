"""`python -m charlstm`, and the `charlstm` command's entry point."""

import os
import sys


def reopen_closed_streams() -> None:
    """A standard stream the shell closed (`2>&-`): its descriptor goes to /dev/null, so no file we
    open takes its number (and stray writes to it), and sys.stdin/sys.stderr, None then, become
    /dev/null streams, so progress bars and messages go nowhere instead of failing (or, for
    tqdm.write, landing on stdout). sys.stdout stays None: `sample` refuses to generate into nothing."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None and name != "stdout":
            setattr(sys, name, open(os.devnull, "r" if fd == 0 else "w", encoding="utf-8"))


MIN_COLUMNS = 20  # narrower than this, a terminal size from the environment is taken as nonsense


def ignore_unusable_terminal_size() -> None:
    """COLUMNS=0 (or text, or a few columns) would have rich wrap every line, error messages
    included, to nothing: such a size is dropped, and the real terminal's (or 80) is used. Before
    the CLI is imported: its console reads the size when it is made."""
    for name, least in (("COLUMNS", MIN_COLUMNS), ("LINES", 1)):
        value = os.environ.get(name)
        if value is not None and not (value.strip().isdigit() and int(value) >= least):
            del os.environ[name]


def main() -> None:
    """Run the CLI. Ctrl-C while it starts up (importing torch takes seconds) exits quietly as well:
    the commands' own handler only covers the time after the import."""
    reopen_closed_streams()
    ignore_unusable_terminal_size()
    try:
        from .core.stopping import stop_like_ctrl_c

        stop_like_ctrl_c()
        from .cli import app

        app(prog_name="charlstm")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
