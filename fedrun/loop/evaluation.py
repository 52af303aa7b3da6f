"""The evaluate step of a round: federated evaluation of the new model, when due, on the groups
`--eval-on` names (the round's clients, the held-out clients, a fixed sample) and, with a
system model, that fixed sample by device speed quartile."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedrun.config import EvalConfig
from fedrun.runtime.execution import EvalOutcome, RoundRuntime
from fedrun.selection.cohort import Cohort, evaluation_groups

if TYPE_CHECKING:
    from fedrun.data.source import ClientDataSource


class Evaluator:
    def __init__(
        self,
        runtime: RoundRuntime,
        source: ClientDataSource,
        config: EvalConfig,
        seed: int,
        extra_groups: dict[str, Cohort] | None = None,
    ):
        self._runtime = runtime
        self._source = source
        self._config = config
        self._seed = seed
        self._extra_groups = extra_groups or {}  # evaluated every time too (speed quartiles)

    def evaluate(self, round_num: int, state: Any, round_cohort: Cohort) -> EvalOutcome | None:
        """None in a round that is not evaluated."""
        every = self._config.every
        if not every or round_num % every:
            return None
        groups = evaluation_groups(
            self._source, self._config.on, self._seed, self._config.sample_size, round_cohort.clients
        )
        return self._runtime.evaluate(state, {**groups, **self._extra_groups})
