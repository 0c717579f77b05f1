"""The repository's listing interface: which snapshots there are, their infos, the chunks
they name and their pins (mixed into Repository; a remote repository implements the same
methods)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from snapstore import ids, recovery
from snapstore.chunkset import ChunkIdSet
from snapstore.errors import (
    CorruptError,
    IntegrityError,
    SnapshotRemovedError,
    SnapstoreError,
    UnknownSnapshotError,
)
from snapstore.model import SnapshotId, SnapshotInfo
from snapstore.storage.index import Index
from snapstore.storage.kinds import Pins, Snapshots

log = logging.getLogger("snapstore.repo")


class Listing:
    """Mixed into Repository, which sets these attributes and ``_require_write``."""

    _index: Index
    _snapshots: Snapshots
    _pins: Pins

    def _require_write(self) -> None:
        raise NotImplementedError

    def damaged_manifests(self) -> list[SnapshotId]:
        """Published snapshots whose manifest could not be read whole when it was counted:
        the chunks they name are not known, so gc must free nothing (see ops/gc.py)."""
        with self._index.read(chunks=False) as r:
            return list(r.iter_damaged())

    def list_snapshots(self, *, skip_damaged: bool = False) -> list[SnapshotInfo]:
        """Every published snapshot, oldest first (SnapshotInfo.order). A damaged manifest is
        a CorruptError, or with ``skip_damaged`` is left out (with a warning)."""
        infos, damaged = self._load_infos()
        if damaged and not skip_damaged:
            raise damaged[0][1]
        for sid, exc in damaged:
            log.warning("snapshot %s left out: %s", sid.hex()[:12], exc.message)
        return infos

    def _load_infos(self) -> tuple[list[SnapshotInfo], list[tuple[SnapshotId, SnapstoreError]]]:
        infos: list[SnapshotInfo] = []
        damaged: list[tuple[SnapshotId, SnapstoreError]] = []
        for sid in self._snapshots.list_ids():
            try:
                infos.append(self._snapshots.load_info(sid))
            except SnapshotRemovedError:
                continue  # removed since it was listed
            except (CorruptError, IntegrityError) as exc:
                damaged.append((sid, exc))
        return sorted(infos, key=lambda s: s.order), damaged

    def resolve(self, ref: str, *, name: str | None = None) -> SnapshotInfo:
        """The snapshot ``ref`` names. A damaged manifest does not stop the others from being
        found (it is left out, with a warning); naming it gives its error."""
        infos, damaged = self._load_infos()
        try:
            found = ids.resolve(ref, infos, name=name)
        except UnknownSnapshotError:
            wanted = ref.strip().lower()
            for sid, exc in damaged:
                if len(wanted) >= ids.MIN_PREFIX and sid.hex().startswith(wanted):
                    raise exc from None
            raise
        for _, exc in damaged:
            log.warning("%s; it was left out when looking for %r (run 'snap verify')", exc.message, ref)
        return found

    def find_damaged(self, ref: str) -> SnapshotId | None:
        """The one snapshot whose manifest is damaged and whose id starts with ``ref`` (at
        least 4 hex digits), or None: so that it can be removed."""
        wanted = ref.strip().lower()
        if len(wanted) < ids.MIN_PREFIX:
            return None
        hits = [sid for sid, _ in self._load_infos()[1] if sid.hex().startswith(wanted)]
        return hits[0] if len(hits) == 1 else None

    def snapshot_ids(self) -> list[SnapshotId]:
        """The ids of the published snapshots (their manifests are not read)."""
        return self._snapshots.list_ids()

    def load_info(self, snapshot_id: SnapshotId) -> SnapshotInfo:
        return self._snapshots.load_info(snapshot_id)

    def snapshot_chunk_sets(self, snapshot_ids: Iterable[SnapshotId]) -> Iterator[ChunkIdSet]:
        """The distinct chunk ids each snapshot's manifest names, one set at a time (a damaged
        manifest is a CorruptError or IntegrityError when its turn comes)."""
        for sid in snapshot_ids:
            yield recovery.chunk_set(self._snapshots, sid)

    def pinned(self) -> set[SnapshotId]:
        return self._pins.list()

    def pin(self, snapshot_id: SnapshotId) -> None:
        self._require_write()
        self._pins.pin(snapshot_id)

    def unpin(self, snapshot_id: SnapshotId) -> None:
        self._require_write()
        self._pins.unpin(snapshot_id)
