"""Other federated-learning simulators beside fedrun in `fedrun bench`, each opt-in and run in an
environment of its own (`make bench-peers`)."""
