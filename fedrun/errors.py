"""The one error type a user can cause; the CLI prints it without a traceback."""


class FedrunError(Exception):
    """A problem the user can fix: the message names the problem and the fix."""
