"""A repository directory that ``snap serve`` serves, opened on the server itself to run a
client's gc, prune, verify or repair next to the data (docs/PROTOCOL.md, "run").

It is opened as its remote clients see it, as objects (here of a local backend), so that a
writer puts the ``generation`` object as theirs do and their index caches learn that the
repository changed (docs/FORMAT.md, "the index as a cache"); its own index is a cache in
the server user's cache directory. Its locks are the flocks of ``locks/write`` and
``locks/data``: the files a session's ``lock`` and a local ``snap`` lock, so each keeps the
others out."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from snapstore.backends.local import LocalBackend
from snapstore.repo import Mode, Repository
from snapstore.repo_location import BackendLocation, RepoLock, Shown
from snapstore.storage.objlock import BackendFlock


class ServedLocation(BackendLocation):
    """``root`` as objects of a local backend, locked by flock; ``shown``: the repository's
    name in messages (the client's address as typed); ``append_only``: the server refuses
    removals (``snap serve --append-only``), as it does its clients' own."""

    def __init__(self, root: Path, shown: str, append_only: bool) -> None:
        super().__init__(LocalBackend(root), None, owns_backend=True)
        self._where = shown or str(root)
        self.root = Shown(self._where)
        self.append_only = append_only

    def lock(self, name: str, file_mode: int) -> RepoLock:
        return BackendFlock(self.backend, f"locks/{name}")


def open_served(
    root: Path,
    mode: Mode,
    *,
    shown: str = "",
    append_only: bool = False,
    rebuild_index: bool = False,
    lock: bool = True,
    lock_wait: float = 0.0,
) -> Repository:
    """Open the served repository at ``root`` (as :meth:`Repository.open`)."""
    return Repository._open_at(
        partial(ServedLocation, root, shown, append_only),
        mode,
        rebuild_index=rebuild_index,
        ignore_bad_quota=False,
        lock=lock,
        lock_wait=lock_wait,
    )
