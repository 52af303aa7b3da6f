"""What `fedrun bench` runs: an ordinary run configuration plus the benchmark's own options."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from fedrun.config import BY_FLAG, RunConfig, add_config_flags, chosen_flags, flag_values, resolve
from fedrun.errors import FedrunError

SYSTEMS = ("fedrun", "fedrun_untimed", "tff_local", "tff_local_same_loop", "tf_loop")
PEERS = ("tff_local", "tff_local_same_loop", "tf_loop")  # what fedrun's speed targets are against
LABELS = {
    "fedrun": "fedrun",
    "fedrun_untimed": "fedrun, clients untimed",
    "tff_local": "TFF local context",
    "tff_local_same_loop": "TFF local, fedrun's data and loop",
    "tf_loop": "TF loop",
}
# Named workload shapes (`--preset`); flags given explicitly win.
PRESETS = {"cross-device": {"epochs": 1, "clients-per-round": 256}}
# The workloads the targets were set for: the defaults, and the cross-device preset.
REFERENCE_SHAPES = ({}, PRESETS["cross-device"])
DEFAULT_FILE_CLIENTS = 500  # writers in the file the bench writes: ~53,000 training examples
PEER_SIMULATORS = ("pfl",)  # `--peers`: other simulators, each in an environment of its own
# The run options `fedrun bench` takes, by flag; everything else keeps RunConfig's defaults.
WORKLOAD_FLAGS = (
    "rounds",
    "clients-per-round",
    "epochs",
    "batch-size",
    "shuffle-buffer",
    "client-lr",
    "server-lr",
    "seed",
    "data",
    "data-dir",
    "population",
    "model",
    "eval-clients",
    "worker-isolation",
    "client-loop",
    "worker-max-concurrent-calls",
    "worker-intra-op-threads",
    "worker-inter-op-threads",
    "workers",
    "buffer-size",
    "max-concurrency",
    "staleness-weight",
)
DEFAULT_SCALE_CLIENTS = (16, 32, 64, 128, 256, 512, 1024)
MEMORY_CHECKPOINT_ROUND = 10  # --rounds-memory reports the peak after this round and after the last

# Agreement of the final models. fedrun runs TFF's own computations, only split across workers,
# so it must match TFF's local context to the equality test's bound. The TF loop computes the
# same math in a graph of its own and averages deltas in float64 rather than TFF's float32, so
# it agrees only to float32 rounding (measured: ~1e-8 after 10 rounds); 1e-4 is far above that
# and far below what one round changes (~1e-3).
FEDRUN_VS_TFF_MAX_WEIGHT_DIFF = 1e-5
TF_LOOP_MAX_WEIGHT_DIFF = 1e-4
MAX_TEST_ACCURACY_DIFF = 1e-3  # held-out accuracy; a weight difference of 1e-4 flips almost no prediction

# The targets (2 cores): ratios of examples/s measured in the same run.
TARGET_RATIO = 1.7
# On a file: fedrun over TFF's local context given the tutorial's Python-built datasets, and over
# fedrun itself on the embedded data (same workload, interleaved).
TARGET_FILE_RATIO = 1.8
TARGET_FILE_VS_EMBEDDED = 0.9
# fedrun over pfl-research (`--peers pfl`) on the same file, each process count.
TARGET_PEER_RATIO = 1.2
# What a client costs on a worker beyond its epochs (fedrun.bench.client_costs), in ms.
TARGET_FIXED_MS_PER_CLIENT = 3.0
# What timing each client on its worker may cost: fedrun's round latency over the same rounds
# with TFF's untimed FedAvg (per-round pairs).
TARGET_TIMING_OVERHEAD = 1.02
# Buffered-async's wall examples/s over synchronous FedAvg's with K = B on the same workers.
TARGET_BUFFERED_THROUGHPUT = 0.8
# Checked on the tree's summed RSS: an upper bound that, unlike PSS, other processes do not move.
TARGET_PEAK_MEMORY_BYTES = int(1.2 * 2**30)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What `fedrun bench` runs; the workload is an ordinary RunConfig."""

    workload: RunConfig
    out: Path | None = None
    scale: bool = False
    scale_clients: tuple[int, ...] = DEFAULT_SCALE_CLIENTS
    scale_rounds: int = 3  # timed rounds per point of the scale tables, after one untimed round
    rounds_memory: int = 0  # 0: off; otherwise fedrun rounds for the long memory check
    repeat: int = 1  # comparisons run one after another; the median one is reported
    stragglers: bool = False  # also: one worker slowed, and what each mitigation does about it
    slow_factor: float = 4.0  # how much slower the slowed worker is made
    buffered: bool = False  # also: buffered-async aggregation's throughput beside synchronous FedAvg
    file_data: bool = False  # also: the same workload on a file the bench writes (file_clients writers)
    file_clients: int = DEFAULT_FILE_CLIENTS
    peers: tuple[str, ...] = ()  # other simulators run beside fedrun on the .npz workload
    timing_rounds: int = 0  # 0: off; otherwise rounds of fedrun timed against untimed

    @property
    def reference_workload(self) -> bool:
        """Whether this is a workload the targets were set for: the defaults or the cross-device
        preset (workers and worker threads aside)."""
        for shape in REFERENCE_SHAPES:
            expected = RunConfig()
            if shape:
                expected = resolve(flag_values(shape))
            if all(
                self.workload.value(BY_FLAG[flag]) == expected.value(BY_FLAG[flag])
                for flag in WORKLOAD_FLAGS
                if not flag.startswith("worker")
            ):
                return True
        return False

    def __post_init__(self) -> None:
        config = self.workload
        w = config.workload
        if w.rounds < 2:
            raise ValueError(
                f"rounds must be at least 2 (round 1 warms up; latency is measured on "
                f"the later rounds), got {w.rounds}"
            )
        if config.eval.clients == 0:
            raise ValueError(
                "eval_clients must be at least 1: the systems' final models are "
                "compared on the held-out clients"
            )
        if config.workers.backend != "local":
            raise ValueError(
                f"bench runs fedrun on local workers; backend {config.workers.backend!r} is not supported"
            )
        plain_sgd = (
            (w.client_optimizer, w.server_optimizer) == ("sgd", "sgd")
            and not w.client_momentum
            and not w.server_momentum
        )
        if not plain_sgd or config.data.placement != "workers":
            raise ValueError(
                "bench's TF loop implements FedAvg with plain client and server SGD on "
                "data built from client keys: keep the default optimizers and data_placement"
            )
        if not self.scale_clients or min(self.scale_clients) < 1:
            raise ValueError(f"scale_clients must be positive client counts, got {self.scale_clients}")
        if self.scale and max(self.scale_clients) > config.data.population:
            raise ValueError(
                f"scale_clients go up to {max(self.scale_clients)}, more than the population "
                f"({config.data.population}): raise --population or lower --scale-clients"
            )
        if self.repeat < 1:
            raise ValueError(f"repeat must be at least 1, got {self.repeat}")
        if self.stragglers and config.workers.count < 2:
            raise ValueError("stragglers slows one worker of several: run it with --workers 2 or more")
        if not self.slow_factor > 1:
            raise ValueError(f"slow_factor must be more than 1, got {self.slow_factor}")
        if self.scale_rounds < 1:
            raise ValueError(f"scale_rounds must be at least 1, got {self.scale_rounds}")
        if self.file_clients < 2:
            raise ValueError(f"file_clients must be at least 2, got {self.file_clients}")
        if unknown := set(self.peers) - set(PEER_SIMULATORS):
            raise ValueError(f"peers must be among {', '.join(PEER_SIMULATORS)}, got {sorted(unknown)}")
        if self.peers and not (self.file_data or config.data.source.endswith(".npz")):
            raise ValueError("peers run on an .npz file: give --data FILE.npz or leave --file-data on")
        if self.timing_rounds < 0:
            raise ValueError(f"timing_rounds must be 0 (off) or more, got {self.timing_rounds}")
        if self.rounds_memory and self.rounds_memory <= MEMORY_CHECKPOINT_ROUND:
            raise ValueError(
                f"rounds_memory must be 0 (off) or more than {MEMORY_CHECKPOINT_ROUND} "
                f"rounds, got {self.rounds_memory}"
            )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload's run options (fedrun's own defaults, but --workers: one per core) and the
    benchmark's own."""
    add_config_flags(parser, only=WORKLOAD_FLAGS)
    parser.add_argument("--out", type=Path, metavar="FILE", help="write every number as JSON to FILE")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="also measure round latency against clients per round and against workers",
    )
    parser.add_argument(
        "--scale-clients",
        default=",".join(map(str, DEFAULT_SCALE_CLIENTS)),
        metavar="K,K,...",
        help="clients per round for --scale (default: %(default)s)",
    )
    parser.add_argument(
        "--scale-rounds",
        type=int,
        default=3,
        metavar="INT",
        help="timed rounds per --scale point (default: %(default)s)",
    )
    parser.add_argument(
        "--rounds-memory",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also run fedrun for ROUNDS rounds (e.g. 1000; long) and report its "
        "peak process-tree memory after round 10 and after the last",
    )
    parser.add_argument(
        "--timing-rounds",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also run fedrun with its clients timed and untimed for ROUNDS rounds each, "
        "interleaved (e.g. 300), and judge what timing costs on that rather than the comparison's rounds",
    )
    parser.add_argument(
        "--stragglers",
        action="store_true",
        help="also measure round latency with the last worker slowed down (--slow-factor) for: no "
        "mitigation, 4 shards per worker, speculative copies, speed-sized shards, and no straggler",
    )
    parser.add_argument(
        "--slow-factor",
        type=float,
        default=4.0,
        metavar="FACTOR",
        help="how many times slower --stragglers makes its slow worker (default: %(default)s)",
    )
    parser.add_argument(
        "--buffered",
        action="store_true",
        help="also measure buffered-async aggregation's wall throughput (--buffer-size, "
        "--max-concurrency, lognormal devices) beside synchronous FedAvg with as many clients per round",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named workload: cross-device = --epochs 1 --clients-per-round 256 (few examples, "
        "many clients); flags given explicitly win",
    )
    parser.add_argument(
        "--file-data",
        action=argparse.BooleanOptionalAction,
        help="also run the workload on an .npz file the bench writes once into the cache folder "
        "(the file-backed path users' data takes); default: on unless --data is given",
    )
    parser.add_argument(
        "--file-clients",
        type=int,
        default=DEFAULT_FILE_CLIENTS,
        metavar="INT",
        help="writers in the file of --file-data (default: %(default)s)",
    )
    parser.add_argument(
        "--peers",
        default="",
        metavar="NAME,...",
        help="also run other simulators beside fedrun on the .npz workload (the bench's file, or "
        "--data FILE.npz), on 1 process and on --workers: pfl (pfl-research 0.6.0; its environment "
        "comes from `make bench-peers`)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="INT",
        help="run the comparison INT times and report the median one: this "
        "machine's speed drifts (default: %(default)s)",
    )


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    try:
        scale_clients = tuple(int(k) for k in args.scale_clients.split(",") if k.strip())
    except ValueError:
        raise FedrunError(
            f"--scale-clients must be comma-separated integers, got {args.scale_clients!r}"
        ) from None
    chosen = chosen_flags(args)
    flags = {
        "workers": os.cpu_count() or 1,
        **PRESETS.get(args.preset or "", {}),
        **chosen,
        "eval-every": 0,
        "tensorboard": False,
        "progress": False,
    }
    workload = resolve(flag_values(flags))
    try:
        return BenchConfig(
            workload=workload,
            out=args.out,
            scale=args.scale,
            scale_clients=scale_clients,
            scale_rounds=args.scale_rounds,
            rounds_memory=args.rounds_memory,
            timing_rounds=args.timing_rounds,
            repeat=args.repeat,
            stragglers=args.stragglers,
            slow_factor=args.slow_factor,
            buffered=args.buffered,
            file_data=args.file_data if args.file_data is not None else "data" not in chosen,
            file_clients=args.file_clients,
            peers=tuple(name.strip() for name in args.peers.split(",") if name.strip()),
        )
    except ValueError as e:
        raise FedrunError(f"invalid benchmark configuration: {e}") from None
