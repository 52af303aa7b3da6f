"""fedrun's own configuration sections; `[workers]` and `[ray]` are cluster's (cluster.settings).

A field that `decides_result` changes the model a run ends with: `--resume` refuses to change it.
Each section checks its own ranges; `RunConfig` checks what spans sections.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from fedrun.asynchrony.staleness import staleness_weighting
from fedrun.config.fields import option
from fedrun.data.registry import SOURCES
from fedrun.learning.registry import CLIENT_LOOPS, DATA_PLACEMENTS, MODEL_INITS, MODELS, OPTIMIZERS
from fedrun.registry import names
from fedrun.selection.sharding import SHARD_SIZINGS


def _at_least_one(section: object, *fields: str) -> None:
    for name in fields:
        if getattr(section, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(section, name)}")


def _positive(section: object, *fields: str) -> None:
    for name in fields:
        if not getattr(section, name) > 0:
            raise ValueError(f"{name} must be greater than 0, got {getattr(section, name)}")


def _not_negative(section: object, *fields: str, meaning_of_zero: str = "") -> None:
    for name in fields:
        if getattr(section, name) < 0:
            zero = f" ({meaning_of_zero})" if meaning_of_zero else ""
            raise ValueError(f"{name} must not be negative{zero}, got {getattr(section, name)}")


@dataclasses.dataclass(frozen=True)
class Workload:
    """[workload]: the federated training: rounds, clients, local training, optimizers."""

    # Not `decides_result`: resuming may raise it to run more rounds.
    rounds: int = option(10, "training rounds to run")
    clients_per_round: int = option(32, "clients sampled per round, without replacement", decides_result=True)
    epochs: int = option(5, "local epochs each client trains", decides_result=True)
    batch_size: int = option(32, "examples per local training batch", decides_result=True)
    shuffle_buffer: int = option(
        1000, "shuffle buffer of each client's dataset", unit="examples", decides_result=True
    )
    client_lr: float = option(0.01, "client optimizer learning rate", decides_result=True)
    server_lr: float = option(1.0, "server optimizer learning rate", decides_result=True)
    seed: int = option(0, "seed of client sampling, shuffling and initial weights", decides_result=True)
    model: str = option("linear", "the model to train", choices=names(MODELS), decides_result=True)
    model_init: str = option(
        "default",
        "the model's initial weights, seeded by --seed",
        choices=names(MODEL_INITS),
        decides_result=True,
    )
    client_optimizer: str = option(
        "sgd", "optimizer of local training", choices=names(OPTIMIZERS), decides_result=True
    )
    client_momentum: float = option(0.0, "client SGD momentum (sgd only)", decides_result=True)
    server_optimizer: str = option(
        "sgd",
        "optimizer of the server update (adam: FedAdam)",
        choices=names(OPTIMIZERS),
        decides_result=True,
    )
    server_momentum: float = option(0.0, "server SGD momentum (sgd only)", decides_result=True)
    client_loop: str = option(
        "iterator",
        "how a client steps through its batches inside TFF's client update (same model either way)",
        choices=names(CLIENT_LOOPS),
    )

    def __post_init__(self) -> None:
        _at_least_one(self, "rounds", "clients_per_round", "epochs", "batch_size", "shuffle_buffer")
        _positive(self, "client_lr", "server_lr")
        _not_negative(self, "client_momentum", "server_momentum")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        for side in ("client", "server"):
            if getattr(self, f"{side}_optimizer") != "sgd" and getattr(self, f"{side}_momentum"):
                raise ValueError(
                    f"{side}_momentum applies to sgd only: drop it or use --{side}-optimizer sgd"
                )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """[data]: where the clients' examples come from and who builds their datasets."""

    source: str = option(
        "synthetic",
        f"a data source ({', '.join(SOURCES)}) or the path of an .npz file with arrays x, y and client",
        flag="data",
        decides_result=True,
    )
    data_dir: str = option(
        "",
        "where file-backed sources look (e.g. TFF's EMNIST cache); empty: their usual places",
        unit="path",
        decides_result=True,
    )
    test_data: str = option(
        "", "a separate .npz of test examples for an .npz source", unit="path", decides_result=True
    )
    population: int = option(
        3383,
        "training clients of the synthetic source (files have their own); 3,383 as in EMNIST digits",
        decides_result=True,
    )
    placement: str = option(
        "workers", "where client datasets are built", flag="data-placement", choices=names(DATA_PLACEMENTS)
    )
    feature_scale: str = option(
        "auto",
        "files: what the features are multiplied by: auto (uint8 by 1/255, other integers by 1/their "
        "largest magnitude, floats as they are), none, or a factor",
        decides_result=True,
    )
    partition: str = option(
        "",
        "files: split centralized data into clients: iid:N, dirichlet:N:ALPHA (label skew) or "
        "shards:N:S (each client S label-sorted shards); seeded by --seed",
        decides_result=True,
    )
    cache_dir: str = option(
        "",
        "where files are converted for the workers; empty: $XDG_CACHE_HOME/fedrun or ~/.cache/fedrun",
        unit="path",
    )

    def __post_init__(self) -> None:
        _at_least_one(self, "population")
        if self.feature_scale not in ("auto", "none"):
            try:
                valid = float(self.feature_scale) > 0
            except ValueError:
                valid = False
            if not valid:
                raise ValueError(
                    f"feature_scale must be auto, none or a positive number, got {self.feature_scale!r}"
                )
        if self.partition:
            from fedrun.data.files.partition import parse

            parse(self.partition)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """[eval]: federated evaluation of the round's model."""

    every: int = option(1, "evaluate every N rounds (0: never)", flag="eval-every", unit="rounds")
    clients: int = option(
        -1,
        "held-out clients that never train, only evaluate (-1: 32 for generated data, a tenth of a file's "
        "clients, none with --test-data); also the size of the 'sample' group",
        flag="eval-clients",
        decides_result=True,
    )
    on: str = option(
        "round_clients,heldout",
        "groups to evaluate on, comma-separated: "
        "round_clients (the round's clients' test examples), heldout, sample (a fixed "
        "sample of training clients)",
        flag="eval-on",
    )

    def __post_init__(self) -> None:
        _not_negative(self, "every", meaning_of_zero="0: never")
        if self.clients < -1:
            raise ValueError(
                f"eval_clients must be -1 (the source's default), 0 (none) or a count, got {self.clients}"
            )
        from fedrun.selection.cohort import EVAL_GROUPS

        groups = self.groups
        if not set(groups) <= set(EVAL_GROUPS) or len(set(groups)) != len(groups):
            raise ValueError(
                f"eval_on must list distinct groups from {', '.join(EVAL_GROUPS)} "
                f"separated by commas, got {self.on!r}"
            )
        if "sample" in groups and not self.clients:
            raise ValueError(
                "eval_on 'sample' evaluates eval_clients training clients: set eval_clients above 0"
            )

    @property
    def groups(self) -> list[str]:
        return self.on.split(",")

    @property
    def sample_size(self) -> int:
        """The size of the fixed evaluation sample (the 'sample' group, the speed quartiles)."""
        return self.clients if self.clients >= 0 else 32


@dataclasses.dataclass(frozen=True)
class DispatchConfig:
    """[dispatch]: how the coordinator spreads a round over the workers."""

    shards: int = option(0, "shards per round (0: one per worker); a worker that finishes takes the next")
    rpc_timeout_s: float = option(
        600.0, "deadline of one call to a worker; a hung worker's shard runs elsewhere after it", unit="s"
    )
    recycle_every: int = option(
        200,
        "replace every worker fedrun started with a fresh process "
        "every N rounds (0: never); TFF's worker grows slowly",
        flag="recycle-workers-every",
        unit="rounds",
    )

    speculate: bool = option(
        False,
        "run a copy of a slow shard on an idle worker once no shard waits; the first result counts "
        "and the other call is cancelled (the model is the same)",
    )
    speculation_threshold: float = option(
        1.5, "a shard is slow once it runs this many times as long as the median finished shard", unit="x"
    )
    shard_sizing: str = option(
        "equal",
        "equal: shards of equal work, taken by whichever worker is idle; speed: one shard per worker, "
        "sized by its measured speed, for pools of unequal workers",
        choices=SHARD_SIZINGS,
    )

    def __post_init__(self) -> None:
        _not_negative(self, "shards", meaning_of_zero="0: one per worker")
        _not_negative(self, "recycle_every", meaning_of_zero="0: never")
        _positive(self, "rpc_timeout_s")
        if not self.speculation_threshold >= 1:
            raise ValueError(
                f"speculation_threshold must be at least 1 (times the median shard), "
                f"got {self.speculation_threshold}"
            )
        if self.shard_sizing == "speed" and self.shards:
            raise ValueError(
                f"shard_sizing speed cuts one shard per worker: leave shards at 0, got {self.shards}"
            )


@dataclasses.dataclass(frozen=True)
class ObserveConfig:
    """[observe]: metrics, TensorBoard and the terminal."""

    metrics_port: int = option(0, "serve Prometheus /metrics on this port (0: not at all)")
    metrics_host: str = option("127.0.0.1", "address /metrics listens on; it has no authentication")
    pushgateway: str = option("", "Prometheus Pushgateway URL to push every round's metrics to")
    tensorboard: bool = option(True, "write TensorBoard scalars under OUT/tb")
    progress: bool = option(True, "show a progress bar on a terminal")
    client_timing: bool = option(
        True,
        "time each client's local work on its worker (client_time in rounds.jsonl); off: the same "
        "FedAvg without the clock",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be 0 (off) or a TCP port, got {self.metrics_port}")


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """[output]: where the run's files go and how often its state is saved."""

    dir: Path = option(
        Path("runs/latest"),
        "the run's folder: config, rounds, checkpoints, weights, worker logs",
        flag="out",
        unit="path",
    )
    checkpoint_every: int = option(
        1, "rounds between checkpoints (the last round always writes one)", unit="rounds"
    )

    def __post_init__(self) -> None:
        _at_least_one(self, "checkpoint_every")


SYSTEM_MODELS = ("none", "lognormal", "fedscale", "csv")


@dataclasses.dataclass(frozen=True)
class SystemConfig:
    """[system]: the simulated devices: their compute, network and availability (a virtual clock)."""

    model: str = option(
        "none",
        "how long each client's round takes on its simulated device: none (no "
        "simulated time), lognormal, fedscale (FedScale's traces), csv (a table of yours)",
        flag="system-model",
        choices=SYSTEM_MODELS,
        decides_result=True,
    )
    compute_s_per_example: float = option(
        0.005, "lognormal: median seconds a device takes per example and epoch", unit="s", decides_result=True
    )
    compute_sigma: float = option(
        0.6,
        "lognormal: spread (sigma of the log) of seconds per example across devices, FedScale's tail skew",
        decides_result=True,
    )
    bandwidth_kbps: float = option(
        5000.0, "lognormal: median download and upload bandwidth", unit="kbit/s", decides_result=True
    )
    bandwidth_sigma: float = option(
        0.6, "lognormal: spread (sigma of the log) of bandwidth across devices", decides_result=True
    )
    rtt_s: float = option(
        0.05, "lognormal: round-trip latency added to each transfer", unit="s", decides_result=True
    )
    device_trace: str = option(
        "",
        "fedscale: FedScale's device-capacity pickle; csv: your table "
        "(client,compute_s_per_example,bandwidth_kbps[,rtt_s])",
        unit="path",
        decides_result=True,
    )
    availability_trace: str = option(
        "",
        "FedScale's behaviour-trace pickle: clients are selected only while "
        "active and lost if they go offline before finishing",
        unit="path",
        decides_result=True,
    )
    speed_data_skew: float = option(
        0.0,
        "synthetic data with the lognormal model: tie each writer's digit mix "
        "to its device speed (0: independent; 1: slow devices write mostly 5-9)",
        decides_result=True,
    )

    def __post_init__(self) -> None:
        _positive(self, "compute_s_per_example", "bandwidth_kbps")
        _not_negative(self, "compute_sigma", "bandwidth_sigma", "rtt_s")
        needs_file = self.model in ("fedscale", "csv")
        if needs_file != bool(self.device_trace):
            raise ValueError(
                f"system_model {self.model} {'needs' if needs_file else 'takes no'} --device-trace"
                + (" (FedScale's device pickle, or your CSV)" if needs_file else "")
            )
        if self.model == "none" and (self.availability_trace or self.speed_data_skew):
            raise ValueError("--availability-trace and --speed-data-skew need a --system-model")
        if self.speed_data_skew and self.model != "lognormal":
            raise ValueError(
                "--speed-data-skew ties data to the lognormal model's speeds: use --system-model lognormal"
            )

    @property
    def enabled(self) -> bool:
        return self.model != "none"


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """[policy]: which selected clients count, as production FL decides it (needs a system model)."""

    over_selection: float = option(
        1.0, "select ceil(F x clients per round) and keep the first to finish", decides_result=True
    )
    deadline_s: float = option(
        0.0,
        "clients not finished by this simulated time are dropped (0: no deadline)",
        unit="s",
        decides_result=True,
    )
    dropout: float = option(
        0.0, "chance that a selected client fails mid-round and never reports", decides_result=True
    )
    min_reporting: int = option(
        0,
        "a round with fewer reports is abandoned: model unchanged, time spent (0: never)",
        decides_result=True,
    )

    def __post_init__(self) -> None:
        if self.over_selection < 1:
            raise ValueError(
                f"over_selection must be at least 1 (1: no over-selection), got {self.over_selection}"
            )
        _not_negative(self, "deadline_s", meaning_of_zero="0: no deadline")
        _not_negative(self, "min_reporting", meaning_of_zero="0: never abandon")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a probability in [0, 1), got {self.dropout}")

    @property
    def any(self) -> bool:
        return (
            self.over_selection > 1 or bool(self.deadline_s) or bool(self.dropout) or bool(self.min_reporting)
        )

    def selected(self, clients_per_round: int) -> int:
        """Clients to select for a round that needs `clients_per_round`."""
        return math.ceil(self.over_selection * clients_per_round - 1e-9)


# How the server aggregates client results (`--aggregation`).
AGGREGATIONS = ("sync", "buffered-async")


@dataclasses.dataclass(frozen=True)
class AggregationConfig:
    """[aggregation]: synchronous rounds, or buffered asynchronous updates (FedBuff) on the virtual clock."""

    mode: str = option(
        "sync",
        "sync: rounds that wait for their clients; buffered-async: clients train continuously and the "
        "server updates every buffer-size results (FedBuff; needs a system model)",
        flag="aggregation",
        choices=AGGREGATIONS,
        decides_result=True,
    )
    buffer_size: int = option(16, "buffered-async: results per server update (B)", decides_result=True)
    max_concurrency: int = option(
        64, "buffered-async: clients training at once on the virtual clock (C)", decides_result=True
    )
    max_staleness: int = option(
        0,
        "buffered-async: results more server versions old than this are discarded (0: none are)",
        decides_result=True,
    )
    staleness_weight: str = option(
        "sqrt",
        "buffered-async: weight of a result of staleness s: sqrt (1/sqrt(1+s)), constant (1) or "
        "polynomial:A ((1+s)^-A)",
        decides_result=True,
    )

    def __post_init__(self) -> None:
        _at_least_one(self, "buffer_size", "max_concurrency")
        _not_negative(self, "max_staleness", meaning_of_zero="0: no limit")
        staleness_weighting(self.staleness_weight)  # a ValueError naming the choices

    @property
    def buffered(self) -> bool:
        return self.mode == "buffered-async"
