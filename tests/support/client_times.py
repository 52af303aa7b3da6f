"""Client-time summaries as round records keep them, built from durations a test chooses."""

from collections.abc import Sequence
from typing import Any

from fedrun.learning.client_time import client_time_summary, measure


def summary(seconds: Sequence[float]) -> dict[str, Any]:
    """The summary the workers' measurement of these durations gives."""
    return client_time_summary(measure(seconds), with_histogram=True)
