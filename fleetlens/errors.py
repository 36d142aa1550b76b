"""Errors that every layer may raise and the CLI knows how to print."""


class UsageError(ValueError):
    """Bad input from the user, or an environment that cannot work (no GPU driver): printed
    as one line, exit status 2."""
