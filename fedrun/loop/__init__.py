"""The coordinator's round loop and what a run leaves behind: round records, the run directory,
checkpoints, and the assembly of a run from its configuration."""
