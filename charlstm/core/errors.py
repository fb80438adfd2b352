"""The one exception type the CLI turns into a single-line message."""


class CharlstmError(Exception):
    """A problem the user can fix: bad input, missing files, impossible options."""


def refuse_empty(value, name: str, expected: str) -> None:
    """An option or argument given as "": as a path that is the current folder, never what was meant."""
    if isinstance(value, str) and not value:
        raise CharlstmError(f"{name} is empty: give {expected}")


def first_line(exc: BaseException) -> str:
    """Another library's exception, cut to the one line a CharlstmError message quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def os_error_message(exc: OSError) -> str:
    """An OSError the OS raised over a path the user gave (a name too long, a folder it may not
    enter), as the one line the CLI prints: "cannot use PATH: File name too long"."""
    reason = exc.strerror or first_line(exc)
    if exc.filename is None:
        return f"cannot go on: {reason}"
    name = str(exc.filename)
    shown = name if name.isprintable() else repr(name)  # a newline in a name must not split the line
    return f"cannot use {shown}: {reason}"
