"""Model registry: a name -> a `tff.learning.models.VariableModel` factory for the data's shape."""

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf
import tensorflow_federated as tff

from fedrun.errors import FedrunError
from fedrun.learning.custom_linear import CustomLinear
from fedrun.learning.registry import MODELS

ModelFn = Callable[[], tff.learning.models.VariableModel]


@dataclass(frozen=True)
class ModelSpec:
    """What a model is built for: the batches it sees and the classes it predicts."""

    input_spec: object  # the element type of the client datasets (flattened features x, labels y)
    feature_shape: tuple[int, ...]  # one example's features before flattening
    num_classes: int

    @property
    def features(self) -> int:
        return int(self.input_spec["x"].shape[-1])


def _from_keras(spec: ModelSpec, build: Callable[[], tf.keras.Model]) -> ModelFn:
    def model_fn():
        return tff.learning.models.from_keras_model(
            build(),
            input_spec=spec.input_spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    return model_fn


def linear_softmax(spec: ModelSpec) -> ModelFn:
    """The seed tutorial's model: Dense(num_classes) from zeros + softmax, via TFF's Keras conversion."""
    return _from_keras(
        spec,
        lambda: tf.keras.Sequential(
            [
                tf.keras.layers.InputLayer(input_shape=(spec.features,)),
                tf.keras.layers.Dense(spec.num_classes, kernel_initializer="zeros"),
                tf.keras.layers.Softmax(),
            ]
        ),
    )


def custom_linear(spec: ModelSpec) -> ModelFn:
    """The same model hand-written against VariableModel, as the tutorial's custom-model section does."""
    return lambda: CustomLinear(spec.features, spec.num_classes)


def cnn(spec: ModelSpec) -> ModelFn:
    """The follow-up tutorial's CNN (two 5x5 conv + max-pool blocks, Dense 512, softmax), for
    realistic client compute. Initializers are seeded so every run starts from the same model."""
    shape = spec.feature_shape if len(spec.feature_shape) == 3 else (*spec.feature_shape, 1)
    if len(shape) != 3:
        raise FedrunError(
            f"--model cnn needs image examples (height, width[, channels]), but this data's "
            f"examples have shape {spec.feature_shape}: use --model linear"
        )

    def init(seed: int) -> tf.keras.initializers.Initializer:
        return tf.keras.initializers.GlorotUniform(seed=seed)

    def conv_block(filters: int, seed: int) -> list[tf.keras.layers.Layer]:
        return [
            tf.keras.layers.Conv2D(
                filters, 5, padding="same", activation="relu", kernel_initializer=init(seed)
            ),
            tf.keras.layers.MaxPool2D(2, padding="same"),
        ]

    return _from_keras(
        spec,
        lambda: tf.keras.Sequential(
            [
                tf.keras.layers.InputLayer(input_shape=(spec.features,)),
                tf.keras.layers.Reshape(shape),
                *conv_block(32, seed=1),
                *conv_block(64, seed=2),
                tf.keras.layers.Flatten(),
                tf.keras.layers.Dense(512, activation="relu", kernel_initializer=init(3)),
                tf.keras.layers.Dense(spec.num_classes, kernel_initializer=init(4)),
                tf.keras.layers.Softmax(),
            ]
        ),
    )


def create_model_fn(name: str, spec: ModelSpec) -> ModelFn:
    if name not in MODELS:
        raise FedrunError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")
    return MODELS[name].load()(spec)
