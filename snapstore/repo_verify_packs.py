"""Pack-level checks of verify (repo_verify.py) and repair: damaged pack headers, and pack
trailers against the index.

A trailer (format 2) that omits or misplaces a record the index points at is damage nothing
else sees: every chunk still reads, but an index rebuilt from the trailers would lose that
chunk. verify reports it; repair, before it rebuilds the index, writes such a trailer again
from a scan of its pack (repo_index.open_index)."""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from snapstore.errors import CorruptError, SnapstoreError
from snapstore.model import ChunkId, ChunkLocation, PackId, SnapshotId
from snapstore.storage.index import Index
from snapstore.storage.kinds import Packs


@dataclass
class _Miss:
    count: int = 0
    first: tuple[ChunkId, int] | None = None  # (chunk id, offset) of the first one met
    users: set[SnapshotId] = field(default_factory=set)


class Trailers:
    """The trailers of packs, held compactly (16 bytes per record: its offset and the first
    8 bytes of its chunk id, in offset order), and the index entries they do not list."""

    def __init__(self, packs: Packs, pack_ids: Iterable[PackId]) -> None:
        self._tables: dict[PackId, tuple[array[int], array[int]]] = {}
        self.misses: dict[PackId, _Miss] = {}
        if packs.version < 2:
            return  # packs of format 1 have no trailer
        for pack_id in pack_ids:
            try:
                entries = packs.trailer(pack_id)
            except CorruptError:
                continue  # damaged: reported by the record checks (a failing read is raised)
            if entries is not None:
                offsets = array("Q", (e.offset for e in entries))
                ids = array("Q", (int.from_bytes(e.chunk_id[:8], "little") for e in entries))
                self._tables[pack_id] = (offsets, ids)

    def check(self, chunk_id: ChunkId, loc: ChunkLocation, users: Iterable[SnapshotId] = ()) -> None:
        """Note the entry unless its pack has no trailer or the trailer lists it in place."""
        table = self._tables.get(loc.pack_id)
        if table is None:
            return
        offsets, ids = table
        i = bisect.bisect_left(offsets, loc.offset)
        if i < len(offsets) and offsets[i] == loc.offset and ids[i] == int.from_bytes(chunk_id[:8], "little"):
            return
        miss = self.misses.setdefault(loc.pack_id, _Miss())
        miss.count += 1
        miss.first = miss.first or (chunk_id, loc.offset)
        miss.users.update(users)

    def report(self) -> Iterator[tuple[str, tuple[SnapshotId, ...]]]:
        """(detail, snapshots affected) of each pack whose trailer misses an entry."""
        for pack_id in sorted(self.misses):
            miss = self.misses[pack_id]
            assert miss.first is not None
            chunk_id, offset = miss.first
            more = f" and {miss.count - 1} more" if miss.count > 1 else ""
            yield (
                f"pack {pack_id.hex()}: its trailer does not list chunk {chunk_id.hex()[:16]} at "
                f"offset {offset}{more} (an index rebuilt from it would lose them; 'snap repair' "
                "writes it again from a scan of the pack)",
                tuple(sorted(miss.users)),
            )


def incomplete_trailers(index: Index, packs: Packs) -> list[PackId]:
    """The packs whose trailer omits or misplaces a record that ``index`` points at."""
    trailers = Trailers(packs, packs.iter_pack_ids())
    with index.read() as r:
        for chunk_id, entry in r.iter_entries():
            if not isinstance(entry, CorruptError):
                trailers.check(chunk_id, entry)
    return sorted(trailers.misses)


def damaged_headers(packs: Packs, on_disk: set[PackId]) -> Iterator[str]:
    """What is wrong with each damaged pack header (the chunks stay readable: each record
    carries its own checksum)."""
    for pack_id in sorted(on_disk):
        try:
            if packs.is_empty(pack_id) in (None, True):
                continue  # gone, or created by a commit killed before it wrote anything (gc removes it)
            packs.check_header(pack_id)
        except SnapstoreError as exc:
            yield f"{exc.message} (its chunks are still readable; 'snap repair' rewrites it)"
