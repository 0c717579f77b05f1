"""Repository locks kept as objects, for backends without flock (docs/BACKENDS.md, "locks
without flock"): the methods of storage/lock.Lock.

A lock named ``locks/<name>`` is held exclusively by the holder of the object
``locks/<name>-exclusive``, created by a put that refuses an existing name (race-free where the
backend declares ``create_exclusive``), and shared by holders of ``locks/<name>-shared-<random>``.
Each side creates its object first, then looks for the other side's and, finding one, deletes
its own and fails: of two racing holders at least one sees the other. Nobody waits for a lock
(``wait`` polls). Limitation: a holder that dies keeps its object, so its lock stays held until
the object is deleted by hand; no stale lock is broken automatically."""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time
from contextlib import AbstractContextManager, suppress
from pathlib import Path

from snapstore.backends.base import Backend
from snapstore.errors import LockedError, ObjectExistsError, SnapstoreError


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
        deadline = time.monotonic() + wait
        while True:
            try:
                self._take(exclusive, repo, what)
                return
            except LockedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _take(self, exclusive: bool, repo: Path, what: str) -> None:
        if exclusive:
            self._create_exclusive(repo, what)
            if self._shared_holders():
                self._backend.delete(self._exclusive)
                raise LockedError(repo, what)
            self._held = self._exclusive
            return
        mine = f"{self._shared_prefix}{secrets.token_hex(8)}"
        self._backend.put(mine, _record())
        if self._backend.exists_many([self._exclusive]):
            self._backend.delete(mine)
            raise LockedError(repo, what)
        self._held = mine

    def upgrade(self, *, repo: Path, what: str) -> None:
        """Shared -> exclusive; LockedError (still shared) if another holder has it."""
        assert self._held is not None
        if self._held == self._exclusive:
            return
        self._create_exclusive(repo, what)
        if set(self._shared_holders()) - {self._held}:
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
        try:
            self._backend.put(self._exclusive, _record())
        except ObjectExistsError:
            raise LockedError(repo, what) from None

    def _shared_holders(self) -> list[str]:
        return list(self._backend.list(self._shared_prefix))


def _record() -> bytes:
    """Who holds the lock (for a user deleting a stale lock object by hand)."""
    return json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv[:2])}
    ).encode()


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
        deadline = time.monotonic() + wait
        while True:
            held = self._backend.lock(self._name, exclusive=exclusive)
            try:
                held.__enter__()
            except LockedError:
                if time.monotonic() >= deadline:
                    raise LockedError(repo, what) from None
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                continue
            self._held = held
            return

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
