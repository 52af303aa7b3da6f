"""fedrun: federated-learning rounds sharded across TFF executor-service workers."""
