"""One exception type for bad input: the CLI prints it as a one-line error, never a traceback."""


class OmnibyteError(Exception):
    """Bad input from the user (missing file, bad config, corrupt data). The message names the problem."""
