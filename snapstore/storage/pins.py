"""Pins: ``pins/<snapshot id>`` (empty files). A pinned snapshot is never pruned."""

from __future__ import annotations

from pathlib import Path

from snapstore.errors import translate_os_error
from snapstore.model import SnapshotId
from snapstore.storage import fsio
from snapstore.storage.snapshots import id_names


class PinStore:
    def __init__(self, root: Path, file_mode: int) -> None:
        self.root = root
        self.file_mode = file_mode

    def list(self) -> set[SnapshotId]:
        """The pinned snapshot ids. Other names (not lowercase hex of an id) are ignored
        silently: a stray pin protects nothing and costs nothing."""
        return set(id_names(self.root, "")[0])

    def pin(self, snapshot_id: SnapshotId) -> None:
        try:
            self.root.mkdir(mode=fsio.dir_mode(self.file_mode), exist_ok=True)
        except OSError as exc:
            raise translate_os_error(exc, fsio.shown(self.root)) from exc
        fsio.write_durable(self.root / snapshot_id.hex(), b"", self.file_mode)

    def unpin(self, snapshot_id: SnapshotId) -> None:
        try:
            (self.root / snapshot_id.hex()).unlink(missing_ok=True)
            fsio.fsync_dir(self.root)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise translate_os_error(exc, fsio.shown(self.root)) from exc
