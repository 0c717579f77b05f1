"""snapstore: the history of large binary files in a deduplicating, crash-safe store.

The public Python API; the ``snap`` command is built on exactly this, and the library
enforces what the command promises (the repository quota on every commit)::

    import snapstore
    from snapstore import Mode

    with snapstore.open_repository("/backup/vms", Mode.WRITE, create=True) as repo:
        result = snapstore.commit_file(repo, Path("vm.img"), message="nightly", tags=["nightly"])
    with snapstore.open_repository("/backup/vms", Mode.EXCLUSIVE) as repo:
        snapstore.prune(repo, snapstore.KeepPolicy(last=7, daily=30),
                        select=snapstore.SnapshotFilter.from_options(tags=["nightly"]))
    with snapstore.open_repository("/backup/vms", Mode.CHECK) as repo:
        assert snapstore.verify(repo).ok

Modes: ``READ`` (checkout, log, stats), ``WRITE`` (commit, rm), ``EXCLUSIVE`` (prune, gc),
``CHECK`` (verify). Every error is a :class:`SnapstoreError` (snapstore.errors) with the exit
code the CLI documents. See examples/nightly.py for a whole nightly job.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs a fast command (--version) 7 ms
if TYPE_CHECKING:
    from typing import Any

    from snapstore.errors import QuotaError, SnapstoreError
    from snapstore.model import ChunkerParams, SnapshotInfo
    from snapstore.ops.checkout import CheckoutResult, checkout
    from snapstore.ops.commit import CommitResult, commit_command, commit_file, commit_stream
    from snapstore.ops.gc import GcResult
    from snapstore.ops.gc import collect as gc
    from snapstore.ops.prune import PrunePlan, PruneResult, prune
    from snapstore.ops.session import open_repository
    from snapstore.ops.space import exclusive_bytes
    from snapstore.ops.stats import RepoStats, repo_stats
    from snapstore.ops.treecommit import TreeCommitResult, commit_tree
    from snapstore.ops.treerestore import RestoreResult, restore_tree
    from snapstore.ops.verify import VerifyReport, verify
    from snapstore.repo import Mode, Repository
    from snapstore.retention import KeepPolicy
    from snapstore.selection import SnapshotFilter

# Imported on first use (PEP 562): a command imports only the layers it runs on.
# name -> (module, attribute there)
_HOMES = {
    "SnapstoreError": ("snapstore.errors", "SnapstoreError"),
    "QuotaError": ("snapstore.errors", "QuotaError"),
    "ChunkerParams": ("snapstore.model", "ChunkerParams"),
    "SnapshotInfo": ("snapstore.model", "SnapshotInfo"),
    "CheckoutResult": ("snapstore.ops.checkout", "CheckoutResult"),
    "checkout": ("snapstore.ops.checkout", "checkout"),
    "CommitResult": ("snapstore.ops.commit", "CommitResult"),
    "commit_file": ("snapstore.ops.commit", "commit_file"),
    "commit_stream": ("snapstore.ops.commit", "commit_stream"),
    "commit_command": ("snapstore.ops.commit", "commit_command"),
    "GcResult": ("snapstore.ops.gc", "GcResult"),
    "gc": ("snapstore.ops.gc", "collect"),
    "PrunePlan": ("snapstore.ops.prune", "PrunePlan"),
    "PruneResult": ("snapstore.ops.prune", "PruneResult"),
    "prune": ("snapstore.ops.prune", "prune"),
    "open_repository": ("snapstore.ops.session", "open_repository"),
    "exclusive_bytes": ("snapstore.ops.space", "exclusive_bytes"),
    "RepoStats": ("snapstore.ops.stats", "RepoStats"),
    "repo_stats": ("snapstore.ops.stats", "repo_stats"),
    "TreeCommitResult": ("snapstore.ops.treecommit", "TreeCommitResult"),
    "commit_tree": ("snapstore.ops.treecommit", "commit_tree"),
    "RestoreResult": ("snapstore.ops.treerestore", "RestoreResult"),
    "restore_tree": ("snapstore.ops.treerestore", "restore_tree"),
    "VerifyReport": ("snapstore.ops.verify", "VerifyReport"),
    "verify": ("snapstore.ops.verify", "verify"),
    "Mode": ("snapstore.repo", "Mode"),
    "Repository": ("snapstore.repo", "Repository"),
    "KeepPolicy": ("snapstore.retention", "KeepPolicy"),
    "SnapshotFilter": ("snapstore.selection", "SnapshotFilter"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'snapstore' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home[0]), home[1])


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.2.0.dev0"  # the one place the version is written (pyproject reads it)
__all__ = [
    "CheckoutResult",
    "ChunkerParams",
    "CommitResult",
    "GcResult",
    "KeepPolicy",
    "Mode",
    "PrunePlan",
    "PruneResult",
    "QuotaError",
    "RepoStats",
    "Repository",
    "RestoreResult",
    "SnapshotFilter",
    "SnapshotInfo",
    "SnapstoreError",
    "TreeCommitResult",
    "VerifyReport",
    "__version__",
    "checkout",
    "commit_command",
    "commit_file",
    "commit_stream",
    "commit_tree",
    "exclusive_bytes",
    "gc",
    "open_repository",
    "prune",
    "repo_stats",
    "restore_tree",
    "verify",
]
