"""The errors a user can cause or fix. `UserError` is the one root the command line catches and
prints without a traceback; fedrun's own errors derive from it too."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can cause or fix: the message names the problem and the fix."""


class WorkerError(UserError):
    """A problem with workers: they cannot be started, reached, or configured as asked."""


class WorkerStartError(WorkerError):
    """A worker could not be started or did not become ready in time."""
