"""The `fedrun` command: run a simulation, run one worker, report on a run.

Other commands (the benchmark) register themselves under the entry-point group `fedrun.commands`
with a function that adds their subparser; the product imports none of them. Errors a user can
cause print as one paragraph without a traceback and exit with status 2.
"""

import argparse
import contextlib
import difflib
import importlib.metadata
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from cluster import UserError, WorkerSettings, serve_worker
from fedrun.config import (
    BY_FLAG,
    RunConfig,
    add_config_flags,
    chosen_flags,
    flag_values,
    read_config_file,
    read_grid_file,
    resolve,
)
from fedrun.errors import FedrunError
from fedrun.loop.preflight import preflight
from fedrun.loop.run_dir import CONFIG, TENSORBOARD
from fedrun.stopping import STOP, Interrupted

EXIT_ERROR = 2
PLUGIN_GROUP = "fedrun.commands"


class Parser(argparse.ArgumentParser):
    """No abbreviated flags (`--round` is not `--rounds`), and one line for a usage error, with the
    help command, instead of the whole usage."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = self._commands.get(getattr(parsed, "command", None), self)
            known = [o for action in command._actions for o in action.option_strings if o.startswith("--")]
            hints = [
                f"{arg} (did you mean {close[0]}?)"
                if (close := difflib.get_close_matches(arg.split("=", 1)[0], known, n=1))
                else arg
                for arg in unknown
            ]
            command.error(f"unrecognized arguments: {' '.join(hints)}")
        return parsed

    _commands: dict[str, argparse.ArgumentParser] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fedrun",
        description="A distributed, multi-process federated-learning simulator on "
        "TensorFlow Federated's executor service.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = commands.add_parser(
        "run",
        help="run a federated simulation",
        description="Run FedAvg rounds sharded across TFF worker processes. Every "
        "option is also a key of the --config file's table shown.",
    )
    run.add_argument("--config", type=Path, metavar="FILE", help="TOML file with any of the options below")
    run.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue the run in DIR from its last checkpoint, with its config",
    )
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (its rounds, checkpoint, weights, report and "
        "TensorBoard events) once the new run is ready",
    )
    add_config_flags(run)
    run.set_defaults(handler=run_simulation)

    worker = commands.add_parser(
        "worker",
        help="run one TFF worker in the foreground, for `fedrun run --backend static`",
        description="Run TFF's executor service on --port of every interface, without "
        "authentication: let only the coordinator reach it (NetworkPolicy, firewall).",
    )
    worker.add_argument("--port", type=int, default=8000, help="TCP port to listen on; default: 8000")
    for flag, name in _WORKER_FLAGS.items():
        info = BY_FLAG[name]
        worker.add_argument(f"--{flag}", type=info.type, default=info.default, help=info.describe())
    worker.set_defaults(handler=run_worker)

    report = commands.add_parser(
        "report",
        help="plot a run and summarize it in markdown",
        description="Write PNG plots and summary.md for the run in DIR, finished or still going.",
    )
    report.add_argument("dir", type=Path, metavar="DIR", help="the --out directory of a run")
    report.add_argument("--round", type=int, help="round for the per-worker shard chart; default: the last")
    report.add_argument("--out", type=Path, help="where to write the report; default: DIR/report")
    report.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        default=[],
        metavar="OTHER",
        help="other runs to plot beside DIR in accuracy_runs.png (e.g. sync vs buffered-async)",
    )
    report.set_defaults(handler=run_report)

    sweep = commands.add_parser(
        "sweep",
        help="run a grid of simulations on shared workers; one table and the stragglers' figures",
        description="Run every combination of the --grid file's values (each an ordinary run: the "
        "--config file, then the flags, then the cell's values) one after another on one pool of "
        "workers, into DIR/cells/; then write DIR/sweep.csv, sweep.jsonl, summary.csv (mean and "
        "spread over seeds) and the figures the grid allows. Rerun the same command to resume: "
        "finished cells are kept, a cut one resumes from its checkpoint.",
    )
    sweep.add_argument("--config", type=Path, metavar="FILE", help="TOML file with the base options")
    sweep.add_argument(
        "--grid",
        type=Path,
        required=True,
        metavar="FILE",
        help="TOML file listing each option to vary with its values, e.g. over_selection = [1.0, 1.3]",
    )
    sweep.add_argument(
        "--target-accuracy",
        type=float,
        default=0.6,
        metavar="ACC",
        help="the accuracy time-to-accuracy is measured to (default: %(default)s)",
    )
    sweep.add_argument("--debug", action="store_true", help="show tracebacks")
    add_config_flags(sweep)
    sweep.set_defaults(handler=run_sweep_command)

    cache = commands.add_parser(
        "cache",
        help="list or remove the data conversions fedrun keeps for the workers",
        description="Files (.npz, EMNIST) are converted once into a cache folder; list what is there or "
        "remove it (a removed conversion is made again when a run needs it).",
    )
    cache.add_argument("action", choices=("list", "clear"), help="list the conversions, or remove them")
    cache.add_argument("names", nargs="*", metavar="NAME", help="clear: only these (default: all)")
    cache.add_argument("--cache-dir", default="", metavar="PATH", help=BY_FLAG["cache-dir"].describe())
    cache.set_defaults(handler=run_cache)

    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        entry.load()(commands)  # adds its subparser, with set_defaults(handler=...)
    parser._commands = dict(commands.choices)
    return parser


# `fedrun worker`'s flags: the run's worker settings, under the names a single worker uses.
_WORKER_FLAGS = {
    "max-concurrent-calls": "worker-max-concurrent-calls",
    "intra-op-threads": "worker-intra-op-threads",
    "inter-op-threads": "worker-inter-op-threads",
}


def run_config(args: argparse.Namespace) -> RunConfig:
    """The config to run: from --config and flags, or, when resuming, the saved one (flags may
    change how it runs and extend `rounds`, never what it computes)."""
    flags = flag_values(chosen_flags(args))
    file_values = read_config_file(args.config) if args.config else {}
    if args.resume is None:
        return resolve(file_values, flags)
    if not (args.resume / CONFIG).is_file():
        raise FedrunError(
            f"--resume {args.resume}: no {CONFIG} there, so it is not a fedrun run "
            f"directory; pass the --out directory of the run to continue"
        )
    here = {"output": {"dir": args.resume}}
    saved = resolve(read_config_file(args.resume / CONFIG), here)
    asked = resolve(saved.as_tables(), file_values, flags, here)
    differences = saved.result_differences(asked)
    if differences:
        changes = ", ".join(
            f"{i.key}: {saved.value(i)!r} there, {asked.value(i)!r} here" for i in differences
        )
        raise FedrunError(
            f"--resume {args.resume}: that run was made with a different configuration ({changes}); "
            f"drop those options to resume it, or start a new run with another --out"
        )
    return asked


def observability(config: RunConfig) -> list:
    """The optional observers: Prometheus metrics when served or pushed (first, so a taken port fails
    before TensorFlow loads), TensorBoard scalars."""
    observe = config.observe
    observers: list = []
    if observe.metrics_port or observe.pushgateway:
        from prometheus_client import CollectorRegistry

        from fedrun.observe.prometheus import PrometheusMetrics

        observers.append(
            PrometheusMetrics(
                CollectorRegistry(),
                port=observe.metrics_port,
                host=observe.metrics_host,
                pushgateway=observe.pushgateway,
                run=str(config.output.dir.resolve()),
            )
        )
    if observe.tensorboard:
        from fedrun.observe.tensorboard import TensorBoardLog  # loads TensorFlow

        observers.append(TensorBoardLog(config.output.dir / TENSORBOARD))
    return observers


def run_worker(args: argparse.Namespace) -> int:
    """`fedrun worker`: exits with the worker's status; SIGTERM reaches the worker."""
    settings = WorkerSettings(
        max_concurrent_calls=args.max_concurrent_calls,
        intra_op_threads=args.intra_op_threads,
        inter_op_threads=args.inter_op_threads,
    )
    return serve_worker(args.port, settings)


def run_report(args: argparse.Namespace) -> int:
    from fedrun.report.writer import write_report  # matplotlib loads only for this command

    run_dir = args.dir.parent if args.dir.is_file() else args.dir  # a file in the run's folder will do
    summary = write_report(run_dir, round_num=args.round, out=args.out, compare=args.compare)
    print(f"report written: {summary}")
    return 0


def run_sweep_command(args: argparse.Namespace) -> int:
    with quiet_tensorflow_load():
        from fedrun.loop.simulation import simulate  # noqa: F401 (loads TensorFlow)
        from fedrun.sweep.figures import write_figures
        from fedrun.sweep.runner import SweepSpec, run_sweep

    flags = chosen_flags(args)
    out = flags.pop("out", None)
    if out is None:
        raise FedrunError("fedrun sweep needs --out DIR: the folder that holds the sweep's cells and table")
    if not 0 < args.target_accuracy <= 1:
        raise FedrunError(f"--target-accuracy must be in (0, 1], got {args.target_accuracy}")
    spec = SweepSpec(
        base=read_config_file(args.config) if args.config else {},
        flags=flags,
        grid=read_grid_file(args.grid),
        out=Path(out).absolute(),  # a relative or absolute --out names the same sweep
        target_accuracy=args.target_accuracy,
    )
    cells = spec.cells  # every cell's configuration is checked before a worker starts
    print(f"fedrun sweep: {len(cells)} cells into {spec.out}", flush=True)

    try:
        outcome = run_sweep(spec, STOP.check, write_figures)
    except Interrupted as stop:
        print(
            f"fedrun sweep: {stop}: stopped; finished cells and the cut cell's checkpoint are kept in "
            f"{spec.out} (rerun the same command to resume)",
            file=sys.stderr,
        )
        return stop.exit_code
    print(sweep_table(outcome.rows, [info.key for info, _ in spec.grid]))
    for pool in outcome.pools:
        cells_run, builds = len(pool["cells"]), pool["algorithm_builds"]
        print(
            f"pool of {pool['workers']} workers: started in {pool['start_s']:.1f} s, ran {cells_run} cells "
            f"with {builds} builds ({pool['build_s']:.1f} s); sharing it saved about "
            f"{pool['saved_s_estimate']:.0f} s"
        )
    print(
        f"table: {spec.out / 'sweep.csv'}, {spec.out / 'summary.csv'}; figures: {', '.join(outcome.figures)}"
    )
    if outcome.failures:
        print(
            f"fedrun sweep: {len(outcome.failures)} cells stopped with an error (the table's status column "
            f"says why): {', '.join(outcome.failures)}",
            file=sys.stderr,
        )
        return 1
    return 0


def sweep_table(rows: list[dict], options: list[str]) -> str:
    """A few columns of each cell, as text."""
    columns = [
        *options,
        "status",
        "final_accuracy",
        "sim_time_to_target_s",
        "sim_round_p50_s",
        "reported_fraction",
        "examples_per_s",
    ]
    from fedrun.observe.summary import column_table

    return column_table(
        columns,
        [[_cell(row[c]).split(":")[0] if c == "status" else _cell(row[c]) for c in columns] for row in rows],
    )


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.4g}"
    return str(value)


def run_cache(args: argparse.Namespace) -> int:
    from fedrun.data.files.store import cache_root, remove_stored, stored_sources

    if args.action == "clear":
        for name in remove_stored(args.cache_dir, args.names):
            print(f"removed {name}")
        return 0
    stored = stored_sources(args.cache_dir)
    total_mib = sum(s.bytes for s in stored) / 2**20
    print(f"{cache_root(args.cache_dir)}: {len(stored)} conversions, {total_mib:.1f} MiB")
    for source in stored:
        made = time.strftime("%Y-%m-%d %H:%M", time.localtime(source.modified))
        print(f"  {source.name}  {source.bytes / 2**20:8.1f} MiB  {made}")
    return 0


@contextlib.contextmanager
def quiet_tensorflow_load() -> Iterator[None]:
    """TF 2.14 logs CUDA-plugin noise as errors when it loads, and reads its log level once, at
    load: quiet while it loads in the block, whole logs for the workers started after it."""
    quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    if quiet:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        yield
    finally:
        if quiet:
            del os.environ["TF_CPP_MIN_LOG_LEVEL"]


def run_simulation(args: argparse.Namespace) -> int:
    try:
        config = run_config(args)
        with quiet_tensorflow_load():
            preflight(config, resume=args.resume is not None, overwrite=args.overwrite)
            observers = observability(config)  # a taken --metrics-port fails here, before TensorFlow loads
            from fedrun.loop.simulation import simulate  # TensorFlow loads only once the config is valid

        from fedrun.observe.terminal import TerminalProgress

        terminal = TerminalProgress()
        simulate(config, [terminal, *observers], resume=args.resume is not None, should_stop=STOP.check)
    except Interrupted as stop:
        print(
            f"fedrun: {stop}: stopped; workers stopped, completed rounds and the last checkpoint "
            f"are kept (continue with --resume)",
            file=sys.stderr,
        )
        return stop.exit_code
    print(terminal.summary())
    out = config.output.dir
    print(f"results in {out}; plot them with: fedrun report {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="fedrun: %(message)s")
    for status in ("fedrun.status", "cluster.status"):  # what a long wait is waiting for
        logging.getLogger(status).setLevel(logging.INFO)
    try:
        return args.handler(args)
    except Interrupted as stop:
        print(f"fedrun: {stop}: stopped, everything it started stopped too", file=sys.stderr)
        return stop.exit_code
    except UserError as e:
        if getattr(args, "debug", False):
            raise
        print(f"fedrun: error: {e}", file=sys.stderr)
        return EXIT_ERROR
