"""Model registry: a name -> a `tff.learning.models.VariableModel` factory for the input spec."""

from collections.abc import Callable

import tensorflow as tf
import tensorflow_federated as tff

from fedrun.errors import FedrunError

ModelFn = Callable[[], tff.learning.models.VariableModel]


def linear_softmax(input_spec, num_classes: int) -> ModelFn:
    """The seed tutorial's model: Dense(num_classes) from zeros + softmax, via TFF's Keras conversion."""
    features = int(input_spec["x"].shape[-1])

    def model_fn():
        keras_model = tf.keras.Sequential([
            tf.keras.layers.InputLayer(input_shape=(features,)),
            tf.keras.layers.Dense(num_classes, kernel_initializer="zeros"),
            tf.keras.layers.Softmax(),
        ])
        return tff.learning.models.from_keras_model(
            keras_model,
            input_spec=input_spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    return model_fn


MODELS: dict[str, Callable[..., ModelFn]] = {
    "linear": linear_softmax,
}


def create_model_fn(name: str, input_spec, num_classes: int) -> ModelFn:
    if name not in MODELS:
        raise FedrunError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")
    return MODELS[name](input_spec, num_classes)
