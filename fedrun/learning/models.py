"""Model registry: a name -> a `tff.learning.models.VariableModel` factory for the data's shape
and the initial weights asked for.

Initializers are seeded (stateless in Keras 2): every call of a model function, in any process,
starts from the same weights, so TFF's `initialize`, the bench's TF loop and peers agree."""

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf
import tensorflow_federated as tff

from fedrun.errors import FedrunError
from fedrun.learning.custom_linear import CustomLinear
from fedrun.learning.registry import MODEL_INITS, MODELS

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


@dataclass(frozen=True)
class ModelInit:
    """How the trainable weights start (fedrun.learning.registry.MODEL_INITS), and the run's seed."""

    kind: str = "default"
    seed: int = 0

    def kernel(self, default: str, offset: int = 0) -> tf.keras.initializers.Initializer:
        """A kernel's initializer; `default` is the model's own kind, `offset` tells its layers apart."""
        kind = default if self.kind == "default" else self.kind
        if kind == "zeros":
            return tf.keras.initializers.Zeros()
        return tf.keras.initializers.GlorotUniform(seed=self.seed + offset)


DEFAULT_INIT = ModelInit()


def _from_keras(spec: ModelSpec, build: Callable[[], tf.keras.Model]) -> ModelFn:
    def model_fn():
        return tff.learning.models.from_keras_model(
            build(),
            input_spec=spec.input_spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    return model_fn


def linear_softmax(spec: ModelSpec, init: ModelInit) -> ModelFn:
    """The seed tutorial's model: Dense(num_classes) + softmax, via TFF's Keras conversion; by
    default Glorot-uniform, as Keras' Dense starts."""
    return _from_keras(
        spec,
        lambda: tf.keras.Sequential(
            [
                tf.keras.layers.InputLayer(input_shape=(spec.features,)),
                tf.keras.layers.Dense(spec.num_classes, kernel_initializer=init.kernel("glorot-uniform")),
                tf.keras.layers.Softmax(),
            ]
        ),
    )


def custom_linear(spec: ModelSpec, init: ModelInit) -> ModelFn:
    """The same model hand-written against VariableModel, as the tutorial's custom-model section
    does; by default from zeros, as the tutorial's."""
    return lambda: CustomLinear(spec.features, spec.num_classes, init.kernel("zeros"))


def cnn(spec: ModelSpec, init: ModelInit) -> ModelFn:
    """The follow-up tutorial's CNN (two 5x5 conv + max-pool blocks, Dense 512, softmax), for
    realistic client compute; Glorot-uniform kernels (never zeros: they would stay symmetric)."""
    shape = spec.feature_shape if len(spec.feature_shape) == 3 else (*spec.feature_shape, 1)
    if len(shape) != 3:
        raise FedrunError(
            f"--model cnn needs image examples (height, width[, channels]), but this data's "
            f"examples have shape {spec.feature_shape}: use --model linear"
        )

    if init.kind == "zeros":
        raise FedrunError("a CNN from zeros never breaks its symmetry: use --model-init default")

    def kernel(layer: int) -> tf.keras.initializers.Initializer:
        return init.kernel("glorot-uniform", offset=layer)

    def conv_block(filters: int, layer: int) -> list[tf.keras.layers.Layer]:
        return [
            tf.keras.layers.Conv2D(
                filters, 5, padding="same", activation="relu", kernel_initializer=kernel(layer)
            ),
            tf.keras.layers.MaxPool2D(2, padding="same"),
        ]

    return _from_keras(
        spec,
        lambda: tf.keras.Sequential(
            [
                tf.keras.layers.InputLayer(input_shape=(spec.features,)),
                tf.keras.layers.Reshape(shape),
                *conv_block(32, layer=1),
                *conv_block(64, layer=2),
                tf.keras.layers.Flatten(),
                tf.keras.layers.Dense(512, activation="relu", kernel_initializer=kernel(3)),
                tf.keras.layers.Dense(spec.num_classes, kernel_initializer=kernel(4)),
                tf.keras.layers.Softmax(),
            ]
        ),
    )


def create_model_fn(name: str, spec: ModelSpec, init: ModelInit = DEFAULT_INIT) -> ModelFn:
    if name not in MODELS:
        raise FedrunError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")
    if init.kind not in MODEL_INITS:
        raise FedrunError(
            f"unknown model initialization '{init.kind}'; choose one of: {', '.join(MODEL_INITS)}"
        )
    return MODELS[name].load()(spec, init)
