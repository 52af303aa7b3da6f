"""Workers as Ray actors, one TFF worker_binary each, on the nodes of a Ray cluster."""
