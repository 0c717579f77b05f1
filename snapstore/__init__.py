"""snapstore: the history of large binary files in a deduplicating, crash-safe store.

The public Python API; the ``snap`` command is built on exactly this.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from snapstore.errors import SnapstoreError
    from snapstore.model import ChunkerParams, SnapshotInfo
    from snapstore.ops.checkout import CheckoutResult, checkout
    from snapstore.ops.commit import CommitResult, commit_file
    from snapstore.ops.space import exclusive_bytes
    from snapstore.ops.stats import RepoStats, repo_stats
    from snapstore.repo import Mode, Repository

# Imported on first use (PEP 562): a command imports only the layers it runs on.
_HOMES = {
    "SnapstoreError": "snapstore.errors",
    "ChunkerParams": "snapstore.model",
    "SnapshotInfo": "snapstore.model",
    "CheckoutResult": "snapstore.ops.checkout",
    "checkout": "snapstore.ops.checkout",
    "CommitResult": "snapstore.ops.commit",
    "commit_file": "snapstore.ops.commit",
    "exclusive_bytes": "snapstore.ops.space",
    "RepoStats": "snapstore.ops.stats",
    "repo_stats": "snapstore.ops.stats",
    "Mode": "snapstore.repo",
    "Repository": "snapstore.repo",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'snapstore' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home), name)


__version__ = "0.1.0"
__all__ = [
    "CheckoutResult",
    "ChunkerParams",
    "CommitResult",
    "Mode",
    "RepoStats",
    "Repository",
    "SnapshotInfo",
    "SnapstoreError",
    "__version__",
    "checkout",
    "commit_file",
    "exclusive_bytes",
    "repo_stats",
]
