"""`fedrun run`: flags and a TOML file become a RunConfig; errors print without a traceback."""

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from cluster import WorkerError
from fedrun.config import FIELDS, RunConfig, field_type, load_toml, resolve
from fedrun.errors import FedrunError
from fedrun.observers import RunObserver

EXIT_ERROR = 2


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised in the main thread so every `finally` (and worker stop) runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


def _on_signal(signum, frame):
    # The first signal unwinds cleanly; a second one while that is under way exits at once.
    # Workers still die with us: each gets SIGKILL from the kernel when its parent exits.
    signal.signal(signal.SIGINT, lambda *_: os._exit(128 + signum))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(128 + signum))
    raise Interrupted(signum)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for name, f in FIELDS.items():
        kind = field_type(name)
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=f"(default: {f.default})")
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=kind.__name__.upper(),
                                help=f"(default: {f.default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedrun", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a federated simulation",
                              description="Run FedAvg rounds sharded across TFF worker processes.")
    run.add_argument("--config", type=Path, help="TOML file with any of the options below")
    run.add_argument("--resume", type=Path, metavar="DIR",
                     help="continue the run in DIR from its last checkpoint, with its config")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_config_flags(run)
    # --- `fedrun worker` (static backend: containers, Kubernetes pods, other hosts) ---
    worker = commands.add_parser(
        "worker", help="run one TFF worker in the foreground, for `fedrun run --backend static`",
        description="Run TFF's executor service on --port of every interface, without "
                    "authentication: let only the coordinator reach it (NetworkPolicy, firewall).")
    worker.add_argument("--port", type=int, default=8000, help="(default: 8000)")
    worker.add_argument("--max-concurrent-calls", type=int,
                        default=FIELDS["worker_max_concurrent_calls"].default,
                        help=f"(default: {FIELDS['worker_max_concurrent_calls'].default})")
    for side in ("intra", "inter"):
        default = FIELDS[f"worker_{side}_op_threads"].default
        worker.add_argument(f"--{side}-op-threads", type=int, default=default,
                            help=f"TensorFlow {side}-op threads, 0 for one per core (default: {default})")
    # --- end `fedrun worker` ---
    # --- `fedrun report` ---
    report = commands.add_parser("report", help="plot a run and summarize it in markdown",
                                 description="Write PNG plots and summary.md for the run in DIR, "
                                             "finished or still going.")
    report.add_argument("dir", type=Path, metavar="DIR", help="the --out directory of a run")
    report.add_argument("--round", type=int, help="round for the per-worker shard chart (default: the last)")
    report.add_argument("--out", type=Path, help="where to write the report (default: DIR/report)")
    # --- end `fedrun report` ---
    # --- `fedrun bench` ---
    bench = commands.add_parser(
        "bench", help="benchmark fedrun against TFF's local context and a plain TF loop",
        description="Run one workload on fedrun, on TFF's single-process local context and on a "
                    "plain TensorFlow loop, rounds interleaved; check they agree; print and save "
                    "latency, throughput, CPU and memory.")
    bench.add_argument("--debug", action="store_true", help="show tracebacks")
    from fedrun.bench import add_arguments
    add_arguments(bench)
    # --- end `fedrun bench` ---
    return parser


def run_config(args: argparse.Namespace) -> RunConfig:
    """The config to run: from --config and flags, or, when resuming, the saved one (flags may
    change how it runs and extend `rounds`, never what it computes)."""
    flags = {k: v for k, v in vars(args).items() if k in FIELDS}
    file_values = load_toml(args.config) if args.config else {}
    if args.resume is None:
        return resolve(file_values, flags)
    if not (args.resume / "config.toml").is_file():
        raise FedrunError(f"--resume {args.resume}: no config.toml there, so it is not a fedrun run "
                          f"directory; pass the --out directory of the run to continue")
    saved = resolve(load_toml(args.resume / "config.toml"), {"out": str(args.resume)})
    asked = resolve({**{k: getattr(saved, k) for k in FIELDS}, **file_values}, {**flags, "out": str(args.resume)})
    differences = saved.workload_differences(asked)
    if differences:
        raise FedrunError(
            f"--resume {args.resume}: that run was made with a different configuration "
            f"({', '.join(f'{k}: {getattr(saved, k)!r} there, {getattr(asked, k)!r} here' for k in differences)}); "
            f"drop those options to resume it, or start a new run with another --out")
    return asked


def observability(config: RunConfig) -> list[RunObserver]:
    """The optional observers: Prometheus metrics when served or pushed (first, so a taken port fails
    before TensorFlow loads), TensorBoard scalars."""
    observers: list[RunObserver] = []
    if config.metrics_port or config.pushgateway:
        from prometheus_client import CollectorRegistry

        from fedrun.metrics import PrometheusMetrics
        observers.append(PrometheusMetrics(CollectorRegistry(), port=config.metrics_port, host=config.metrics_host,
                                           pushgateway=config.pushgateway, run=str(config.out.resolve())))
    if config.tensorboard:
        from fedrun.tensorboard_log import TensorBoardLog  # loads TensorFlow
        observers.append(TensorBoardLog(config.out / "tb"))
    return observers


def run_worker(args: argparse.Namespace) -> int:
    """`fedrun worker`: exits with the worker's status; SIGTERM reaches the worker."""
    from cluster.foreground import run_foreground_worker
    from cluster.local import LocalWorkerOptions
    try:
        options = LocalWorkerOptions(max_concurrent_computation_calls=args.max_concurrent_calls,
                                     intra_op_threads=args.intra_op_threads,
                                     inter_op_threads=args.inter_op_threads)
        return run_foreground_worker(args.port, options)
    except (ValueError, WorkerError) as e:
        print(f"fedrun: error: {e}", file=sys.stderr)
        return EXIT_ERROR


def run_report(args: argparse.Namespace) -> int:
    from fedrun.report import write_report  # matplotlib loads only for this command
    try:
        summary = write_report(args.dir, round_num=args.round, out=args.out)
    except FedrunError as e:
        print(f"fedrun: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(f"report written: {summary}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from fedrun.bench import main as bench_main
    try:
        return bench_main(args)
    except (FedrunError, WorkerError) as e:
        if args.debug:
            raise
        print(f"fedrun: error: {e}", file=sys.stderr)
        return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="fedrun: %(message)s")
    if args.command == "worker":
        return run_worker(args)
    if args.command == "report":
        return run_report(args)
    if args.command == "bench":
        return run_bench(args)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        config = run_config(args)
        quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
        if quiet:  # TF 2.14 logs CUDA-plugin noise as errors when it loads
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        from fedrun.preflight import preflight
        preflight(config)
        observers = observability(config)  # a taken --metrics-port fails here, before TensorFlow loads
        from fedrun.simulation import simulate  # TensorFlow loads only once the config is valid
        if quiet:  # read once, at load: the workers started next keep their logs whole
            del os.environ["TF_CPP_MIN_LOG_LEVEL"]
        from fedrun.terminal import TerminalProgress
        terminal = TerminalProgress()
        simulate(config, [terminal, *observers], resume=args.resume is not None)
    except Interrupted as stop:
        print(f"fedrun: {stop}: stopped; workers stopped, completed rounds and the last checkpoint "
              f"are kept (continue with --resume)", file=sys.stderr)
        return stop.exit_code
    except (FedrunError, WorkerError) as e:
        if args.debug:
            raise
        print(f"fedrun: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(terminal.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
