"""verify's check of the kept sizes (docs/FORMAT.md, "kept sizes"): the totals and exclusive
sizes the index keeps, against what one pass over its entries and the manifests gives."""

from __future__ import annotations

from snapstore.gcplan import record_span
from snapstore.model import ChunkLocation, SnapshotId
from snapstore.storage.index import IndexTxn


class KeptSizes:
    """The totals and exclusive sizes the index should keep, summed entry by entry."""

    def __init__(self) -> None:
        self.totals = [0, 0, 0, 0]
        self.exclusive: dict[int, int] = {}  # owners (as an integer) -> pack bytes

    def add(self, entry: ChunkLocation, expected: int, owners: int) -> None:
        """One index entry, named by ``expected`` counted snapshots whose ids XOR to ``owners``."""
        size = record_span(entry)
        if entry.refcount:
            self.totals[0] += 1
            self.totals[1] += entry.raw_size
            self.totals[2] += size
        else:
            self.totals[3] += size
        if expected == 1:
            self.exclusive[owners] = self.exclusive.get(owners, 0) + size

    def mismatches(self, r: IndexTxn, counted: list[SnapshotId]) -> list[tuple[str, SnapshotId | None]]:
        """What the index keeps wrongly: (detail, the snapshot concerned or None)."""
        if not r.sizes_ready():
            return []
        wrong: list[tuple[str, SnapshotId | None]] = []
        if list(r.totals() or ()) != self.totals:
            wrong.append(("the index's totals do not match its entries", None))
        for sid in counted:
            if r.exclusive(sid) != self.exclusive.get(int.from_bytes(sid, "little"), 0):
                wrong.append((f"the exclusive size kept for snapshot {sid.hex()[:12]} is wrong", sid))
        return wrong
