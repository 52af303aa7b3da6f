"""The figures of `fedrun report`, each drawn from a run's round records."""

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from fedrun.learning import client_time
from fedrun.loop.records import RoundRecord, ShardRecord
from fedrun.observe.summary import PERCENTILES, latency_percentiles, running_time

_PERCENTILE_COLORS = {50: "tab:green", 95: "tab:orange", 99: "tab:red"}
_TRAIN_LABEL = "train (clients, during local training)"
_EVAL_LABELS = {"round_clients": "eval: the round's clients", "heldout": "eval: held-out clients"}
_SPEED_LABELS = {
    "speed_q1": "fastest quarter of devices",
    "speed_q2": "second quarter",
    "speed_q3": "third quarter",
    "speed_q4": "slowest quarter",
}


def worker_timeline(record: RoundRecord) -> dict[str, list[tuple[float, float, ShardRecord]]]:
    """Per worker, its shards as (start, duration, shard), in seconds since the round started."""
    timeline: dict[str, list[tuple[float, float, ShardRecord]]] = {}
    for shard in sorted(record.shards, key=lambda s: s.start):
        timeline.setdefault(shard.worker, []).append(
            (shard.start - record.start, shard.end - shard.start, shard)
        )
    return timeline


def _figure(columns: int = 1) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(11, 4.5), dpi=110, layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return figure, list(axes)


def learning_curves(records: Sequence[RoundRecord], metric: str, ylabel: str) -> Figure:
    figure, (by_round, by_time) = _figure(columns=2)
    figure.suptitle(f"{metric.capitalize()} during training and on evaluation")
    times = dict(zip((r.round for r in records), running_time(records)))
    series = {_TRAIN_LABEL: [(r.round, r.train[metric]) for r in records if r.train]}
    for group in dict.fromkeys(g for r in records for g in r.eval if not g.startswith("speed_")):
        series[_EVAL_LABELS.get(group, f"eval: {group}")] = [
            (r.round, r.eval[group][metric]) for r in records if group in r.eval
        ]
    for label, points in series.items():
        if not points:
            continue
        rounds, values = zip(*points)
        marker = "." if len(points) <= 60 else None  # dots help a short run, clutter a long one
        by_round.plot(rounds, values, marker=marker, label=label)
        by_time.plot([times[n] for n in rounds], values, marker=marker, label=label)
    by_round.set(xlabel="round", ylabel=ylabel, title="by round")
    by_round.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_time.set(
        xlabel="running time (s, a resumed run continues its clock)", ylabel=ylabel, title="by running time"
    )
    by_round.legend()
    return figure


def _percentile_lines(ax: Axes, percentiles: dict[int, float], vertical: bool) -> None:
    for q, value in percentiles.items():
        line = ax.axvline if vertical else ax.axhline
        line(value, color=_PERCENTILE_COLORS[q], linestyle="--", label=f"p{q} = {value:.3f} s")


def latency_per_round(records: Sequence[RoundRecord]) -> Figure:
    figure, (ax,) = _figure()
    rounds, latencies = [r.round for r in records], [r.latency_s for r in records]
    label = "training round (evaluation not included)"
    if len(records) <= 300:
        ax.bar(rounds, latencies, color="tab:blue", alpha=0.7, label=label)
    else:  # bars thinner than a pixel would vanish
        ax.plot(rounds, latencies, color="tab:blue", linewidth=0.8, label=label)
    _percentile_lines(ax, latency_percentiles(records), vertical=False)
    ax.set(
        xlabel="round",
        ylabel="round latency (s)",
        ylim=(0, None),
        title="Round latency per round (the first round includes tracing the computations)",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper right")
    return figure


def latency_cdf(records: Sequence[RoundRecord]) -> Figure:
    figure, (ax,) = _figure()
    latencies = np.sort([r.latency_s for r in records])
    ax.step(
        latencies,
        np.arange(1, len(latencies) + 1) / len(latencies),
        where="post",
        color="tab:blue",
        label=f"{len(latencies)} rounds",
    )
    _percentile_lines(ax, latency_percentiles(records), vertical=True)
    ax.set(
        xlabel="round latency (s)",
        ylabel="fraction of rounds at most this slow",
        ylim=(0, 1.05),
        title="Distribution of round latency (CDF)",
    )
    ax.legend(loc="lower right")
    return figure


def client_times(records: Sequence[RoundRecord]) -> Figure:
    """The clients' local training times as their workers measured them: left each round's
    distribution as a band, right the distribution over all rounds (CDF), overall and by worker."""
    figure, (by_round, distribution) = _figure(columns=2)
    figure.suptitle("Client training time, measured on the workers")
    measured = [r for r in records if r.client_time and r.client_time["count"]]
    rounds = [r.round for r in measured]
    times = {q: np.array([r.client_time[q] for r in measured]) for q in ("p50", "p95", "p99", "max")}
    by_round.fill_between(
        rounds, times["p50"], times["p99"], color="tab:blue", alpha=0.15, label="p50 to p99"
    )
    by_round.fill_between(rounds, times["p50"], times["p95"], color="tab:blue", alpha=0.3, label="p50 to p95")
    by_round.plot(rounds, times["p50"], color="tab:blue", label="p50")
    by_round.plot(rounds, times["max"], ".", color="black", markersize=3, label="slowest client")
    by_round.set(xlabel="round", ylabel="seconds", ylim=(0, None), title="per round")
    by_round.xaxis.set_major_locator(MaxNLocator(integer=True))
    groups = {"all clients": [r.client_time for r in measured]}
    for worker in sorted({w for r in measured for w in r.client_time["by_worker"]}):
        groups[worker] = [
            r.client_time["by_worker"][w] for r in measured if (w := worker) in r.client_time["by_worker"]
        ]
    for i, (name, summaries) in enumerate(groups.items()):
        whole = client_time.combined(summaries)
        upper, fraction = client_time.cdf(whole["histogram"])
        upper = np.minimum(upper, whole["max_s"])  # the last bucket ends at the slowest client
        style = {"color": "black", "linewidth": 2} if i == 0 else {"linewidth": 1}
        distribution.step(upper, fraction, where="post", label=f"{name} ({whole['count']})", **style)
    distribution.set(
        xscale="log",
        xlabel="seconds (log scale; steps are the 4% buckets)",
        ylabel="fraction of clients at most this slow",
        ylim=(0, 1.05),
        title="all rounds (CDF)",
    )
    for ax in (by_round, distribution):
        if ax.lines:
            ax.legend(fontsize=8)
    return figure


def gantt(record: RoundRecord, workers: list[str]) -> Figure:
    """Each worker's shards across the round, with each shard's slowest client (measured on the
    worker) as a dark bar inside it and attempts that lost a speculative race hatched; grey is
    idle time, the last bar is merge and server update."""
    figure, (ax,) = _figure()
    timeline = worker_timeline(record)
    labels = ["merge + server update"]
    colors = [f"C{i % 10}" for i in range(len(record.shards))]
    for y, worker in enumerate(reversed(workers), start=1):
        ax.broken_barh([(0, record.latency_s)], (y - 0.4, 0.8), color="0.9")
        # Busy counts the attempts that lost a race too: the worker ran them.
        busy = sum(c["end"] - c["start"] for c in record.lost_copies if c["worker"] == worker)
        for start, duration, shard in timeline.get(worker, []):
            busy += duration
            ax.broken_barh([(start, duration)], (y - 0.35, 0.7), color=colors[shard.shard], edgecolor="black")
            if shard.slowest_client_s is not None:  # where in the shard it ran is not known: from the start
                ax.broken_barh([(start, shard.slowest_client_s)], (y - 0.35, 0.15), color="black")
            if duration > 0.06 * record.latency_s:  # narrower bars stay unlabelled rather than overprinted
                clients = f"{len(shard.clients)} client" + ("s" if len(shard.clients) != 1 else "")
                copy = " (copy)" if shard.backup else ""
                ax.text(
                    start + duration / 2,
                    y,
                    f"shard {shard.shard}{copy}\n{clients}",
                    ha="center",
                    va="center",
                    fontsize=8,
                )
        slowed = f" (slowed {record.slowed[worker]['factor']:g}x)" if worker in record.slowed else ""
        labels.append(f"{worker}{slowed}\nidle {record.latency_s - busy:.3f} s")
    rows = {worker: y for y, worker in enumerate(reversed(workers), start=1)}
    for lost in record.lost_copies:  # attempts that lost a speculative race, hatched
        if lost["worker"] in rows:
            ax.broken_barh(
                [(lost["start"] - record.start, lost["end"] - lost["start"])],
                (rows[lost["worker"]] - 0.35, 0.7),
                facecolor="none",
                edgecolor=colors[lost["shard"]],
                hatch="//",
            )
    last_shard_end = max((s.end - record.start for s in record.shards), default=0.0)
    ax.broken_barh([(last_shard_end, record.latency_s - last_shard_end)], (-0.35, 0.7), color="0.5")
    ax.axvline(record.latency_s, color="black", linestyle=":")
    ax.set_yticks(range(len(labels)), labels)
    failures = (
        f"; {len(record.failures)} worker failure(s), their shards ran again" if record.failures else ""
    )
    ax.set(
        xlabel="seconds since the round started",
        xlim=(0, record.latency_s * 1.02),
        title=f"Round {record.round}: shards per worker (round latency {record.latency_s:.3f} s{failures})",
    )
    ax.legend(
        handles=[
            Patch(color="0.9", label="idle"),
            Patch(color="0.5", label="merge + server update"),
            Patch(color="black", label="slowest client of the shard"),
            Patch(
                facecolor="none",
                edgecolor="0.3",
                hatch="//",
                label="attempt beaten by its copy, or a copy beaten",
            ),
            Line2D([], [], color="black", linestyle=":", label="round end"),
        ],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    return figure


# --- the simulated federation (runs with a system model) ----------------------------------------


def _simulated(records: Sequence[RoundRecord]) -> list[RoundRecord]:
    return [r for r in records if r.sim is not None]


def accuracy_by_simulated_time(records: Sequence[RoundRecord]) -> Figure:
    """Evaluation accuracy against the virtual clock: left every group, right the fixed sample by
    device speed quartile (what a deadline costs the slow devices)."""
    figure, (groups, quartiles) = _figure(columns=2)
    figure.suptitle("Accuracy against simulated time")
    evaluated = [r for r in _simulated(records) if r.eval]
    names = list(dict.fromkeys(g for r in evaluated for g in r.eval))
    for name in names:
        points = [(r.sim["clock_s"] / 60, r.eval[name]["accuracy"]) for r in evaluated if name in r.eval]
        ax = quartiles if name.startswith("speed_") else groups
        label = _SPEED_LABELS.get(name) or _EVAL_LABELS.get(name, f"eval: {name}")
        ax.plot(*zip(*points), marker="." if len(points) <= 60 else None, label=label)
    for ax, title in ((groups, "evaluation groups"), (quartiles, "fixed sample by device speed")):
        ax.set(xlabel="simulated time (min)", ylabel="accuracy", title=title)
        if ax.lines:
            ax.legend()
    return figure


def accuracy_of_runs(runs: Mapping[str, Sequence[RoundRecord]], group: str) -> Figure:
    """Several runs' accuracy on one evaluation group, side by side: against simulated time
    (runs with a system model) and against wall time; e.g. synchronous vs buffered-async."""
    figure, (by_clock, by_wall) = _figure(columns=2)
    figure.suptitle(f"Accuracy of each run ({_EVAL_LABELS.get(group, group)})")
    for label, records in runs.items():
        times = dict(zip((r.round for r in records), running_time(records)))
        evaluated = [r for r in records if group in r.eval]
        simulated = [(r.sim["clock_s"] / 60, r.eval[group]["accuracy"]) for r in evaluated if r.sim]
        if simulated:
            by_clock.plot(*zip(*simulated), label=label)
        if evaluated:
            by_wall.plot(
                [times[r.round] for r in evaluated],
                [r.eval[group]["accuracy"] for r in evaluated],
                label=label,
            )
    by_clock.set(xlabel="simulated time (min)", ylabel="accuracy", title="on the virtual clock")
    by_wall.set(xlabel="wall time of the run (s)", ylabel="accuracy", title="on the simulator's wall clock")
    for ax in (by_clock, by_wall):
        if ax.lines:
            ax.legend()
    return figure


def staleness(records: Sequence[RoundRecord]) -> Figure:
    """Buffered-async: how stale each update's results were, and the results discarded."""
    figure, (ages, lost) = _figure(columns=2)
    figure.suptitle("Buffered-async: staleness of the results each update applied")
    updates = [r for r in records if r.buffered is not None]
    versions = [r.buffered["version"] for r in updates]
    for key, label in (("mean", "mean"), ("p50", "median"), ("max", "max")):
        ages.plot(versions, [r.buffered["staleness"][key] for r in updates], label=label)
    for reason in updates[0].buffered["discarded"] if updates else ():
        lost.plot(versions, np.cumsum([r.buffered["discarded"][reason] for r in updates]), label=reason)
    ages.set(xlabel="server version", ylabel="staleness (versions behind)", title="per update")
    lost.set(xlabel="server version", ylabel="results discarded so far", title="discarded, by reason")
    for ax in (ages, lost):
        if ax.lines:
            ax.legend()
    return figure


def simulated_round_times(records: Sequence[RoundRecord]) -> Figure:
    figure, (ax,) = _figure()
    simulated = _simulated(records)
    rounds = [r.round for r in simulated]
    ax.plot(rounds, [r.sim["round_s"] for r in simulated], color="black", linewidth=2, label="round (close)")
    for q in PERCENTILES:
        ax.plot(
            rounds,
            [r.sim["client_s"][f"p{q}"] for r in simulated],
            color=_PERCENTILE_COLORS[q],
            linestyle="--",
            label=f"selected clients p{q}",
        )
    ax.set(
        xlabel="round",
        ylabel="simulated seconds",
        ylim=(0, None),
        title="Simulated round time and the selected clients' device times",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper right")
    return figure


def dropped_clients(records: Sequence[RoundRecord]) -> Figure:
    figure, (ax,) = _figure()
    simulated = _simulated(records)
    rounds = [r.round for r in simulated]
    bottom = np.zeros(len(simulated))
    for reason in simulated[0].sim["dropped"] if simulated else {}:
        counts = np.array([r.sim["dropped"][reason] for r in simulated], float)
        ax.bar(rounds, counts, bottom=bottom, label=reason.replace("_", "-"))
        bottom += counts
    abandoned = [r.round for r in simulated if r.sim["abandoned"]]
    if abandoned:
        ax.scatter(
            abandoned, [0] * len(abandoned), marker="x", color="red", zorder=3, label="abandoned round"
        )
    ax.set(
        xlabel="round",
        ylabel="selected clients that did not count",
        title="Dropped clients per round, by reason",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper right")
    return figure


def participation_histogram(counts: Sequence[int], population: int) -> Figure:
    """How many rounds each client's update counted in, over the clients selected at least once."""
    figure, (ax,) = _figure()
    counts = np.asarray(counts)
    contributed = counts[counts > 0]
    if len(counts):
        ax.hist(counts, bins=np.arange(counts.max() + 2) - 0.5, color="tab:blue", alpha=0.8)
    never = 1 - len(contributed) / population
    ax.set(
        xlabel="rounds in which the client's update counted",
        ylabel="clients (selected at least once)",
        title=f"Participation: {len(contributed)} of {population} clients contributed; {never:.1%} never did",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def label_mix(mix: dict) -> Figure:
    """How many examples of each label a sample of training clients holds: non-IID data shows as
    rows that differ."""
    counts = np.array(mix["labels"], float)
    figure = Figure(figsize=(11, max(3.0, 0.18 * len(counts) + 1.5)), dpi=110, layout="constrained")
    ax = figure.subplots()
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set(
        xlabel="label",
        ylabel="client",
        title=f"Label mix of {len(counts)} training clients (share of each client's examples)",
    )
    ax.set_xticks(range(counts.shape[1]))
    ax.set_yticks(range(len(counts)), mix["clients"], fontsize=6)
    figure.colorbar(image, ax=ax, label="share of the client's examples")
    return figure
