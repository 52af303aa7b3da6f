"""FedAvg's client work with each client's local training timed on the worker that runs it, and
each client's dataset built in the same computation that trains on it.

TFF's model-delta client work (`build_model_delta_client_work`), the same update, optimizer and
weighting, with `tf.timestamp()` read before and after each client's work. The durations leave
the clients with the metrics, in the same aggregate: beside its unfinalized metrics each client
reports a packed vector (learning.client_time) of histogram counts, sum, count and maximum, and
one `federated_aggregate` adds the metrics (as TFF's `sum_then_finalize` does) and combines the
vectors. No per-client value reaches the server, so the round keeps the single aggregation that
sharding (MergeableCompForm) needs; the update itself is untouched: the model is TFF's. One
aggregate rather than a second one beside the metrics' matters: the executor calls its
accumulator once per client.

Given `build_dataset` (a client's key to its dataset), the work takes keys: each client's
computation builds its dataset and trains on it. Composing TFF's dataset computation in front
(`compose_dataset_computation_with_learning_process`) makes them two computations, and a dataset
passed between two is serialized as a graph, the client's examples in it, and rebuilt: 0.6-0.8 ms
a client on a worker, a fifth of a small client's whole cost (measured 2.79 -> 2.23 ms at K=256,
E=1 and 6.13 -> 5.35 ms at K=32, E=5 on the bench's file).
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.types import type_conversions
from tensorflow_federated.python.core.impl.types.computation_types import tensorflow_to_type
from tensorflow_federated.python.learning.templates import model_delta_client_work

from fedrun.learning import client_time


def _combine(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Two packed vectors as one: counts, sums and counts add, the maximum is the larger."""
    return tf.concat([a[:-1] + b[:-1], tf.reshape(tf.maximum(a[-1], b[-1]), [1])], axis=0)


def _packed(seconds: tf.Tensor) -> tf.Tensor:
    """One client's duration as a packed vector (client_time.unpack reads it)."""
    edges = tf.constant(client_time.bucket_edges(), tf.float64)
    slot = tf.searchsorted(edges, tf.reshape(seconds, [1]), side="right")[0]
    one_hot = tf.one_hot(slot, client_time.SLOTS, dtype=tf.float64)
    return tf.concat([one_hot, tf.stack([seconds, tf.constant(1.0, tf.float64), seconds])], axis=0)


def fed_avg_client_work(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    optimizer: tff.learning.optimizers.Optimizer,
    loop: tff.learning.LoopImplementation,
    *,
    timed: bool = True,
    build_dataset: Callable[[tf.Tensor], tf.data.Dataset] | None = None,
) -> tff.templates.MeasuredProcess:
    """`build_model_delta_client_work(model_fn, optimizer, NUM_EXAMPLES)`, whose measurements also
    hold `client_time`, the packed vector of the clients' times, if `timed`. With `build_dataset`
    its clients' data are keys, and what is timed includes building the dataset; without, datasets
    (then it is a ClientWorkProcess: TFF's admits sequences only)."""
    with tf.Graph().as_default():  # as TFF does: keep the model's variables out of the global graph
        model = model_fn()
        finalizers = model.metric_finalizers()
    if build_dataset is None:
        data_type = tff.SequenceType(tensorflow_to_type(model.input_spec))
    else:
        data_type = tff.TensorType(np.str_)
    weights_type = tff.learning.models.weights_type_from_model(model)
    hparams = optimizer.get_hparams(optimizer.initialize(tf.TensorSpec(shape=(), dtype=tf.float32)))

    @tff.federated_computation
    def init_fn():
        return tff.federated_value(hparams, tff.SERVER)

    state_type = init_fn.type_signature.result.member

    @tff.tensorflow.computation(state_type)
    def get_hparams_fn(state):
        return state

    @tff.tensorflow.computation(state_type, state_type)
    def set_hparams_fn(state, new_hparams):
        del state
        return new_hparams

    @tff.tensorflow.computation(state_type, weights_type, data_type)
    def client_update(optimizer_hparams, initial_weights, data):
        update = model_delta_client_work.build_model_delta_update_with_tff_optimizer(
            model_fn=model_fn,
            weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
            loop_implementation=loop,
        )
        dataset = data if build_dataset is None else build_dataset(data)
        if not timed:
            result, outputs = update(optimizer, initial_weights, dataset, optimizer_hparams)
            return result, (outputs,)
        start = tf.timestamp()  # no inputs: TF runs it as the computation begins, before the dataset
        with tf.control_dependencies([start]):
            result, outputs = update(optimizer, initial_weights, dataset, optimizer_hparams)
        with tf.control_dependencies(tf.nest.flatten((result, outputs))):
            seconds = tf.timestamp() - start
        return result, (outputs, _packed(seconds))

    reported_type = client_update.type_signature.result[1]  # (unfinalized metrics[, packed vector])
    metrics_specs = type_conversions.type_to_tf_tensor_specs(reported_type[0])

    @tff.tensorflow.computation
    def zero():
        metrics = tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype), metrics_specs)
        return (metrics, tf.zeros([client_time.LENGTH], tf.float64)) if timed else (metrics,)

    @tff.tensorflow.computation(reported_type, reported_type)
    def combine(a, b):
        metrics = tf.nest.map_structure(tf.add, a[0], b[0])
        return (metrics, _combine(a[1], b[1])) if timed else (metrics,)

    @tff.tensorflow.computation(reported_type)
    def report(total):
        train = collections.OrderedDict((name, fn(total[0][name])) for name, fn in finalizers.items())
        return (
            collections.OrderedDict(train=train, client_time=total[1])
            if timed
            else collections.OrderedDict(train=train)
        )

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, client_data):
        state_at_clients = tff.federated_broadcast(state)
        client_result, reported = tff.federated_map(client_update, (state_at_clients, weights, client_data))
        measurements = tff.federated_aggregate(reported, zero(), combine, combine, report)
        return tff.templates.MeasuredProcessOutput(state, client_result, measurements)

    if build_dataset is None:
        return tff.learning.templates.ClientWorkProcess(
            init_fn, next_fn, get_hparams_fn=get_hparams_fn, set_hparams_fn=set_hparams_fn
        )
    return tff.templates.MeasuredProcess(init_fn, next_fn)
