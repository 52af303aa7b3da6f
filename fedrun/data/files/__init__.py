"""File-backed sources (users' .npz files, TFF's EMNIST), converted once into a client store the
workers read fast, and what a conversion decides: the split into clients and the feature scale."""
