"""Workers someone else runs (containers, Kubernetes pods, other hosts), reached by address."""
