"""The simulated devices behind the clients: how long each takes to download the model, train
and upload its update, and when it is available. Pure and seeded: the same client gets the same
times on every backend, worker count and run with the same seed."""
