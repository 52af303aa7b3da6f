"""Federated data sources: each client's examples are rebuilt from a short key where they are used."""

from fedrun.data.source import ClientDataSource, SourceOptions, create_source

__all__ = ["ClientDataSource", "SourceOptions", "create_source"]
