"""Watching a run: the terminal, Prometheus, TensorBoard, each an observer of finished rounds."""
