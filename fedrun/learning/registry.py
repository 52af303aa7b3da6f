"""The learning choices a run names, importable without TensorFlow (for --help and checks)."""

from fedrun.registry import Entry

MODELS = {
    "linear": Entry(
        "the seed tutorial's Dense(classes) + softmax through TFF's Keras wrapper",
        "fedrun.learning.models:linear_softmax",
    ),
    "custom-linear": Entry(
        "the same model hand-written on tff.learning.models.VariableModel",
        "fedrun.learning.models:custom_linear",
    ),
    "cnn": Entry(
        "the follow-up tutorial's CNN (two 5x5 conv + max-pool blocks, Dense 512)",
        "fedrun.learning.models:cnn",
    ),
}
# How a model's trainable weights start (`--model-init`), seeded by the run's --seed.
MODEL_INITS = {
    "default": Entry(
        "the model's own: Glorot-uniform for linear (as Keras' Dense) and cnn, zeros for custom-linear"
    ),
    "glorot-uniform": Entry("Glorot-uniform kernels, zero biases"),
    "zeros": Entry("all zeros (linear models only)"),
}
OPTIMIZERS = {
    "sgd": Entry("SGD, with momentum if set", "fedrun.learning.optimizers:sgd"),
    "adam": Entry("Adam (as the server optimizer: FedAdam)", "fedrun.learning.optimizers:adam"),
}
CLIENT_LOOPS = {
    "iterator": Entry(
        "TFF's DATASET_ITERATOR: about half the CPU per example in TF 2.14",
        "tensorflow_federated:learning.LoopImplementation.DATASET_ITERATOR",
    ),
    "reduce": Entry(
        "TFF's default DATASET_REDUCE (TPUs need it); TF 2.14 re-instantiates it per client",
        "tensorflow_federated:learning.LoopImplementation.DATASET_REDUCE",
    ),
}
DATA_PLACEMENTS = {
    "workers": Entry("workers build each client's data from its key: a round sends keys, not examples"),
    "coordinator": Entry(
        "the coordinator builds the data and ships it as tensors (for data only it can read)"
    ),
}
