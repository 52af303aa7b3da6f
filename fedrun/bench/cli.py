"""`fedrun bench`, registered with fedrun's command line as a plugin (entry point group
`fedrun.commands`): the product never imports the benchmark."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fedrun.bench.compare import run_bench
from fedrun.bench.config import add_arguments, config_from_args


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench",
        help="benchmark fedrun against TFF's local context and a plain TF loop",
        description="Run one workload on fedrun, on TFF's single-process local context and on a "
        "plain TensorFlow loop, rounds interleaved; check they agree; print and save "
        "latency, throughput, CPU and memory.",
    )
    bench.add_argument("--debug", action="store_true", help="show tracebacks")
    add_arguments(bench)
    bench.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """`fedrun bench`; returns the exit code (non-zero if the systems disagree)."""
    bench = config_from_args(args)
    if bench.out is not None:
        bench.out.parent.mkdir(parents=True, exist_ok=True)
    result = run_bench(bench, lambda line: print(line, flush=True))
    if bench.out is not None:
        bench.out.write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")
    if not result["agreement"]["passed"]:
        print(
            "fedrun bench: the systems did not reach the same model (see agreement above); the "
            "timings compare different computations",
            file=sys.stderr,
        )
        return 1
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
