"""fedrun's FedAvg workload on Apple's pfl-research (pfl 0.6.0, TensorFlow backend), driven round
by round by a parent over JSON lines, so the parent can interleave its rounds with fedrun's.

Runs in the separate environment `make bench-peers` builds (.venv-peers: TensorFlow 2.21, Keras 3),
started as `.venv-peers/bin/python -P pfl_runner.py ...`: it imports neither fedrun nor TFF.

The workload is fedrun's, as pfl runs it: a Keras Dense(classes) + softmax on flat features,
pfl's FederatedAveraging over a SimulatedBackend that weights each client by its examples, a
Keras SGD local optimizer and a Keras SGD central optimizer. Each round trains the clients the
parent names, with fedrun's keys ("SEED|train/POSITION.bin:COUNT"): a client's examples are read
from the same .npz file and grouped and split as fedrun's store does, then put in the order
fedrun's pipeline gives them (tf.data shuffle(buffer, seed, reshuffled each epoch), repeated for
the epochs); pfl trains one pass of that in batches, which are fedrun's batches.

With --processes N, this process is pfl's worker 0 and starts workers 1..N-1, each this script,
configured as pfl's TensorFlow backend reads it: PFL_WORKER_ADDRESSES and PFL_WORKER_RANK
(MultiWorkerMirroredStrategy; pfl all-reduces the clients' summed updates). It forwards every
command to them; each worker trains its share of the cohort (pfl assigns client i to worker
i mod N), and only worker 0 answers.

Protocol (one JSON object per line): {"cmd": "start", "weights": [...]} sets the initial model;
{"cmd": "round", "round": r, "keys": [...]} trains one round and answers latency_s (measured
here) and num_examples; {"cmd": "weights"} answers the model's weights; {"cmd": "close"} ends.
Answers are {"ok": ...} or {"error": traceback}.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, this folder would be first on sys.path and its pfl.py (the parent's side, for
# fedrun's environment) would hide the pfl package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

TEST_FRACTION = 0.2  # of each client's examples, as fedrun.data.files.npz splits a file without a test file
RANK, ADDRESSES = "PFL_WORKER_RANK", "PFL_WORKER_ADDRESSES"  # pfl's GenericPlatform reads these
_PARENT = "FEDRUN_PFL_PARENT_PID"


def main() -> None:
    args = _arguments()
    # Answers go to the real stdout; anything TF or pfl prints goes to stderr.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    # Ctrl-C is the parent's, which then closes us in order (as fedrun.bench.systems' children).
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    rank = int(os.environ.get(RANK, "0"))
    if rank > 0:
        _die_with_parent()
    workers = _start_workers(args) if rank == 0 and args.processes > 1 else []
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        _serve(args, workers, answers if rank == 0 else None)
    finally:
        for worker in workers:
            _stop(worker)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the .npz file fedrun reads (x, y, client)")
    parser.add_argument("--scale", type=float, default=None, help="feature scale (fedrun's); none: as is")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--shuffle-buffer", type=int, required=True)
    parser.add_argument("--client-lr", type=float, required=True)
    parser.add_argument("--server-lr", type=float, required=True)
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    return parser.parse_args()


def _start_workers(args: argparse.Namespace) -> list[subprocess.Popen]:
    """pfl's workers 1..N-1, each this script with pfl's variables; this process is worker 0."""
    addresses = ",".join(f"localhost:{_free_port()}" for _ in range(args.processes))
    os.environ[ADDRESSES] = addresses
    os.environ[RANK] = "0"
    workers = []
    for rank in range(1, args.processes):
        env = {**os.environ, RANK: str(rank), _PARENT: str(os.getpid())}
        workers.append(
            subprocess.Popen(
                [sys.executable, "-P", __file__, *sys.argv[1:]],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                text=True,
            )
        )
    return workers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """A worker blocked in an all-reduce would wait forever for a worker 0 that is gone: the
    kernel kills it with its parent (PR_SET_PDEATHSIG); a parent gone before that is checked."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != int(os.environ.get(_PARENT, os.getppid())):
        sys.exit(1)


def _stop(worker: subprocess.Popen) -> None:
    try:
        worker.stdin.close()
        worker.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        worker.kill()
        worker.wait()


def _serve(args: argparse.Namespace, workers: list[subprocess.Popen], answers) -> None:
    trainer = None
    for line in sys.stdin:
        for worker in workers:
            worker.stdin.write(line)
            worker.stdin.flush()
        command = json.loads(line)
        if command["cmd"] == "close":
            return
        try:
            start = time.monotonic()
            if command["cmd"] == "start":
                trainer = PflFedAvg(args)  # imports TensorFlow and pfl: timed with the start
                trainer.set_weights(command["weights"])
                reply = {"start_s": time.monotonic() - start}
            elif command["cmd"] == "round":
                reply = trainer.train_round(command["keys"])
                reply["latency_s"] = time.monotonic() - start
            elif command["cmd"] == "weights":
                reply = {"weights": trainer.weights()}
            else:
                raise ValueError(f"unknown command {command['cmd']!r}")
            message = {"ok": reply}
        except Exception:
            message = {"error": traceback.format_exc()}
        if answers is not None:
            answers.write(json.dumps(message) + "\n")


class Clients:
    """A file's training examples by fedrun's store position, as fedrun.data.files.npz groups
    them: clients in sorted id order, each one's rows in file order, its last fifth held out."""

    def __init__(self, path: str, scale: float | None):
        import numpy as np

        with np.load(path) as data:
            x, y, client = data["x"], data["y"], data["client"]
        order = np.argsort(client, kind="stable")
        _, starts = np.unique(client[order], return_index=True)
        self._ends = np.append(starts[1:], len(y))
        self._starts, self._order = starts, order
        flat = x.reshape(len(x), -1).astype(np.float32)
        self.x = flat * np.float32(scale) if scale is not None else flat
        self.y = y.astype(np.int32)
        self.features = flat.shape[1]

    def train_rows(self, position: int):
        rows = self._order[self._starts[position] : self._ends[position]]
        return rows[: len(rows) - int(len(rows) * TEST_FRACTION)]


class PflFedAvg:
    """pfl's FedAvg on one worker of N: a round is one central iteration of `algorithm.run`."""

    def __init__(self, args: argparse.Namespace):
        import tensorflow as tf
        from pfl.aggregate.simulate import SimulatedBackend
        from pfl.aggregate.weighting import WeightByDatapoints
        from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
        from pfl.data.federated_dataset import FederatedDataset
        from pfl.hyperparam import NNTrainHyperParams
        from pfl.model.tensorflow import TFModel

        self.args = args
        self.clients = Clients(args.data, args.scale)
        keras_model = tf.keras.Sequential(
            [
                tf.keras.layers.Input((self.clients.features,)),
                tf.keras.layers.Dense(args.classes, kernel_initializer="zeros"),
                tf.keras.layers.Softmax(),
            ]
        )
        keras_model.compile(
            optimizer=tf.keras.optimizers.SGD(args.client_lr),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),
        )
        self.keras_model = keras_model
        self.model = TFModel(
            keras_model, metrics={}, central_optimizer=tf.keras.optimizers.SGD(args.server_lr)
        )
        self.algorithm = FederatedAveraging()
        self.cohort = RoundCohort()
        self.training_data = FederatedDataset(self._user_dataset, self.cohort)
        self.backend = SimulatedBackend(
            training_data=self.training_data, val_data=None, postprocessors=[WeightByDatapoints()]
        )
        # One pass over the client's examples as fedrun's pipeline orders them (all its epochs).
        self.train_params = NNTrainHyperParams(
            local_num_epochs=1, local_learning_rate=args.client_lr, local_batch_size=args.batch_size
        )
        self._params = NNAlgorithmParams

        @tf.function(reduce_retracing=True)  # one graph for all clients: ~0.5 ms a client, not ~10
        def shuffled(n, seed):
            indices = tf.data.Dataset.range(n).shuffle(
                args.shuffle_buffer, seed=seed, reshuffle_each_iteration=True
            )
            return indices.repeat(args.epochs).batch(n * args.epochs).get_single_element()

        self._shuffled = shuffled
        self.rounds = 0
        self.data_s = 0.0

    def set_weights(self, weights: list) -> None:
        import numpy as np

        self.keras_model.set_weights([np.asarray(w, np.float32) for w in weights])

    def weights(self) -> list:
        return [w.tolist() for w in self.keras_model.get_weights()]

    def train_round(self, keys: list[str]) -> dict:
        """One central iteration over these clients: `run` continues from the last iteration, so
        asking it for one more does exactly one (evaluation off: fedrun's rounds evaluate nothing)."""
        self.rounds += 1
        self.data_s = 0.0
        self.cohort.set(keys)
        params = self._params(
            central_num_iterations=self.rounds,
            evaluation_frequency=2**62,
            train_cohort_size=len(keys),
            val_cohort_size=None,
        )
        self.model = self.algorithm.run(
            params, self.backend, self.model, self.train_params, send_metrics_to_platform=False
        )
        return {
            "num_examples": self.args.epochs * sum(_count(key) for key in keys),
            "clients": len(keys),
            "data_s": self.data_s,  # of the latency: this worker's clients' datasets built in fedrun's order
        }

    def _user_dataset(self, key: str):
        """A client's examples in fedrun's order for this key's shuffle seed, repeated for the
        epochs: pfl's user dataset, built when pfl's sampler draws the client."""
        from pfl.data.dataset import Dataset

        start = time.monotonic()
        seed, data_key = key.split("|", 1)
        path, count = data_key.rsplit(":", 1)
        rows = self.clients.train_rows(int(Path(path).stem))
        if len(rows) != int(count):
            raise ValueError(
                f"{self.args.data}: client {path} has {len(rows)} training examples here but "
                f"{count} in fedrun's store: the runner and fedrun read different files"
            )
        rows = rows[self._order(len(rows), int(seed))]
        dataset = Dataset(raw_data=[self.clients.x[rows], self.clients.y[rows][:, None]], user_id=key)
        self.data_s += time.monotonic() - start
        return dataset

    def _order(self, n: int, seed: int):
        """fedrun's example order: shuffle(buffer, seed, reshuffle_each_iteration=True), repeat."""
        import tensorflow as tf

        return self._shuffled(tf.constant(n, tf.int64), tf.constant(seed, tf.int64)).numpy()


class RoundCohort:
    """pfl's user sampler (`callable() -> user id`) over the round's clients in the parent's order.

    pfl's multi-worker sampler draws one user per worker at each step and keeps worker `rank`'s;
    every worker draws from its own copy of this list, so client i is trained by worker i mod N.
    A worker may draw past the end on its last step (when N does not divide K): it then gets a
    client it discards, and the next round starts from the beginning of its own list again.
    """

    def __init__(self):
        self._keys: list[str] = []
        self._next = 0

    def set(self, keys: list[str]) -> None:
        self._keys, self._next = list(keys), 0

    def __call__(self) -> str:
        key = self._keys[self._next % len(self._keys)]
        self._next += 1
        return key


def _count(key: str) -> int:
    return int(key.rsplit(":", 1)[1])


if __name__ == "__main__":
    main()
