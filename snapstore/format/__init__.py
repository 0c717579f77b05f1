"""Bytes <-> model for every file in a repository (pure). docs/FORMAT.md is the spec."""

FORMAT_VERSION = 1
