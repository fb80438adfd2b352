"""The one exception type the CLI turns into a single-line message."""


class CharlstmError(Exception):
    """A problem the user can fix: bad input, missing files, impossible options."""
