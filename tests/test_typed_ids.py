"""Chunk, pack and snapshot ids are distinct types: mypy refuses one where another is meant
(issue 12: "a pack id cannot be passed as a chunk id under mypy")."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapstore.model import ChunkId, ChunkLocation, PackId, SnapshotId

api = pytest.importorskip("mypy.api")

SNIPPET = """
from snapstore.model import ChunkId, ChunkRef, ChunkLocation, PackId, SnapshotId

def wants_chunk(c: ChunkId) -> None: ...

pack = PackId(bytes(16))
snap = SnapshotId(bytes(32))
wants_chunk(pack)  # line 8
wants_chunk(snap)  # line 9
wants_chunk(bytes(32))  # line 10
ChunkLocation(ChunkId(bytes(32)), 16, 1, 1, 0)  # line 11: a chunk id where a pack id goes
ChunkRef(ChunkId(bytes(32)), 5)  # fine
"""


def test_mypy_refuses_one_id_type_where_another_is_meant(tmp_path: Path) -> None:
    source = tmp_path / "ids_misuse.py"
    source.write_text(SNIPPET)
    out, err, status = api.run(
        [str(source), "--strict", "--no-incremental", "--follow-imports=silent", "--no-error-summary"]
    )
    lines = {int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line}
    assert status == 1, out + err
    assert lines == {8, 9, 10, 11}, out


def test_ids_cost_nothing_at_run_time() -> None:
    """NewType ids are the bytes themselves: equal, hashable and packable as before."""
    raw = bytes(range(32))
    assert ChunkId(raw) is raw and SnapshotId(raw) == raw and type(PackId(raw[:16])) is bytes
    assert ChunkLocation(PackId(raw[:16]), 16, 1, 1, 0).pack_id == raw[:16]
