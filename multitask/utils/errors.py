"""One exception type for bad input: the CLI prints its message as one line and exits 2 (traceback only with --debug)."""


class UserError(Exception):
    """Bad input from a person (file, key, value). The message says what, where and what would be right."""
