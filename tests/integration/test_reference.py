"""TFF's own local context, fedrun's yardstick, stops the worker it starts even where TFF's
finalizer would wait forever."""

import subprocess
import sys

# TFF stops its worker with SIGINT and then waits without a bound. A process that ignores SIGINT
# (as the bench's system processes once did, to leave Ctrl-C to their parent) passes the ignore
# on to the worker, and the finalizer never returns.
_SCRIPT = """
import signal
import numpy as np
import tensorflow_federated as tff
from fedrun.bench.reference import tff_local_context

signal.signal(signal.SIGINT, signal.SIG_IGN)

@tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
def total(values):
    return tff.federated_sum(values)

with tff_local_context():
    assert total([1, 2, 3]) == 6
print("block ended")
"""


def test_block_ends_and_stops_tff_worker_even_when_sigint_is_ignored():
    # A hang here is the failure: the timeout raises. The autouse fixture fails the test if the
    # worker outlived the block (it would be orphaned once the script exits).
    run = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "block ended" in run.stdout
