"""Federated data sources: each client's examples are rebuilt from a short key where they are used.

Importing the package loads nothing; `registry` opens a source by name.
"""
