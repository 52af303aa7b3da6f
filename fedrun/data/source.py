"""The data-source interface: a population of clients, each named by short keys.

A source never hands examples to the coordinator: it names each client's data with a short
string key, and `client_examples(key)` (TensorFlow ops only) rebuilds the examples on the worker
that trains the client. Per round the coordinator sends keys, not tensors.
"""

import abc

import numpy as np
import tensorflow as tf

from fedrun.data.keys import TEST, TRAIN

__all__ = ["TEST", "TRAIN", "ClientDataSource"]


class ClientDataSource(abc.ABC):
    """A population of clients indexed 0..population-1, each with a train and a test split."""

    #: Spec of one raw example: (features, label).
    element_spec: tuple[tf.TensorSpec, tf.TensorSpec]
    num_classes: int
    #: What the features are and how they were scaled, for messages (a diverged run names it).
    summary: str = ""
    #: For centralized data split by --partition: the client of each of the file's examples.
    partition: np.ndarray | None = None

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
    def client_examples(self, key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """All the examples named by a key (a scalar tf.string) as two tensors, features
        [n, *shape] and labels [n], built with TF ops only. Whole tensors, not a dataset of
        examples: the preprocessing then formats them in one op each, with no per-example function
        for tf.data to set up for every client."""

    def heldout_clients(self) -> np.ndarray:
        """Clients that never train, only evaluate (indices at or past `population`)."""
        return np.arange(0)

    def client_name(self, client: int) -> str:
        """The client's id as a person would see it in results."""
        return str(client)
