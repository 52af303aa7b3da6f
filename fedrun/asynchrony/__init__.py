"""Buffered asynchronous aggregation (FedBuff) on the virtual clock: who trains when, from which
server version, and how much a late result counts."""
