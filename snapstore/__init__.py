"""snapstore: the history of large binary files in a deduplicating, crash-safe store.

The public Python API; the ``snap`` command is built on exactly this.
"""

from snapstore.errors import SnapstoreError
from snapstore.model import ChunkerParams, SnapshotInfo
from snapstore.ops.checkout import CheckoutResult, checkout
from snapstore.ops.commit import CommitResult, commit_file
from snapstore.ops.space import exclusive_bytes
from snapstore.ops.stats import RepoStats, repo_stats
from snapstore.repo import Mode, Repository

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
