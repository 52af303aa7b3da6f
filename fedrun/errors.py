"""fedrun's errors a user can cause. They share one root with the worker backends' errors
(`cluster.UserError`), which is what the command line prints without a traceback."""

from cluster import UserError


class FedrunError(UserError):
    """A problem the user can fix: the message names the problem and the fix."""
