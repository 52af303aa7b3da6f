"""The run's typed configuration: defaults < TOML file < command-line flags, validated once."""

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import tomli_w

from fedrun.errors import FedrunError

OPTIMIZERS = ("sgd", "adam")
EVAL_GROUPS = ("round_clients", "heldout", "sample")
DATA_PLACEMENTS = ("workers", "coordinator")
CLIENT_LOOPS = ("iterator", "reduce")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's result and how it is executed.

    Field names are the TOML keys; the flags are the same names with dashes.
    """

    # Workload (these decide the model a run ends with).
    rounds: int = 10
    clients_per_round: int = 32
    epochs: int = 5
    batch_size: int = 32
    shuffle_buffer: int = 1000
    client_lr: float = 0.01
    server_lr: float = 1.0
    seed: int = 0
    data: str = "synthetic"  # a registered source name or a path to an .npz file
    data_dir: str = ""  # where file-backed sources look (e.g. TFF's EMNIST cache); "" = their default
    test_data: str = ""  # optional separate test file for an .npz source
    population: int = 3383  # writers in TFF's federated EMNIST digits (synthetic source)
    model: str = "linear"
    client_optimizer: str = "sgd"
    client_momentum: float = 0.0
    server_optimizer: str = "sgd"  # "adam" makes FedAdam
    server_momentum: float = 0.0
    eval_every: int = 1
    eval_clients: int = 32  # held-out clients (they never train, only evaluate); also the size of eval_on's "sample"
    eval_on: str = "round_clients,heldout"  # comma-separated groups: round_clients, heldout, sample
    checkpoint_every: int = 1  # rounds between checkpoints (the last round always writes one)
    # Execution (these must not change the result).
    backend: str = "local"
    workers: int = 2
    shards: int = 0  # 0: one shard per worker
    worker_max_concurrent_calls: int = 2
    # TensorFlow threads per worker (0: TensorFlow's default, one per core). Measured with one worker
    # per core on 2 cores, against the TF loop: 1 and 2 gave 1.86-1.98x; 1 and 1, 1.60-1.64x;
    # 0 and 0, 1.80x; 2 and 2, 1.71x (README). On bigger nodes with fewer workers, raise them.
    worker_intra_op_threads: int = 1
    worker_inter_op_threads: int = 2
    worker_start_timeout_s: float = 60.0
    rpc_timeout_s: float = 600.0
    # TFF's worker grows by about 14 MiB per 100 rounds (measured): replace each worker with a fresh
    # one after every N rounds (0 = never). Results do not change; fedrun-started workers only.
    recycle_workers_every: int = 200
    data_placement: str = "workers"  # "workers": they build client data from keys; "coordinator": it ships tensors
    # How a client steps through its batches: "iterator" (TFF's DATASET_ITERATOR) or "reduce" (TFF's
    # default DATASET_REDUCE, which TF 2.14 re-instantiates for every client: ~2x the CPU per example here).
    client_loop: str = "iterator"
    # Worker isolation and externally run workers.
    worker_isolation: str = "auto"  # local workers: "netns", "none", or "auto" (netns if possible)
    worker_binary: str = ""  # "" = the worker_binary shipped with tensorflow_federated
    worker_addresses: str = ""  # static backend: "host:port,host:port" or "unix:/path" targets
    allow_remote_workers: bool = False  # static backend: permit non-loopback worker addresses
    # Ray backend.
    ray_address: str = ""  # "" = start a private local Ray; otherwise join this cluster
    worker_cpus: float = 1.0
    worker_gpus: float = 0.0
    worker_resources: str = ""  # extra Ray resources per worker, "name=amount,name=amount"
    placement_strategy: str = "PACK"  # PACK, SPREAD, STRICT_PACK, STRICT_SPREAD
    # Observability.
    metrics_port: int = 0  # 0 = no /metrics endpoint
    metrics_host: str = "127.0.0.1"
    pushgateway: str = ""  # Prometheus Pushgateway URL for batch runs
    tensorboard: bool = True  # scalars under OUT/tb
    out: Path = Path("runs/latest")
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ["rounds", "clients_per_round", "epochs", "batch_size", "shuffle_buffer",
                    "population", "workers", "worker_max_concurrent_calls", "checkpoint_every"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ["client_lr", "server_lr", "worker_start_timeout_s", "rpc_timeout_s", "worker_cpus"]:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be greater than 0, got {getattr(self, name)}")
        if self.eval_clients < 0:
            raise ValueError(f"eval_clients must be 0 (none) or a number of clients, got {self.eval_clients}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be 0 (never) or a number of rounds, got {self.eval_every}")
        if self.recycle_workers_every < 0:
            raise ValueError(f"recycle_workers_every must be 0 (never) or a number of rounds, "
                             f"got {self.recycle_workers_every}")
        if self.shards < 0:
            raise ValueError(f"shards must be 0 (one per worker) or a positive count, got {self.shards}")
        for name in ["client_momentum", "server_momentum", "worker_gpus", "worker_intra_op_threads",
                     "worker_inter_op_threads"]:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be 0 (off) or a TCP port, got {self.metrics_port}")
        if self.placement_strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ValueError(f"placement_strategy must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, "
                             f"got {self.placement_strategy!r}")
        if self.worker_isolation not in ("auto", "netns", "none"):
            raise ValueError(f"worker_isolation must be auto, netns or none, got {self.worker_isolation!r}")
        if self.backend == "static" and len(self.worker_address_list) != self.workers:
            raise ValueError(f"the static backend runs one worker per address: worker_addresses lists "
                             f"{len(self.worker_address_list)}, workers is {self.workers}; pass e.g. "
                             f"--workers 2 --worker-addresses host-a:8000,host-b:8000")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        for name in ["client_optimizer", "server_optimizer"]:
            if getattr(self, name) not in OPTIMIZERS:
                raise ValueError(f"{name} must be one of {', '.join(OPTIMIZERS)}, got {getattr(self, name)!r}")
            momentum = name.replace("optimizer", "momentum")
            if getattr(self, name) != "sgd" and getattr(self, momentum):
                raise ValueError(f"{momentum} applies to sgd only: drop it or use --{name.replace('_', '-')} sgd")
        groups = self.eval_on.split(",")
        if not set(groups) <= set(EVAL_GROUPS) or len(set(groups)) != len(groups):
            raise ValueError(f"eval_on must list distinct groups from {', '.join(EVAL_GROUPS)} separated by "
                             f"commas, got {self.eval_on!r}")
        if "sample" in groups and not self.eval_clients:
            raise ValueError("eval_on 'sample' evaluates eval_clients training clients: set eval_clients above 0")
        if self.data_placement not in DATA_PLACEMENTS:
            raise ValueError(f"data_placement must be one of {', '.join(DATA_PLACEMENTS)}, "
                             f"got {self.data_placement!r}")
        if self.client_loop not in CLIENT_LOOPS:
            raise ValueError(f"client_loop must be one of {', '.join(CLIENT_LOOPS)}, got {self.client_loop!r}")
        if self.data == "synthetic" and self.clients_per_round > self.population:
            raise ValueError(f"clients_per_round ({self.clients_per_round}) exceeds the population "
                             f"({self.population}): lower --clients-per-round or raise --population")

    def workload_differences(self, other: "RunConfig") -> list[str]:
        """Fields that decide the result and differ; `rounds` may grow when resuming."""
        execution = {"rounds", "backend", "workers", "shards", "worker_max_concurrent_calls",
                     "worker_start_timeout_s", "rpc_timeout_s", "ray_address", "worker_cpus",
                     "worker_gpus", "worker_resources", "placement_strategy", "metrics_port",
                     "metrics_host", "pushgateway", "tensorboard", "out", "progress", "checkpoint_every",
                     "worker_isolation", "worker_addresses", "allow_remote_workers", "worker_binary",
                     "data_placement", "client_loop", "recycle_workers_every", "worker_intra_op_threads",
                     "worker_inter_op_threads"}
        return [name for name in FIELDS if name not in execution
                and getattr(self, name) != getattr(other, name)]

    @property
    def num_shards(self) -> int:
        return self.shards or self.workers

    @property
    def worker_address_list(self) -> list[str]:
        return [address.strip() for address in self.worker_addresses.split(",") if address.strip()]

    def to_toml(self) -> str:
        return tomli_w.dumps({k: str(v) if isinstance(v, Path) else v
                              for k, v in dataclasses.asdict(self).items()})


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_HINTS = typing.get_type_hints(RunConfig)


def field_type(name: str) -> type:
    hint = _HINTS[name]
    if isinstance(hint, types.UnionType):
        hint = next(t for t in typing.get_args(hint) if t is not type(None))
    return hint


def _coerce(name: str, value: Any, origin: str) -> Any:
    kind = field_type(name)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, (str, Path))
        value = kind(value) if ok else value
    if not ok:
        raise FedrunError(f"{origin}: '{name}' must be {kind.__name__}, got {value!r}")
    return value


def load_toml(path: Path) -> dict[str, Any]:
    """Read a config file; unknown keys and wrong types are errors, not silently ignored."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FedrunError(f"config file {path} does not exist: check the --config path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FedrunError(f"config file {path} is not valid TOML ({e}): fix the file") from None
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise FedrunError(f"config file {path}: unknown key(s) {', '.join(unknown)}; "
                          f"valid keys: {', '.join(FIELDS)}")
    return {k: _coerce(k, v, f"config file {path}") for k, v in raw.items()}


def resolve(file_values: dict[str, Any], flag_values: dict[str, Any]) -> RunConfig:
    """Defaults, then the file, then flags; any invalid value becomes a FedrunError."""
    values = {**file_values, **{k: _coerce(k, v, "flag") for k, v in flag_values.items()}}
    try:
        return RunConfig(**values)
    except ValueError as e:
        raise FedrunError(f"invalid configuration: {e}") from None
