"""`fedrun run`: flags and a TOML file become a RunConfig; errors print without a traceback."""

import argparse
import os
import signal
import sys
from pathlib import Path

from cluster import WorkerError
from fedrun.config import FIELDS, field_type, load_toml, resolve
from fedrun.errors import FedrunError

EXIT_ERROR = 2


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so every `finally` (and worker stop) still runs."""


def _on_sigterm(signum, frame):
    raise Terminated()


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
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_config_flags(run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k in FIELDS}
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        config = resolve(load_toml(args.config) if args.config else {}, flags)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF 2.14 logs CUDA-plugin noise as errors
        from fedrun.simulation import simulate  # TensorFlow loads only once the config is valid
        from fedrun.terminal import TerminalProgress
        terminal = TerminalProgress()
        simulate(config, [terminal])
    except KeyboardInterrupt:
        print("fedrun: interrupted; workers stopped, results so far are kept", file=sys.stderr)
        return 130
    except Terminated:
        print("fedrun: terminated; workers stopped, results so far are kept", file=sys.stderr)
        return 143
    except (FedrunError, WorkerError) as e:
        if args.debug:
            raise
        print(f"fedrun: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(terminal.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
