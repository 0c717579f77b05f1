"""verify: check the repository's structure and, optionally, every stored byte.

Structure: the index opens and every entry decodes; every manifest parses and matches its
id; every chunk it names is in the index; every pack an entry points into exists and has a
valid header; each entry's record header in its pack is intact and agrees with the entry;
reference counts agree with the manifests. ``read_data`` (or a seeded ``sample`` percentage)
also reads, decodes and hashes chunks. Each problem names the snapshots it affects.

The checks run inside the repository (Repository.verify, snapstore/repo_verify.py): they
compare its index, packs and manifests, which a remote repository checks where they are.
"""

from __future__ import annotations

from collections.abc import Iterable

from snapstore.model import SnapshotId
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Repository
from snapstore.repo_verify import MANIFEST_ADVICE, Problem, VerifyReport

__all__ = ["MANIFEST_ADVICE", "Problem", "VerifyReport", "affected", "verify"]


def verify(
    repo: Repository,
    *,
    read_data: bool = False,
    sample: float | None = None,
    seed: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> VerifyReport:
    """Check the repository: every manifest, every index entry and reference count (and the
    sizes the index keeps), every pack header, and with ``read_data`` (or a seeded
    ``sample`` percentage) every chunk read back and hashed. One streaming pass (memory: one
    manifest's chunk ids, 32 bytes each, at a time). Changes nothing."""
    return repo.verify(read_data=read_data, sample=sample, seed=seed, progress=progress)


def affected(problems: Iterable[Problem]) -> set[SnapshotId]:
    """The snapshots the problems concern."""
    return {sid for p in problems for sid in p.snapshots}
