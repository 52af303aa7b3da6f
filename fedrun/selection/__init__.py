"""Who takes part in a round and how the work is cut: pure, seeded functions of (seed, round)."""
