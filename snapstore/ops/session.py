"""Opening a repository from the library, with auto-init as an explicit choice."""

from __future__ import annotations

from pathlib import Path

from snapstore.backends.base import Backend
from snapstore.repo import Mode, Repository


def open_repository(
    path: Path | str, mode: Mode = Mode.READ, *, create: bool = False, shared: bool = False
) -> Repository:
    """Open the repository at ``path`` (use it in a ``with`` block: it holds locks).

    ``mode``: ``Mode.READ`` for checkout, log and stats; ``Mode.WRITE`` for commit and rm;
    ``Mode.EXCLUSIVE`` for prune and gc; ``Mode.CHECK`` for verify. ``create``: make a new
    repository there first (``shared``: readable by other users) when there is none, as
    ``snap commit`` does in a directory without one; without it a missing repository is
    RepositoryNotFoundError (exit 3 in the CLI)."""
    root = Path(path)
    if create and not (root / "config").exists():
        Repository.init(root, shared=shared).close()
    return Repository.open(root, mode)  # RepositoryNotFoundError when there is none


def open_backend_repository(
    backend: Backend, mode: Mode = Mode.READ, *, create: bool = False, cache_dir: Path | None = None
) -> Repository:
    """Open the repository kept as objects of a storage backend (snapstore.backends; the
    caller closes the backend after the repository), as :func:`open_repository` does a local
    one. Its index is a cache in ``cache_dir``, by default
    ``$XDG_CACHE_HOME/snapstore/<repository id>/``. ``create``: make a new repository first
    when the backend holds none."""
    if create and not backend.exists_many(["config"]):
        Repository.init_backend(backend, cache_dir=cache_dir).close()
    return Repository.open_backend(backend, mode, cache_dir=cache_dir)
