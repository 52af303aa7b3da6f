"""Running computations on the workers: TFF's remote pieces, one session per worker, dynamic
dispatch with re-runs of lost shards, sharded mergeable execution, and the execute step of a
round. `fake` stands in for workers in tests of the decision logic."""
