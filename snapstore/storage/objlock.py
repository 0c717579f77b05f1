"""Repository locks kept as objects, for backends without flock (docs/BACKENDS.md, "locks
without flock"): the methods of storage/lock.Lock.

A lock named ``locks/<name>`` is held exclusively by the holder of the object
``locks/<name>-exclusive``, created by a put that refuses an existing name (race-free where the
backend declares ``create_exclusive``), and shared by holders of ``locks/<name>-shared-<random>``.
Each side creates its object first, then looks for the other side's and, finding one, deletes
its own and fails: of two racing holders at least one sees the other. Nobody waits for a lock
(``wait`` polls).

A holder that dies keeps its object. An object whose record names a process of this host
that is gone (storage/holders.py) is stale: whoever meets it deletes it (a warning names the
holder) and tries again, after reading it a second time unchanged (so that a lock taken
meanwhile by a live holder is not deleted; a race in a window of one get, as restic's). A
dead holder of another host keeps its lock until its object is deleted by hand."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any

from snapstore.backends.base import Backend
from snapstore.errors import LockedError, ObjectExistsError, ObjectNotFoundError, SnapstoreError
from snapstore.storage import holders

log = logging.getLogger(__name__)


class ObjectLock:
    interrupted_holder: str | None = None  # never known: a dead holder's object stays

    def __init__(self, backend: Backend, name: str) -> None:
        self._backend = backend
        self._exclusive = f"{name}-exclusive"
        self._shared_prefix = f"{name}-shared-"
        self._held: str | None = None  # the object this holder created

    @property
    def held(self) -> bool:
        return self._held is not None

    def acquire(
        self, *, exclusive: bool, repo: Path, what: str, reader: bool = False, wait: float = 0.0
    ) -> None:
        """Take the lock; LockedError if another holder has it ``wait`` seconds (or at once)."""
        _polling(wait, lambda: self._take(exclusive, repo, what))

    def _take(self, exclusive: bool, repo: Path, what: str) -> None:
        if exclusive:
            self._create_exclusive(repo, what)
            if self._live_shared_holders():
                self._backend.delete(self._exclusive)
                raise LockedError(repo, what)
            self._held = self._exclusive
            return
        mine = f"{self._shared_prefix}{secrets.token_hex(8)}"
        self._backend.put(mine, _record())
        if self._backend.exists_many([self._exclusive]) and not self._broke_stale(self._exclusive):
            self._backend.delete(mine)
            raise LockedError(repo, what)
        self._held = mine

    def upgrade(self, *, repo: Path, what: str) -> None:
        """Shared -> exclusive; LockedError (still shared) if another holder has it."""
        assert self._held is not None
        if self._held == self._exclusive:
            return
        self._create_exclusive(repo, what)
        if set(self._live_shared_holders()) - {self._held}:
            self._backend.delete(self._exclusive)
            raise LockedError(repo, what)
        self._backend.delete(self._held)
        self._held = self._exclusive

    def release(self) -> None:
        """Delete this holder's lock object. Never fails: an object left behind (a backend
        failing now) is a stale lock, removed by hand."""
        held, self._held = self._held, None
        if held is not None:
            with suppress(SnapstoreError):
                self._backend.delete(held)

    def _create_exclusive(self, repo: Path, what: str) -> None:
        for _ in range(2):
            try:
                self._backend.put(self._exclusive, _record())
                return
            except ObjectExistsError:
                if not self._broke_stale(self._exclusive):
                    break
        raise LockedError(repo, what)

    def _live_shared_holders(self) -> list[str]:
        return [name for name in self._backend.list(self._shared_prefix) if not self._broke_stale(name)]

    def _broke_stale(self, name: str) -> bool:
        """Delete the lock object ``name`` if its holder is known to be gone; True if it is
        gone now (deleted here or by its holder meanwhile)."""
        try:
            record = self._backend.get(name)
            info = _decode(record)
            if info is None or not holders.gone(info):
                return False
            if self._backend.get(name) != record:  # taken again meanwhile
                return False
            self._backend.delete(name)
        except ObjectNotFoundError:
            return True
        log.warning(
            "removed the stale lock %s of pid %s on %s (%s), which is no longer running",
            name,
            info.get("pid"),
            info.get("host"),
            info.get("command"),
        )
        return True


def _record() -> bytes:
    """Who holds the lock: its host, pid and that pid's life (storage/holders.py), and command."""
    return json.dumps(holders.this_process()).encode()


def _decode(record: bytes) -> dict[str, Any] | None:
    """A lock record's fields; None when it is not a JSON object."""
    try:
        info = json.loads(record)
    except (ValueError, RecursionError):
        return None
    return info if isinstance(info, dict) else None


class BackendFlock:
    """A repository lock over a backend that declares ``flock`` (a remote server's, or a
    local directory's): the backend's own lock on the object ``locks/<name>``, which the
    kernel releases when its holder (here or on the server) dies: never stale. The same file
    local ``snap`` locks, so local and remote writers keep each other out."""

    interrupted_holder: str | None = None  # not recorded

    def __init__(self, backend: Backend, name: str) -> None:
        self._backend = backend
        self._name = name
        self._held: AbstractContextManager[None] | None = None

    @property
    def held(self) -> bool:
        return self._held is not None

    def acquire(
        self, *, exclusive: bool, repo: Path, what: str, reader: bool = False, wait: float = 0.0
    ) -> None:
        """Take the lock; LockedError if another holder has it ``wait`` seconds (or at once)."""

        def take() -> None:
            held = self._backend.lock(self._name, exclusive=exclusive)
            try:
                held.__enter__()
            except LockedError:
                raise LockedError(repo, what) from None
            self._held = held

        _polling(wait, take)

    def upgrade(self, *, repo: Path, what: str) -> None:
        """Shared -> exclusive; LockedError (shared again) if another holder has it. Not
        atomic (as flock's own conversion): the shared lock is dropped first."""
        self.release()
        try:
            self.acquire(exclusive=True, repo=repo, what=what)
        except LockedError:
            self.acquire(exclusive=False, repo=repo, what=what)
            raise

    def release(self) -> None:
        """Let the lock go. Never fails: a backend failing now (a lost connection) has let
        it go with its holder."""
        held, self._held = self._held, None
        if held is not None:
            with suppress(SnapstoreError):
                held.__exit__(None, None, None)


def _polling(wait: float, take: Callable[[], None]) -> None:
    """``take()`` until it does not raise LockedError, for at most ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            take()
            return
        except LockedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
