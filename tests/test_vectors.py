"""Golden vectors of format 2 (docs/FORMAT.md points here): every structure written to disk is
built from fixed inputs and compared byte for byte with the files in tests/data/vectors, and
each file is decoded back to those inputs. A change to any byte on disk fails here first; it
must come with FORMAT.md, new vectors (``SNAP_WRITE_VECTORS=1 pytest tests/test_vectors.py``)
and, when old readers would misread the new bytes, a new format version."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3
import pytest

from snapstore import codec, deltacodec
from snapstore.errors import CorruptError
from snapstore.format import DELTA_VERSION, FORMAT_VERSION
from snapstore.format import config as config_fmt
from snapstore.format import generation as generation_fmt
from snapstore.format import index as index_fmt
from snapstore.format import manifest as mf
from snapstore.format import pack as pack_fmt
from snapstore.format import tree as tree_fmt
from snapstore.model import (
    ChunkerParams,
    ChunkId,
    ChunkLocation,
    ChunkRef,
    CodecParams,
    Config,
    EntryEnd,
    EntryStart,
    ManifestRecord,
    PackId,
    SnapshotId,
    TreeEntry,
    TreeRoot,
    ZeroRun,
)

VECTORS = Path(__file__).parent / "data" / "vectors"
TEXT = b"snapstore keeps the history of large binary files. " * 40  # compresses
RAW = bytes(range(256)) * 3  # stored raw (codec 0)
# A zstd frame of TEXT as zstandard wrote it when the vectors were made: compressors may
# change their output between versions, decoders may not, so the frame itself is the vector.
ZSTD_FRAME_FILE = "text.zst"

CONFIG = Config(
    format_version=FORMAT_VERSION,
    repository_id="00112233445566778899aabbccddeeff",
    created="2026-12-03T00:00:00Z",
    chunker=ChunkerParams("fastcdc", 256 << 10, 1 << 20, 4 << 20, 64 << 10),
    codec=CodecParams("zstd", 3),
    pack_target_size=64 << 20,
    quota_bytes=100 << 30,
)
PACK_ID = PackId(bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0"))


def zstd_frame() -> bytes:
    path = VECTORS / ZSTD_FRAME_FILE
    if os.environ.get("SNAP_WRITE_VECTORS"):
        codec_id, payload = codec.encode(TEXT, 3)
        assert codec_id == codec.CODEC_ZSTD
        path.write_bytes(payload)
    return path.read_bytes()


# Format 3: TEXT with a few bytes changed, stored as a delta against TEXT (as zstandard wrote
# the frame when the vectors were made; decoders may not change what it decodes to).
CHANGED = TEXT[:500] + b"a delta record holds only what changed" + TEXT[538:]
DELTA_FRAME_FILE = "text-delta.zst"
TEXT_ID = blake3.blake3(TEXT).digest()
CONFIG_DELTA = dataclasses.replace(CONFIG, format_version=DELTA_VERSION, delta=True)


def delta_frame() -> bytes:
    path = VECTORS / DELTA_FRAME_FILE
    if os.environ.get("SNAP_WRITE_VECTORS"):
        payload = deltacodec.encode(CHANGED, TEXT_ID, TEXT)
        path.write_bytes(payload[deltacodec.BASE_ID_SIZE :])
    return path.read_bytes()


def delta_pack_bytes() -> bytes:
    """A pack of format 3: header, a zstd record (the base), a delta record against it, trailer."""
    out = bytearray(pack_fmt.encode_pack_header(DELTA_VERSION))
    table = bytearray()
    for plain, codec_id, payload in (
        (TEXT, codec.CODEC_ZSTD, zstd_frame()),
        (CHANGED, codec.CODEC_DELTA, TEXT_ID + delta_frame()),
    ):
        cid = blake3.blake3(plain).digest()
        table += pack_fmt.encode_table_entry(cid, len(out), codec_id, len(plain), len(payload))
        out += pack_fmt.encode_record_header(cid, codec_id, len(plain), len(payload)) + payload
    return bytes(out + pack_fmt.encode_trailer(bytes(table), len(out)))


def pack_bytes() -> bytes:
    """A pack of format 2: header, a zstd record, a raw record, trailer."""
    out = bytearray(pack_fmt.encode_pack_header(FORMAT_VERSION))
    table = bytearray()
    for plain, codec_id, payload in ((TEXT, codec.CODEC_ZSTD, zstd_frame()), (RAW, codec.CODEC_NONE, RAW)):
        cid = blake3.blake3(plain).digest()
        table += pack_fmt.encode_table_entry(cid, len(out), codec_id, len(plain), len(payload))
        out += pack_fmt.encode_record_header(cid, codec_id, len(plain), len(payload)) + payload
    return bytes(out + pack_fmt.encode_trailer(bytes(table), len(out)))


MANIFEST_RECORDS: list[ManifestRecord] = [
    EntryStart("vm.img", "file", 0o600, 1_764_720_000_000_000_000),
    ChunkRef(ChunkId(blake3.blake3(TEXT).digest()), len(TEXT)),
    ZeroRun(1 << 20),
    ChunkRef(ChunkId(blake3.blake3(RAW).digest()), len(RAW)),
    EntryEnd(len(TEXT) + (1 << 20) + len(RAW), blake3.blake3(TEXT + bytes(1 << 20) + RAW).digest()),
]


def manifest_bytes(**labels: Any) -> bytes:
    """The manifest vector; with ``labels`` (tags, hostname), the one of a tagged snapshot."""
    return (
        mf.encode_header()
        + b"".join(mf.encode_record(r) for r in MANIFEST_RECORDS)
        + mf.encode_trailer(
            name="vm.img",
            created=datetime(2026, 12, 3, 1, 2, 3, 456789, tzinfo=UTC),
            message="day 1",
            size=len(TEXT) + (1 << 20) + len(RAW),
            entries=1,
            chunk_refs=2,
            source="/var/lib/vm/vm.img",
            sequence=1,
            **({"hostname": "host"} | labels),
        )
    )


TAGGED = {"tags": ("nightly", "vm-prod"), "hostname": "backup-01.example.org"}


GENERATION = generation_fmt.Generation(bytes(range(16)), writing=True)
LOCATION = ChunkLocation(PACK_ID, 16, 1234, 5678, codec.CODEC_ZSTD, 3)
DELTA_LOCATION = ChunkLocation(
    PACK_ID, 16, 1234, 5678, codec.CODEC_DELTA, 3, bytes(range(32)), ChunkId(TEXT_ID)
)

# A tree object with one entry of every kind (docs/FORMAT.md, "trees"), and the manifest of a
# tree snapshot whose root names it.
_T = 1_764_720_000_123_456_789
SUBTREE = ChunkId(blake3.blake3(b"an empty tree").digest())
TREE_ENTRIES = [
    TreeEntry(
        b"a.img",
        "file",
        0o4755,
        1000,
        100,
        _T,
        _T + 1,
        42,
        0x1234,
        b"alice",
        b"staff",
        ((b"trusted.x", b"\x00\xff"), (b"user.note", b"hi")),
        len(TEXT) + (1 << 20),
        blake3.blake3(TEXT + bytes(1 << 20)).digest(),
        (ChunkRef(ChunkId(blake3.blake3(TEXT).digest()), len(TEXT)), ZeroRun(1 << 20)),
    ),
    TreeEntry(b"dir", "dir", 0o1777, 0, 0, _T, _T, 43, subtree=SUBTREE),
    TreeEntry(b"link", "symlink", 0o777, 0, 0, _T, _T, 44, target=b"../nowhere\xff"),
    TreeEntry(b"null", "chardev", 0o666, 0, 0, _T, _T, 45, rdev=(1, 3)),
    TreeEntry(b"sda", "blockdev", 0o660, 0, 6, _T, _T, 46, rdev=(8, 0)),
    TreeEntry(b"\xffname\n", "fifo", 0o600, 0, 0, _T, _T, 47, 0x1234),
]
TREE_ROOT = TreeEntry(
    b"srv",
    "dir",
    0o755,
    0,
    0,
    _T,
    _T,
    2,
    user=b"root",
    group=b"root",
    subtree=ChunkId(blake3.blake3(tree_fmt.encode_tree(TREE_ENTRIES)).digest()),
)


def tree_manifest_bytes(**fields: Any) -> bytes:
    """The tree manifest vector; with ``fields`` (excludes), one with those trailer fields."""
    return (
        mf.encode_header()
        + mf.encode_record(TreeRoot(TREE_ROOT))
        + mf.encode_trailer(
            name="srv",
            created=datetime(2026, 12, 3, 1, 2, 3, 456789, tzinfo=UTC),
            message="",
            size=TREE_ENTRIES[0].size,
            entries=7,
            chunk_refs=2,
            hostname="host",
            source="/srv",
            sequence=2,
            kind="tree",
            **fields,
        )
    )


EXCLUDES = ("*.tmp", "/cache/", "!keep.tmp", "**/node_modules")


BUILDERS: dict[str, Callable[[], bytes]] = {
    "config.json": lambda: config_fmt.encode(CONFIG),
    "pack-header.bin": lambda: pack_fmt.encode_pack_header(FORMAT_VERSION),
    "record-header.bin": lambda: pack_fmt.encode_record_header(
        blake3.blake3(RAW).digest(), 0, len(RAW), len(RAW)
    ),
    "pack.bin": pack_bytes,
    "manifest.bin": manifest_bytes,
    "manifest-tags.bin": lambda: manifest_bytes(**TAGGED),
    "tree.bin": lambda: tree_fmt.encode_tree(reversed(TREE_ENTRIES)),
    "manifest-tree.bin": tree_manifest_bytes,
    "manifest-tree-excludes.bin": lambda: tree_manifest_bytes(excludes=EXCLUDES),
    "index-location.bin": lambda: index_fmt.encode_location(LOCATION),
    "index-garbage-key.bin": lambda: index_fmt.encode_garbage_key(PACK_ID, 4096),
    "generation.bin": lambda: generation_fmt.encode(GENERATION),
    "config-delta.json": lambda: config_fmt.encode(CONFIG_DELTA),
    "pack-delta.bin": delta_pack_bytes,
    "index-location-delta.bin": lambda: index_fmt.encode_location(DELTA_LOCATION),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_golden_vector(name: str) -> None:
    built = BUILDERS[name]()
    path = VECTORS / name
    if os.environ.get("SNAP_WRITE_VECTORS"):
        path.write_bytes(built)
    assert built == path.read_bytes(), f"{name}: the bytes on disk changed (see this module's docstring)"


def test_vectors_decode_to_their_inputs() -> None:
    assert config_fmt.decode((VECTORS / "config.json").read_bytes()) == CONFIG
    assert index_fmt.decode_location((VECTORS / "index-location.bin").read_bytes()) == LOCATION
    assert index_fmt.decode_garbage_key((VECTORS / "index-garbage-key.bin").read_bytes()) == (PACK_ID, 4096)
    assert generation_fmt.decode((VECTORS / "generation.bin").read_bytes(), "generation") == GENERATION
    data = (VECTORS / "pack.bin").read_bytes()
    assert pack_fmt.check_pack_header(data, "pack", repo_version=FORMAT_VERSION) == 2
    footer = pack_fmt.decode_footer(data[-pack_fmt.FOOTER_SIZE :], len(data))
    assert footer is not None
    count, table_offset, digest = footer
    table = data[table_offset : table_offset + count * pack_fmt.TABLE_ENTRY_SIZE]
    plains = []
    for entry in pack_fmt.decode_table(table, digest, table_offset, "pack"):
        header = pack_fmt.decode_record_header(data[entry.offset :], "pack")
        start = entry.offset + pack_fmt.RECORD_HEADER_SIZE
        plain = codec.decode(header.codec, data[start : start + header.stored_size], header.raw_size)
        assert blake3.blake3(plain).digest() == header.chunk_id == entry.chunk_id
        plains.append(bytes(plain))
    assert plains == [TEXT, RAW]
    manifest = (VECTORS / "manifest.bin").read_bytes()
    mf.check_header(manifest, "manifest")
    body = manifest[mf.HEADER_SIZE :]
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        pos += n
        return body[pos - n : pos]

    assert list(mf.iter_records(read, "manifest")) == MANIFEST_RECORDS
    length = mf.trailer_length(manifest[-mf.FOOTER_SIZE :], len(manifest), "manifest")
    info = mf.decode_trailer(
        SnapshotId(blake3.blake3(manifest).digest()),
        manifest[-mf.FOOTER_SIZE - length : -mf.FOOTER_SIZE],
        "m",
    )
    assert (info.name, info.sequence, info.chunk_refs) == ("vm.img", 1, 2)


def test_delta_vectors_decode_to_their_inputs() -> None:
    assert config_fmt.decode((VECTORS / "config-delta.json").read_bytes()) == CONFIG_DELTA
    location = index_fmt.decode_location((VECTORS / "index-location-delta.bin").read_bytes())
    assert location == DELTA_LOCATION and location.base == TEXT_ID
    data = (VECTORS / "pack-delta.bin").read_bytes()
    assert pack_fmt.check_pack_header(data, "pack", repo_version=DELTA_VERSION) == 3
    with pytest.raises(CorruptError):  # a repository of format 2 holds no pack of version 3
        pack_fmt.check_pack_header(data, "pack", repo_version=FORMAT_VERSION)
    footer = pack_fmt.decode_footer(data[-pack_fmt.FOOTER_SIZE :], len(data))
    assert footer is not None
    count, table_offset, digest = footer
    table = data[table_offset : table_offset + count * pack_fmt.TABLE_ENTRY_SIZE]
    base, delta = pack_fmt.decode_table(table, digest, table_offset, "pack")
    assert (base.codec, delta.codec) == (codec.CODEC_ZSTD, codec.CODEC_DELTA)
    start = base.offset + pack_fmt.RECORD_HEADER_SIZE
    plain = codec.decode(base.codec, data[start : start + base.stored_size], base.raw_size)
    assert plain == TEXT
    header = pack_fmt.decode_record_header(data[delta.offset :], "pack")
    start = delta.offset + pack_fmt.RECORD_HEADER_SIZE
    payload = data[start : start + header.stored_size]
    assert pack_fmt.delta_base(header.codec, payload) == TEXT_ID == base.chunk_id
    assert deltacodec.decode(payload, plain, header.raw_size) == CHANGED
    assert blake3.blake3(CHANGED).digest() == header.chunk_id


def _trailer_of(manifest: bytes) -> bytes:
    length = mf.trailer_length(manifest[-mf.FOOTER_SIZE :], len(manifest), "manifest")
    return manifest[-mf.FOOTER_SIZE - length : -mf.FOOTER_SIZE]


def test_tagged_manifest_decodes_and_differs_only_in_its_trailer() -> None:
    tagged = (VECTORS / "manifest-tags.bin").read_bytes()
    plain = (VECTORS / "manifest.bin").read_bytes()
    records_end = len(plain) - len(_trailer_of(plain)) - mf.FOOTER_SIZE
    assert tagged[:records_end] == plain[:records_end]  # the same header and records
    info = mf.decode_trailer(SnapshotId(blake3.blake3(tagged).digest()), _trailer_of(tagged), "m")
    assert info.tags == ("nightly", "vm-prod") and info.hostname == "backup-01.example.org"
    untagged = mf.decode_trailer(SnapshotId(blake3.blake3(plain).digest()), _trailer_of(plain), "m")
    assert untagged.tags == () and b"tags" not in plain  # no tags: no field, the old bytes


def test_excludes_are_one_trailer_field_old_readers_ignore() -> None:
    with_excludes = (VECTORS / "manifest-tree-excludes.bin").read_bytes()
    plain = (VECTORS / "manifest-tree.bin").read_bytes()
    records_end = len(plain) - len(_trailer_of(plain)) - mf.FOOTER_SIZE
    assert with_excludes[:records_end] == plain[:records_end]
    info = mf.decode_trailer(SnapshotId(b"\0" * 32), _trailer_of(with_excludes), "m")
    assert info.excludes == EXCLUDES and b"excludes" not in plain
    assert _snap_0_1_0_decode_trailer(_trailer_of(with_excludes)) == _snap_0_1_0_decode_trailer(
        _trailer_of(plain)
    )


def _snap_0_1_0_decode_trailer(body: bytes) -> dict[str, object]:
    """What snap 0.1.0 (ae414e2, format/manifest.py decode_trailer) reads of a trailer,
    verbatim but for returning a dict: the fields it needs, unknown fields ignored."""
    doc = json.loads(body)
    created = datetime.strptime(doc["created"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return dict(
        name=str(doc["name"]),
        created=created,
        message=str(doc["message"]),
        size=int(doc["size"]),
        entries=int(doc["entries"]),
        chunk_refs=int(doc["chunk_refs"]),
        hostname=str(doc.get("hostname", "")),
        source=str(doc.get("source", "")),
        sequence=None if doc.get("sequence") is None else int(doc["sequence"]),
    )


def test_snap_0_1_0_reads_a_tagged_manifest() -> None:
    """Tags are a compatible addition (docs/FORMAT.md): an old reader reads the tagged
    manifest as the untagged one, but for the host name it records."""
    tagged = _snap_0_1_0_decode_trailer(_trailer_of((VECTORS / "manifest-tags.bin").read_bytes()))
    plain = _snap_0_1_0_decode_trailer(_trailer_of((VECTORS / "manifest.bin").read_bytes()))
    assert tagged == plain | {"hostname": "backup-01.example.org"}
    new = mf.decode_trailer(
        SnapshotId(b"\0" * 32), _trailer_of((VECTORS / "manifest-tags.bin").read_bytes()), "m"
    )
    assert new.tags and tagged["size"] == new.size


@pytest.mark.parametrize(
    "tags",
    [b'"nightly"', b'[""]', b"[1]", b'{"a": 1}', json.dumps([f"t{i}" for i in range(1025)]).encode()],
)
def test_bad_tags_in_a_trailer_are_damage(tags: bytes) -> None:
    body = _trailer_of((VECTORS / "manifest-tags.bin").read_bytes())
    start = body.index(b'"tags":') + len(b'"tags":')
    end = body.index(b"]", start) + 1
    with pytest.raises(CorruptError, match="bad trailer"):
        mf.decode_trailer(SnapshotId(b"\0" * 32), body[:start] + tags + body[end:], "m")


def test_tree_vectors_decode_to_their_inputs() -> None:
    tree = (VECTORS / "tree.bin").read_bytes()
    assert tree_fmt.decode_tree(tree, "tree") == TREE_ENTRIES  # sorted by name, bytewise
    manifest = (VECTORS / "manifest-tree.bin").read_bytes()
    body = manifest[mf.HEADER_SIZE :]
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        pos += n
        return body[pos - n : pos]

    assert list(mf.iter_records(read, "manifest")) == [TreeRoot(TREE_ROOT)]
    info = mf.decode_trailer(SnapshotId(blake3.blake3(manifest).digest()), _trailer_of(manifest), "m")
    assert info.kind == "tree" and info.entries == 7
    plain = mf.decode_trailer(
        SnapshotId(b"\0" * 32), _trailer_of((VECTORS / "manifest.bin").read_bytes()), "m"
    )
    assert plain.kind == "file"  # no "kind" field: a file snapshot, as every manifest before trees
    # Counting a tree snapshot names its tree objects and their files' chunks, each tree once.
    objects = {TREE_ROOT.subtree: tree, SUBTREE: tree_fmt.encode_tree([])}
    ids = set(tree_fmt.tree_chunk_ids(TREE_ROOT, lambda cid: objects[cid], "m"))
    assert ids == {TREE_ROOT.subtree, SUBTREE, blake3.blake3(TEXT).digest()}


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        (b"\x05\x00a.img", b"\x05\x00a/img", "unsafe entry name"),
        (b"\x03\x00dir", b"\x03\x00../", "unsafe entry name"),
        (b"SNAPTREE\x01", b"SNAPTREE\x02", "tree version"),
        (b"\x04\x00link\x03", b"\x04\x00link\x09", "bad entry header"),
    ],
)
def test_damaged_tree_objects_are_refused(old: bytes, new: bytes, match: str) -> None:
    tree = (VECTORS / "tree.bin").read_bytes()
    assert old in tree
    with pytest.raises(CorruptError, match=match):
        tree_fmt.decode_tree(tree.replace(old, new, 1), "tree")


def test_a_tree_root_must_come_alone() -> None:
    root = mf.encode_record(TreeRoot(TREE_ROOT))
    entry = mf.encode_record(MANIFEST_RECORDS[0])
    for body in (root + root, entry + root, root + mf.encode_record(ZeroRun(1))):
        with pytest.raises(CorruptError):
            list(mf.iter_records(io.BytesIO(body + b"T").read, "m"))
