"""Bytes <-> model for every file in a repository (pure). docs/FORMAT.md is the spec."""

FORMAT_VERSION = 2  # what `snap init` writes
READABLE_VERSIONS = (1, 2, 3)  # repository formats this snap reads and writes
DELTA_VERSION = 3  # format 3 = format 2 with delta records (`snap init --delta`)
MANIFEST_VERSION = 1  # manifests are the same in formats 1 and 2
