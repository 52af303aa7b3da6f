"""The terminal observer: a progress bar, one line per round, and the summary table."""

import time

from tqdm import tqdm

from cluster import Worker
from fedrun.config import RunConfig
from fedrun.loop.records import RoundRecord
from fedrun.observe.summary import round_line, summary_rows, text_table


class TerminalProgress:
    def __init__(self) -> None:
        self.records: list[RoundRecord] = []
        self._bar: tqdm | None = None
        self._started = time.monotonic()
        self._config: RunConfig | None = None

    def on_start(self, config: RunConfig, workers: list[Worker]) -> None:
        # disable=None: tqdm draws the bar only on a terminal; logs and pipes get the round lines.
        self._config = config
        self._bar = tqdm(
            total=config.workload.rounds,
            unit="round",
            leave=False,
            disable=None if config.observe.progress else True,
        )

    def on_round(self, record: RoundRecord) -> None:
        self.records.append(record)
        if self._bar is not None:
            self._bar.write(round_line(record))
            self._bar.update()

    def on_end(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def summary(self) -> str:
        if not self.records:
            return "no round finished"
        rows = summary_rows(self.records, self._config)
        return text_table([*rows, ("wall time of this session", f"{time.monotonic() - self._started:.1f} s")])
