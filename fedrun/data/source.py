"""The data-source interface and its registry.

A source never hands examples to the coordinator: it names each client's data with a short
string key, and `client_dataset(key)` (TensorFlow ops only) rebuilds the examples on the worker
that trains the client. Per round the coordinator sends keys, not tensors.
"""

import abc
import importlib
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from fedrun.errors import FedrunError

TRAIN = "train"
TEST = "test"


class ClientDataSource(abc.ABC):
    """A population of clients indexed 0..population-1, each with a train and a test split."""

    #: Spec of one raw example: (features, label).
    element_spec: tuple[tf.TensorSpec, tf.TensorSpec]
    num_classes: int

    @property
    @abc.abstractmethod
    def population(self) -> int:
        """Number of clients."""

    @abc.abstractmethod
    def num_examples(self, client: int, split: str) -> int:
        """Examples a client holds in a split; cheap, used for balancing and reporting."""

    @abc.abstractmethod
    def client_key(self, client: int, split: str) -> str:
        """Everything a worker needs to rebuild this client's split; must not contain '|'."""

    @abc.abstractmethod
    def client_dataset(self, key: tf.Tensor) -> tf.data.Dataset:
        """The raw examples named by a key (a scalar tf.string), built with TF ops only."""

    def heldout_clients(self) -> np.ndarray:
        """Clients that never train, only evaluate (indices at or past `population`)."""
        return np.arange(0)

    def client_name(self, client: int) -> str:
        """The client's id as a person would see it in results."""
        return str(client)


@dataclass(frozen=True)
class SourceOptions:
    """What the run's configuration tells a source."""

    data: str = "synthetic"  # a registered name, or a path to an .npz file
    data_dir: str = ""  # where file-backed sources look; "" = their usual place
    test_data: str = ""  # separate test examples for an .npz source
    population: int = 3383  # training clients of a generated source (files decide their own)
    heldout: int = 0  # clients that never train, only evaluate


# name -> (module, function taking SourceOptions); modules load only when chosen (h5py is optional).
SOURCES: dict[str, tuple[str, str]] = {
    "synthetic": ("fedrun.data.synthetic", "open_synthetic"),
    "emnist": ("fedrun.data.emnist", "open_digits"),
    "emnist-full": ("fedrun.data.emnist", "open_full"),
}
_NPZ = ("fedrun.data.npz", "open_npz")


def create_source(options: SourceOptions) -> ClientDataSource:
    if options.data.endswith(".npz"):
        module, opener = _NPZ
    elif options.data in SOURCES:
        module, opener = SOURCES[options.data]
    else:
        raise FedrunError(f"unknown data source '{options.data}': choose one of "
                          f"{', '.join(SOURCES)} or give the path of an .npz file")
    return getattr(importlib.import_module(module), opener)(options)
