"""Golden vectors for the commit path: deterministic inputs (random data, written zeros,
holes, in-place edits, a shifted copy, commits confirmed against a previous snapshot, zero
runs on and off) must give exactly the chunk lists the commit path gave before it was split
into parts (recorded from ae414e2). A digest of each manifest's records (chunk refs, zero
runs, entry end; not the entry, whose mtime is the run's) is compared, so any change of a
cut, a chunk id or a zero run fails."""

from __future__ import annotations

import random
import socket
from datetime import UTC, datetime
from pathlib import Path

import blake3
import pytest

from snapstore import Mode, Repository, commit_file
from snapstore.format import manifest as mf
from snapstore.model import ChunkerParams, EntryStart, SnapshotId
from tests.helpers import write_sparse

MiB = 1024 * 1024
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _versions(tmp: Path) -> list[tuple[str, Path]]:
    """(snapshot name, input) in commit order: later versions of ``disk.img`` are confirmed
    against the earlier ones."""
    size = 20 * MiB
    v1 = bytearray(size)
    v1[0 : 6 * MiB] = _rand(1, 6 * MiB)
    # 6..7 MiB: written zeros (a zero run that is not a hole)
    v1[7 * MiB : 10 * MiB] = _rand(2, 3 * MiB)
    # 10..14 MiB: a hole
    v1[14 * MiB : size] = _rand(3, 6 * MiB)
    holes = [(10 * MiB, 14 * MiB)]

    def write(path: Path, data: bytes | bytearray, holes: list[tuple[int, int]]) -> Path:
        pieces: list[tuple[int, bytes]] = []
        pos = 0
        for a, b in [*holes, (len(data), len(data))]:
            if a > pos:
                pieces.append((pos, bytes(data[pos:a])))
            pos = b
        write_sparse(path, len(data), pieces)
        return path

    out = [("disk.img", write(tmp / "v1", v1, holes))]
    v2 = bytearray(v1)  # in place: small edits, data written into the hole
    v2[2 * MiB : 2 * MiB + 100] = _rand(4, 100)
    v2[9 * MiB + 512 * 1024 : 9 * MiB + 522 * 1024] = _rand(5, 10 * 1024)
    v2[12 * MiB : 12 * MiB + 200 * 1024] = _rand(6, 200 * 1024)
    v2[17 * MiB : 17 * MiB + 64 * 1024] = bytes(64 * 1024)  # a zero run inside data
    out.append(("disk.img", write(tmp / "v2", v2, [(10 * MiB, 12 * MiB), (12 * MiB + 256 * 1024, 14 * MiB)])))
    # shifted: 777 bytes inserted at 1 MiB, 5000 removed at 15 MiB (holes move along)
    v3 = v2[: 1 * MiB] + _rand(7, 777) + v2[1 * MiB : 15 * MiB] + v2[15 * MiB + 5000 :]
    d = 777
    out.append(
        (
            "disk.img",
            write(tmp / "v3", v3, [(10 * MiB + d, 12 * MiB), (12 * MiB + 256 * 1024 + d, 14 * MiB + d)]),
        )
    )
    # grown: a 3 MiB hole and 1 KiB of data appended
    v4 = v3 + bytes(3 * MiB) + _rand(8, 1024)
    out.append(
        (
            "disk.img",
            write(
                tmp / "v4",
                v4,
                [
                    (10 * MiB + d, 12 * MiB),
                    (12 * MiB + 256 * 1024 + d, 14 * MiB + d),
                    (len(v3), len(v3) + 3 * MiB),
                ],
            ),
        )
    )
    # a copy of v1 shifted by 4097 bytes, under another name (no previous snapshot)
    out.append(("copy.img", write(tmp / "copy", _rand(9, 4097) + v1, [(10 * MiB + 4097, 14 * MiB + 4097)])))
    out.append(("disk.img", tmp / "v1"))  # back to v1, confirmed against v4
    return out


def _records_digest(repo: Repository, snapshot_id: SnapshotId) -> str:
    h = blake3.blake3()
    for record in repo.iter_records(snapshot_id):
        if not isinstance(record, EntryStart):  # its mtime is the test run's
            h.update(mf.encode_record(record))
    return h.hexdigest()[:32]


PUBLISHED_ID = (
    "0924cf3eff6ec13d9f10395d88feeffd3948be9330a2ab878fc6a24e0d333ca5"  # manifest_writer + encode_trailer
)

GOLDEN: dict[str, list[tuple[str, int, int]]] = {
    # (records digest, chunk refs, zero bytes) of each commit of _versions, in order
    "zero_run=65536": [
        ("b77c9e6cadbefe2437daafe6ce1bf5cc", 946, 5242881),
        ("60c9a8138d5919d29d8033c717034729", 957, 5103617),
        ("38d3dcf5a1120e51dfbea5c83b2c472d", 957, 5103617),
        ("c2268b332d9b12b5efabab52a77117b5", 958, 8249345),
        ("c85142bf4bf8ed430515ecf93c827477", 946, 5242881),
        ("b77c9e6cadbefe2437daafe6ce1bf5cc", 946, 5242881),
    ],
    "zero_run=0": [
        ("f14a5f1a74ecc897b892939f51edb8bd", 947, 5111808),
        ("5de3e4334a07b87598717fbe572d5980", 959, 4849664),
        ("38bf53ed78d1968337f6b04a58af581d", 959, 4849664),
        ("8ed837e3f2c6e44bfa956688b5343f48", 960, 7929856),
        ("205061259587af36e849c5e327a90037", 947, 5111808),
        ("f14a5f1a74ecc897b892939f51edb8bd", 947, 5111808),
    ],
}


@pytest.mark.parametrize("zero_run", [64 * 1024, 0])
@pytest.mark.parametrize("threads", [1, 3])
def test_commit_gives_the_recorded_chunk_lists(tmp_path: Path, zero_run: int, threads: int) -> None:
    params = ChunkerParams("fastcdc", 4096, 16384, 65536, zero_run=zero_run)
    root = tmp_path / "repo"
    Repository.init(root, chunker=params, pack_target_size=4 * MiB).close()
    got: list[tuple[str, int, int]] = []
    with Repository.open(root, Mode.WRITE) as repo:
        for name, path in _versions(tmp_path):
            result = commit_file(repo, path, name=name, threads=threads, now=NOW)
            got.append((_records_digest(repo, result.snapshot.id), result.chunks, result.zero_bytes))
    assert got == GOLDEN[f"zero_run={zero_run}"]


def test_publish_snapshot_writes_the_bytes_commit_wrote(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repository's builder writes the manifest commit wrote itself before (header,
    records, trailer): the same snapshot id, recorded from ae414e2's encoding."""
    monkeypatch.setattr(socket, "gethostname", lambda: "golden-host")
    data = _rand(10, 5000)
    cid, _ = repo.put_chunk(data)
    builder = repo.begin_snapshot()
    builder.start_entry("disk.img", 0o640, 1_700_000_000_123_456_789)
    builder.add_chunk(cid, len(data))
    builder.add_zeros(4096)
    builder.add_chunk(cid, len(data))
    builder.end_entry(2 * len(data) + 4096, bytes(range(32)))
    info = repo.publish_snapshot(
        builder, name="disk.img", created=NOW, message="m", source="/src/disk.img", sequence=7
    )
    assert (info.name, info.size, info.entries, info.chunk_refs, info.sequence) == (
        "disk.img",
        14096,
        1,
        2,
        7,
    )
    assert info.hostname == "golden-host" and info.source == "/src/disk.img" and info.created == NOW
    assert info.id.hex() == PUBLISHED_ID
    with repo._index.read() as r:
        loc = r.get(cid)
    assert loc is not None and loc.refcount == 1  # counted once, though named twice
