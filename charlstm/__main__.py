"""`python -m charlstm`, and the `charlstm` command's entry point."""

import sys


def main() -> None:
    """Run the CLI. Ctrl-C while it starts up (importing torch takes seconds) exits quietly as well:
    the commands' own handler only covers the time after the import."""
    try:
        from charlstm.cli import app

        app(prog_name="charlstm")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
