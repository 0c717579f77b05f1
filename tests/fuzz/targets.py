"""Fuzz targets: one function per parser of on-disk bytes. Each takes arbitrary bytes and
must return or raise a snapstore error (CorruptError, IntegrityError, ...), never anything
else, never hang, never allocate what a size field claims before it is checked.

Run in CI by tests/test_fuzz.py (hypothesis: random bytes and mutations of valid seeds), and
with atheris when it is installed: ``python tests/fuzz/fuzz.py TARGET``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import lmdb

from snapstore import codec
from snapstore.chunker import MAX_CHUNK_SIZE
from snapstore.errors import CorruptError, DamagedChunkError
from snapstore.format import FORMAT_VERSION
from snapstore.format import config as config_fmt
from snapstore.format import index as index_fmt
from snapstore.format import manifest as mf
from snapstore.format import pack as pack_fmt
from snapstore.format import tree as tree_fmt
from snapstore.hashing import chunk_id
from snapstore.model import (
    Buffer,
    ChunkerParams,
    ChunkId,
    ChunkLocation,
    ChunkRef,
    Config,
    EntryEnd,
    EntryStart,
    ManifestRecord,
    PackId,
    SnapshotId,
    TreeEntry,
    ZeroRun,
)
from snapstore.storage import lmdb_file
from snapstore.storage.packstore import PackStore
from snapstore.storage.snapshots import SnapshotStore

_SCRATCH = Path(tempfile.mkdtemp(prefix="snap-fuzz-"))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)


def _u32(data: bytes, at: int) -> int:
    return struct.unpack_from("<I", data.ljust(at + 4, b"\0"), at)[0]  # type: ignore[no-any-return]


# -- targets -------------------------------------------------------------------------------------------


def fuzz_config(data: bytes) -> None:
    """The config file: its version is peeked first, then the whole of it decoded."""
    config_fmt.peek_version(data)
    config_fmt.decode(data)


def fuzz_manifest_header(data: bytes) -> None:
    mf.check_header(data, "manifest")


def fuzz_manifest_records(data: bytes) -> None:
    """The record stream after the header, read as a stream."""
    for _ in mf.iter_records(io.BytesIO(data).read, "manifest"):
        pass


def fuzz_tree_object(data: bytes) -> None:
    """A tree object (docs/FORMAT.md "Trees"), as a chunk's plaintext: every name it gives
    back is one safe component."""
    for entry in tree_fmt.decode_tree(data, "tree"):
        assert entry.name not in (b"", b".", b"..") and b"/" not in entry.name


def fuzz_manifest_trailer(data: bytes) -> None:
    """The trailer JSON (its length is checked before it is read, see the footer target)."""
    mf.decode_trailer(SnapshotId(b"\1" * 32), data[: mf.MAX_JSON], "manifest")


def fuzz_manifest_footer(data: bytes) -> None:
    """The footer, for a file of the size the first 4 bytes say."""
    mf.trailer_length(data[4 : 4 + mf.FOOTER_SIZE], _u32(data, 0), "manifest")


def fuzz_manifest_file(data: bytes) -> None:
    """A whole manifest file through the snapshot store: trailer from the end, records with
    the whole-file hash (the id is the hash of the bytes, or of other bytes)."""
    store = SnapshotStore(_SCRATCH / "snapshots", _SCRATCH / "tmp", 0o600)
    store.root.mkdir(exist_ok=True)
    for snapshot_id in (SnapshotId(chunk_id(data)), SnapshotId(b"\7" * 32)):
        path = store.path(snapshot_id)
        path.write_bytes(data)
        try:
            store.load_info(snapshot_id)
        finally:
            try:
                for _ in store.iter_records(snapshot_id):
                    pass
            finally:
                path.unlink()


def fuzz_pack_header(data: bytes) -> None:
    pack_fmt.check_pack_header(data, "pack", repo_version=FORMAT_VERSION)


def fuzz_record_header(data: bytes) -> None:
    """One record header, and the search for the next valid one (resynchronising a scan)."""
    pack_fmt.decode_record_header(data, "pack")
    pack_fmt.find_record(data, _u32(data, 0) % (len(data) + 1))


def fuzz_pack_file(data: bytes) -> None:
    """A whole pack through the pack store: header check, its records (from its trailer or
    a scan), and every record found read back and decoded against its id."""
    store = PackStore(_SCRATCH / "packs", 0o600, FORMAT_VERSION)
    pack_id = PackId(b"\x5a" * 16)
    path = store.path(pack_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    try:
        try:
            store.check_header(pack_id)
        finally:
            for offset, header in store.records(pack_id):  # the trailer's, or scanned
                loc = ChunkLocation(pack_id, offset, header.stored_size, header.raw_size, header.codec)
                payload = store.read_record(loc, header.chunk_id)
                try:
                    codec.decode(loc.codec, payload, loc.raw_size)
                except Exception as exc:
                    if not isinstance(exc, DamagedChunkError):
                        raise
    finally:
        store.close()
        path.unlink()


def fuzz_index_records(data: bytes) -> None:
    """Index values and keys: a chunk location, a garbage key, counts."""
    for decode, size in (
        (index_fmt.decode_location, index_fmt.LOCATION_SIZE),
        (index_fmt.decode_garbage_key, 24),
        (index_fmt.decode_u64, 8),
        (index_fmt.decode_u32, 4),
    ):
        for piece in (data, data[:size]):
            with contextlib.suppress(CorruptError):
                decode(piece)
    index_fmt.decode_location(data)


def fuzz_codec_decode(data: bytes) -> None:
    """A stored payload: codec byte, raw size (up to the 64 MiB a record header allows)."""
    codec_id = data[0] if data else 0
    raw_size = _u32(data, 1) % (MAX_CHUNK_SIZE + 1)
    codec.decode(codec_id, data[5:], raw_size)


def fuzz_lmdb_file(data: bytes) -> None:
    """The index's data.mdb as snapstore reads it before LMDB does: both meta pages, then
    every page reachable from the meta of the newest transaction the bytes name."""
    index_dir = _SCRATCH / "index"
    index_dir.mkdir(exist_ok=True)
    (index_dir / lmdb_file.DATA_FILE).write_bytes(data)
    lmdb_file.check(index_dir, "")
    txn_ids = [_txn_id(data, i) for i in range(2)]
    # No meta with that id is ConcurrentChange: the caller retries with a new transaction.
    with contextlib.suppress(lmdb_file.ConcurrentChange):
        lmdb_file.check_tree(index_dir, max(txn_ids), "")


def _txn_id(data: bytes, i: int) -> int:
    at = i * 4096 + 16 + 136 + 8
    return struct.unpack_from("<Q", data, at)[0] if len(data) >= at + 8 else 0


TARGETS: dict[str, Callable[[bytes], None]] = {
    "config": fuzz_config,
    "manifest_header": fuzz_manifest_header,
    "manifest_records": fuzz_manifest_records,
    "manifest_trailer": fuzz_manifest_trailer,
    "manifest_footer": fuzz_manifest_footer,
    "manifest_file": fuzz_manifest_file,
    "tree_object": fuzz_tree_object,
    "pack_header": fuzz_pack_header,
    "record_header": fuzz_record_header,
    "pack_file": fuzz_pack_file,
    "index_records": fuzz_index_records,
    "codec_decode": fuzz_codec_decode,
    "lmdb_file": fuzz_lmdb_file,
}


# -- seeds: valid inputs for the mutators to start from ------------------------------------------------


def _manifest() -> bytes:
    records: list[ManifestRecord] = [
        EntryStart("vm.img", mode=0o640, mtime_ns=123),
        ChunkRef(ChunkId(b"\3" * 32), 1000),
        ZeroRun(1 << 20),
        EntryEnd(1000 + (1 << 20), b"\4" * 32),
    ]
    trailer = mf.encode_trailer(
        name="vm.img",
        created=datetime(2024, 5, 6, tzinfo=UTC),
        message="m",
        size=1000 + (1 << 20),
        entries=1,
        chunk_refs=1,
        hostname="h",
        source="/vm.img",
    )
    return mf.encode_header() + b"".join(mf.encode_record(r) for r in records) + trailer


def _tree() -> bytes:
    t = 1_700_000_000_000_000_000
    return tree_fmt.encode_tree(
        [
            TreeEntry(b"f", "file", 0o4755, 1, 2, t, t, 3, 9, b"u", b"g", ((b"user.a", b"\0\1"),), 1000,
                      b"\5" * 32, (ChunkRef(ChunkId(b"\3" * 32), 500), ZeroRun(500))),
            TreeEntry(b"d", "dir", 0o1777, subtree=ChunkId(b"\6" * 32)),
            TreeEntry(b"l\xff", "symlink", 0o777, target=b"../x"),
            TreeEntry(b"c", "chardev", 0o600, rdev=(1, 3)),
            TreeEntry(b"p", "fifo", 0o600),
        ]
    )  # fmt: skip


def _pack() -> bytes:
    parts: list[Buffer] = [pack_fmt.encode_pack_header(FORMAT_VERSION)]
    table = b""
    offset = pack_fmt.PACK_HEADER_SIZE
    for content in (b"hello world " * 100, os.urandom(3000), b""):
        codec_id, payload = codec.encode(content, 3)
        parts.append(pack_fmt.encode_record_header(chunk_id(content), codec_id, len(content), len(payload)))
        parts.append(payload)
        table += pack_fmt.encode_table_entry(chunk_id(content), offset, codec_id, len(content), len(payload))
        offset += pack_fmt.RECORD_HEADER_SIZE + len(payload)
    parts.append(pack_fmt.encode_trailer(table, offset))  # a pack of format 2 ends with its trailer
    return b"".join(parts)


def _lmdb() -> bytes:
    path = Path(tempfile.mkdtemp(prefix="snap-fuzz-lmdb-"))
    try:
        env = lmdb.open(str(path), max_dbs=5, map_size=1 << 24)
        db = env.open_db(b"chunks")
        with env.begin(write=True) as txn:
            for i in range(200):
                txn.put(struct.pack("<32s", bytes([i]) * 32), b"\1" * 37, db=db)
            txn.put(b"big", b"x" * 9000)  # an overflow page
        env.close()
        return (path / lmdb_file.DATA_FILE).read_bytes()
    finally:
        shutil.rmtree(path, ignore_errors=True)


@functools.cache
def seeds(name: str) -> list[bytes]:
    config = config_fmt.encode(Config(1, "ab" * 16, "2024-01-01T00:00:00Z", chunker=ChunkerParams()))
    manifest = _manifest()
    location = index_fmt.encode_location(ChunkLocation(PackId(b"\1" * 16), 16, 100, 200, 1, 3))
    zstd = codec.encode(b"abc" * 1000, 3)[1]
    return {
        "config": [config],
        "manifest_header": [manifest[: mf.HEADER_SIZE]],
        "manifest_records": [manifest[mf.HEADER_SIZE :]],
        "manifest_trailer": [manifest[manifest.rindex(b"T{") + 1 : -mf.FOOTER_SIZE]],
        "manifest_footer": [struct.pack("<I", len(manifest)) + manifest[-mf.FOOTER_SIZE :]],
        "manifest_file": [manifest],
        "tree_object": [_tree()],
        "pack_header": [pack_fmt.encode_pack_header(FORMAT_VERSION)],
        "record_header": [_pack()[pack_fmt.PACK_HEADER_SIZE :]],
        "pack_file": [_pack()],
        "index_records": [location, index_fmt.encode_garbage_key(b"\2" * 16, 99)],
        "codec_decode": [b"\1" + struct.pack("<I", 3000) + zstd, b"\0" + struct.pack("<I", 3) + b"abc"],
        "lmdb_file": [_lmdb()],
    }[name]
