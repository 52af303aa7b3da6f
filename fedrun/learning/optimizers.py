"""Client and server optimizers by name (see registry.OPTIMIZERS)."""

import tensorflow_federated as tff


def sgd(learning_rate: float, momentum: float) -> tff.learning.optimizers.Optimizer:
    return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate, momentum=momentum or None)


def adam(learning_rate: float, momentum: float) -> tff.learning.optimizers.Optimizer:
    del momentum  # the configuration refuses momentum with adam
    return tff.learning.optimizers.build_adam(learning_rate=learning_rate)
