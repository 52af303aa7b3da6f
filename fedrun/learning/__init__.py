"""The federated algorithm: TFF's FedAvg and evaluation, models and optimizers.

Importing the package loads nothing; `registry` names the choices without TensorFlow.
"""
