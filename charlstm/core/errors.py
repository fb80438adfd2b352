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
    return f"cannot use {shown_path(exc.filename)}: {reason}"


def one_line_text(text: str) -> str:
    """A message as one line: each character that does not print (a newline or a control character
    in a name the user gave) shown as its escape (\\n, \\x1b, \\u202e). The last guard before a
    message reaches the terminal; paths are shown with `shown_path` where the message is made."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def shell_path(path) -> str:
    """A path as a word of a command line the user can paste: quoted as the shell needs, and in
    bash's $'...' form when it holds a character that does not print (a newline)."""
    import shlex

    name = str(path)
    if name.isprintable():
        return shlex.quote(name)
    return (
        "$'"
        + "".join(ch if ch.isprintable() and ch not in "'\\" else repr(ch)[1:-1] if ch != "'" else "\\'" for ch in name)
        + "'"
    )


def shown_path(path) -> str:
    """A path the user gave, as a message or a result line shows it: as it is when every character
    prints, else as a Python string literal ('a\\nb.py'), so that a newline or another control
    character in a name cannot split the line, move the cursor or reach the terminal raw."""
    name = str(path)
    return name if name.isprintable() else repr(name)
