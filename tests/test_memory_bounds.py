"""Issue 11, point 5: verify and the exclusive sizes of `snap log` hold one manifest's chunk
ids packed (32 bytes each), never an object per chunk record of every manifest. A synthetic
manifest of many chunk records is counted, verified and sized under tracemalloc; the Python
memory each record costs is asserted well below what objects would cost (~760 bytes)."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import blake3
import pytest

from snapstore import Mode, Repository, chunkset
from snapstore.format import manifest as mf
from snapstore.model import ChunkId, ChunkLocation, EntryEnd, EntryStart, PackId, SnapshotId
from snapstore.ops.space import exclusive_bytes
from snapstore.ops.verify import verify

RECORDS = 100_000
RUN = 5_000  # ids sorted as objects at a time (256K in use): the bound shows at this scale
MISSING_PACK = PackId(b"\x07" * 16)


def _synthetic(root: Path, n: int) -> SnapshotId:
    """A repository whose one manifest names ``n`` distinct chunks, all indexed in a pack
    that is not on disk (verify then reports one problem, not one per chunk)."""
    Repository.init(root).close()
    rng = random.Random(n)
    ids = [ChunkId(rng.randbytes(32)) for _ in range(n)]
    parts = [mf.encode_header(), mf.encode_record(EntryStart("big"))]
    parts += [mf.TAG_CHUNK + cid + b"\x01\x00\x00\x00" for cid in ids]
    parts.append(mf.encode_record(EntryEnd(n, b"\0" * 32)))
    created = datetime(2024, 1, 1, tzinfo=UTC)
    parts.append(
        mf.encode_trailer(
            name="big",
            created=created,
            message="",
            size=n,
            entries=1,
            chunk_refs=n,
            hostname="h",
            source="/x",
        )
    )
    data = b"".join(parts)
    sid = SnapshotId(blake3.blake3(data).digest())
    (root / "snapshots" / sid.hex()).write_bytes(data)
    with Repository.open(root, Mode.WRITE) as r:
        for start in range(0, n, 50_000):
            with r._index.write() as w:
                for cid in ids[start : start + 50_000]:
                    w.put(cid, ChunkLocation(MISSING_PACK, 16, 1, 1, 0, 0))
    Repository.open(root, Mode.WRITE).close()  # uncounted: this writer's recovery counts it
    return sid


def _peak(job: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        job()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_verify_and_exclusive_size_memory_per_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunkset, "_RUN", RUN)
    small, big = tmp_path / "small", tmp_path / "big"
    _synthetic(small, RECORDS // 4)
    sid = _synthetic(big, RECORDS)

    def verify_of(root: Path) -> Callable[[], object]:
        def job() -> object:
            with Repository.open(root, Mode.CHECK) as r:
                report = verify(r)
            assert [p.kind for p in report.problems] == ["pack"]  # the one missing pack
            return report

        return job

    per_record = (_peak(verify_of(big)) - _peak(verify_of(small))) / (RECORDS * 3 // 4)
    print(f"verify: {per_record:.0f} bytes per chunk record")
    assert per_record < 120, f"verify: {per_record:.0f} bytes per chunk record"

    def size_of() -> object:
        with Repository.open(big) as r:
            return exclusive_bytes(r, sid)

    assert _peak(size_of) / RECORDS < 120
