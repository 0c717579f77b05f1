"""Pins: ``pins/<snapshot id>`` (empty files). A pinned snapshot is never pruned."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

from snapstore.errors import translate_os_error
from snapstore.model import SnapshotId
from snapstore.storage import fsio


class PinStore:
    def __init__(self, root: Path, file_mode: int) -> None:
        self.root = root
        self.file_mode = file_mode

    def list(self) -> set[SnapshotId]:
        pins: set[SnapshotId] = set()
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return pins
        except OSError as exc:
            raise translate_os_error(exc, str(self.root)) from exc
        for name in names:
            if len(name) == 64:
                with suppress(ValueError):
                    pins.add(bytes.fromhex(name))
        return pins

    def pin(self, snapshot_id: SnapshotId) -> None:
        try:
            self.root.mkdir(mode=fsio.dir_mode(self.file_mode), exist_ok=True)
        except OSError as exc:
            raise translate_os_error(exc, str(self.root)) from exc
        fsio.write_durable(self.root / snapshot_id.hex(), b"", self.file_mode)

    def unpin(self, snapshot_id: SnapshotId) -> None:
        try:
            (self.root / snapshot_id.hex()).unlink(missing_ok=True)
            fsio.fsync_dir(self.root)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise translate_os_error(exc, str(self.root)) from exc
