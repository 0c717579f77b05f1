"""Pins kept as objects of a backend: ``pins/<snapshot id>`` (empty objects), the methods of
storage/pins.PinStore."""

from __future__ import annotations

import re

from snapstore.backends.base import Backend
from snapstore.model import SnapshotId

PREFIX = "pins/"
_ID = re.compile(r"[0-9a-f]{64}")


class ObjectPinStore:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def list(self) -> set[SnapshotId]:
        """The pinned snapshot ids (other names are ignored silently, as on a local disk)."""
        return {
            SnapshotId(bytes.fromhex(name[len(PREFIX) :]))
            for name in self._backend.list(PREFIX)
            if _ID.fullmatch(name, len(PREFIX))
        }

    def pin(self, snapshot_id: SnapshotId) -> None:
        self._backend.put(f"{PREFIX}{snapshot_id.hex()}", b"", overwrite=True)

    def unpin(self, snapshot_id: SnapshotId) -> None:
        self._backend.delete(f"{PREFIX}{snapshot_id.hex()}")
