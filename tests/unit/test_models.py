"""Models and the names of their metrics, eagerly in this process (one test runs TFF's initialize
on its own local worker)."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fedrun.errors import FedrunError
from fedrun.learning import algorithm
from fedrun.learning.models import ModelInit, ModelSpec, create_model_fn
from fedrun.learning.registry import CLIENT_LOOPS, MODELS, OPTIMIZERS
from tests.support.configs import flat_config

FEATURES, CLASSES = 12, 4
INPUT_SPEC = collections.OrderedDict(
    x=tf.TensorSpec([None, FEATURES], tf.float32), y=tf.TensorSpec([None, 1], tf.int32)
)
SPEC = ModelSpec(INPUT_SPEC, (3, 4), CLASSES)


def batch(seed: int, n: int = 8) -> collections.OrderedDict:
    rng = np.random.default_rng(seed)
    return collections.OrderedDict(
        x=tf.constant(rng.normal(size=(n, FEATURES)), tf.float32),
        y=tf.constant(rng.integers(0, CLASSES, (n, 1)), tf.int32),
    )


def set_weights(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(size=variable.shape).astype(np.float32))


def finalized(model) -> dict[str, float]:
    unfinalized = model.report_local_unfinalized_metrics()
    return {name: float(finalize(unfinalized[name])) for name, finalize in model.metric_finalizers().items()}


def test_custom_linear_computes_what_the_keras_linear_model_computes():
    keras, custom = create_model_fn("linear", SPEC)(), create_model_fn("custom-linear", SPEC)()
    assert [v.shape for v in custom.trainable_variables] == [v.shape for v in keras.trainable_variables]
    for model in (keras, custom):
        set_weights(model, seed=1)
    for step in range(3):
        outputs, grads = [], []
        for model in (keras, custom):
            with tf.GradientTape() as tape:
                outputs.append(model.forward_pass(batch(step)))
            grads.append(tape.gradient(outputs[-1].loss, model.trainable_variables))
        np.testing.assert_allclose(outputs[1].loss, outputs[0].loss, rtol=1e-6)
        np.testing.assert_allclose(outputs[1].predictions, outputs[0].predictions, atol=1e-7)
        for ours, theirs in zip(grads[1], grads[0]):
            np.testing.assert_allclose(ours, theirs, atol=1e-7)
    # The sums TFF adds across clients: [loss sum, examples], [correct, examples], [examples].
    keras_sums, custom_sums = (
        keras.report_local_unfinalized_metrics(),
        custom.report_local_unfinalized_metrics(),
    )
    np.testing.assert_allclose(custom_sums["loss"], keras_sums["loss"], rtol=1e-6)
    np.testing.assert_allclose(custom_sums["accuracy"], keras_sums["sparse_categorical_accuracy"])
    np.testing.assert_allclose(custom_sums["num_examples"], keras_sums["num_examples"])
    assert finalized(custom)["num_examples"] == 24
    custom.reset_metrics()
    assert [float(v) for v in custom.local_variables] == [0.0, 0.0, 0.0]


def test_custom_linear_metrics_are_example_weighted_across_clients():
    """Unfinalized sums add across clients, so two clients' loss is the mean over all examples."""
    clients = []
    for seed, n in ((3, 2), (4, 10)):
        model = create_model_fn("custom-linear", SPEC)()
        set_weights(model, seed=0)
        model.forward_pass(batch(seed, n))
        clients.append(model)
    summed = tf.nest.map_structure(
        lambda *parts: sum(parts), *[m.report_local_unfinalized_metrics() for m in clients]
    )
    finalizers = clients[0].metric_finalizers()
    losses = [finalized(m)["loss"] for m in clients]
    assert float(finalizers["loss"](summed["loss"])) == pytest.approx((2 * losses[0] + 10 * losses[1]) / 12)
    assert float(finalizers["num_examples"](summed["num_examples"])) == 12


def test_cnn_reshapes_flat_images_and_predicts_every_class():
    spec = ModelSpec(
        collections.OrderedDict(
            x=tf.TensorSpec([None, 784], tf.float32), y=tf.TensorSpec([None, 1], tf.int32)
        ),
        (28, 28),
        10,
    )
    first, second = create_model_fn("cnn", spec)(), create_model_fn("cnn", spec)()
    kernels = [v.shape for v in first.trainable_variables if len(v.shape) > 1]
    assert kernels == [(5, 5, 1, 32), (5, 5, 32, 64), (7 * 7 * 64, 512), (512, 10)]
    for a, b in zip(first.trainable_variables, second.trainable_variables):
        np.testing.assert_array_equal(a, b)  # seeded: every run starts from the same model
    output = first.forward_pass(
        collections.OrderedDict(x=tf.random.uniform([3, 784]), y=tf.zeros([3, 1], tf.int32))
    )
    assert output.predictions.shape == (3, 10)
    np.testing.assert_allclose(tf.reduce_sum(output.predictions, axis=1), 1.0, rtol=1e-5)


def kernel_and_bias(name: str, init: ModelInit) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.asarray(v) for v in create_model_fn(name, SPEC, init)().trainable_variables)


def test_linear_starts_as_kerass_dense_does_seeded_by_the_run_seed():
    kernel, bias = kernel_and_bias("linear", ModelInit("default", seed=7))
    dense = tf.keras.layers.Dense(CLASSES, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=7))
    dense.build((None, FEATURES))
    np.testing.assert_array_equal(kernel, dense.kernel)
    np.testing.assert_array_equal(bias, np.zeros(CLASSES))
    limit = np.sqrt(6 / (FEATURES + CLASSES))  # Glorot-uniform's bound
    assert np.abs(kernel).max() <= limit and kernel.std() > limit / 4
    # Seeded: the same weights on every call (TFF traces model_fn more than once), others by seed.
    np.testing.assert_array_equal(kernel_and_bias("linear", ModelInit("default", seed=7))[0], kernel)
    assert not np.array_equal(kernel_and_bias("linear", ModelInit("default", seed=8))[0], kernel)


def test_custom_linear_starts_from_zeros_as_the_tutorial_or_from_the_linear_models_weights():
    for array in kernel_and_bias("custom-linear", ModelInit("default", seed=7)):
        np.testing.assert_array_equal(array, 0.0)
    for kind in ("glorot-uniform", "zeros"):
        for ours, keras in zip(
            kernel_and_bias("custom-linear", ModelInit(kind, seed=3)),
            kernel_and_bias("linear", ModelInit(kind, seed=3)),
        ):
            np.testing.assert_array_equal(ours, keras)


def test_tffs_initial_state_is_the_models_initial_weights():
    """TFF builds `initialize` in a graph, run here in its own local context (one worker process):
    the seeded initializer gives the eager weights there, which the bench's TF loop and peers use."""
    from fedrun.bench.reference import tff_local_context
    from fedrun.data.synthetic import SyntheticDigits

    config = flat_config(seed=5, population=10, clients_per_round=4)
    learning = algorithm.algorithm_for(config, SyntheticDigits(population=10)).training
    with tff_local_context():
        state = learning.get_model_weights(learning.initialize()).trainable
    spec = ModelSpec(
        collections.OrderedDict(
            x=tf.TensorSpec([None, 784], tf.float32), y=tf.TensorSpec([None, 1], tf.int32)
        ),
        (28, 28),
        10,
    )
    eager = create_model_fn("linear", spec, ModelInit("default", seed=5))().trainable_variables
    for ours, theirs in zip(state, eager):
        np.testing.assert_array_equal(ours, theirs)
    assert np.abs(state[0]).max() > 0


def test_a_cnn_from_zeros_is_refused():
    with pytest.raises(FedrunError, match="never breaks its symmetry"):
        create_model_fn("cnn", ModelSpec(INPUT_SPEC, (3, 4), CLASSES), ModelInit("zeros"))


def test_cnn_needs_image_examples():
    with pytest.raises(FedrunError, match="--model cnn needs image examples.*shape \\(12,\\)"):
        create_model_fn("cnn", ModelSpec(INPUT_SPEC, (12,), CLASSES))


def test_unknown_model():
    with pytest.raises(
        FedrunError, match="unknown model 'resnet'; choose one of: linear, custom-linear, cnn"
    ):
        create_model_fn("resnet", SPEC)


@pytest.mark.parametrize("accuracy_name", ["accuracy", "sparse_categorical_accuracy"])
def test_metric_names_map_to_fedruns(accuracy_name):
    metrics = {
        "client_work": {
            "train": {
                "loss": np.float32(0.5),
                accuracy_name: np.float32(0.25),
                "num_examples": np.int64(7),
                "num_batches": np.int64(1),
            }
        }
    }
    assert algorithm.train_metrics(metrics) == {"loss": 0.5, "accuracy": 0.25, "num_examples": 7}


def test_every_registered_choice_loads_what_learning_builds_with():
    for name, entry in OPTIMIZERS.items():
        assert isinstance(entry.load()(0.1, 0.0), tff.learning.optimizers.Optimizer), name
    for name, entry in CLIENT_LOOPS.items():
        assert isinstance(entry.load(), tff.learning.LoopImplementation), name
    for name in MODELS:
        assert callable(MODELS[name].load())


@pytest.mark.parametrize(
    "values,message",
    [
        ({"client_optimizer": "adagrad"}, "client_optimizer must be one of sgd, adam, got 'adagrad'"),
        ({"server_optimizer": "SGD"}, "server_optimizer must be one of sgd, adam"),
        ({"server_optimizer": "adam", "server_momentum": 0.9}, "server_momentum applies to sgd only"),
        ({"client_optimizer": "adam", "client_momentum": 0.5}, "client_momentum applies to sgd only"),
    ],
)
def test_optimizer_configuration_errors(values, message):
    with pytest.raises(FedrunError, match=message):
        flat_config(**values)


def test_fedadam_and_momentum_configurations_are_valid():
    c = flat_config(server_optimizer="adam", server_lr=0.01, client_momentum=0.9).workload
    assert (c.server_optimizer, c.client_optimizer, c.client_momentum) == ("adam", "sgd", 0.9)
