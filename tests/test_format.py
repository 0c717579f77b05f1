"""On-disk encodings (snapstore/format): packs, manifests, config. Pure bytes <-> model.

Decoders must reject every damaged input with CorruptError and never raise anything else:
a damaged repository must give a clean error (exit 4), not a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapstore.chunker import MAX_CHUNK_SIZE
from snapstore.codec import CODEC_NONE, CODEC_ZSTD
from snapstore.errors import CorruptError
from snapstore.format import FORMAT_VERSION, pack
from snapstore.format import config as cfg
from snapstore.format import manifest as mf
from snapstore.model import (
    ChunkerParams,
    ChunkId,
    ChunkRef,
    CodecParams,
    Config,
    EntryEnd,
    EntryStart,
    ManifestRecord,
    SnapshotId,
    ZeroRun,
)

CID = ChunkId(bytes(range(32)))

# packs ------------------------------------------------------------------------------------


def test_pack_header_round_trip_and_rejections() -> None:
    header = pack.encode_pack_header(FORMAT_VERSION)
    assert len(header) == pack.PACK_HEADER_SIZE == 16
    assert pack.check_pack_header(header, "p", repo_version=FORMAT_VERSION) == FORMAT_VERSION
    assert pack.check_pack_header(header + b"more", "p", repo_version=FORMAT_VERSION) == FORMAT_VERSION
    # a repository of format 2 holds packs of format 1 too; one of format 1 no pack of format 2
    assert pack.check_pack_header(pack.encode_pack_header(1), "p", repo_version=2) == 1
    with pytest.raises(CorruptError):
        pack.check_pack_header(pack.encode_pack_header(2), "p", repo_version=1)
    for bad in (
        header[:-1],
        b"",
        b"SNAPPACX" + header[8:],
        header[:8] + struct.pack("<I", FORMAT_VERSION + 1) + header[12:],
        header[:8] + struct.pack("<I", 0) + header[12:],
        header[:12] + b"\x00\x00\x01\x00",  # reserved must be 0
    ):
        with pytest.raises(CorruptError):
            pack.check_pack_header(bad, "p", repo_version=FORMAT_VERSION)


@settings(max_examples=100)
@given(
    chunk_id=st.binary(min_size=32, max_size=32),
    codec=st.sampled_from([CODEC_NONE, CODEC_ZSTD]),
    raw=st.integers(0, MAX_CHUNK_SIZE),
    stored_frac=st.floats(0, 1),
)
def test_record_header_round_trip(chunk_id: bytes, codec: int, raw: int, stored_frac: float) -> None:
    stored = raw if codec == CODEC_NONE else int(raw * stored_frac)
    data = pack.encode_record_header(chunk_id, codec, raw, stored)
    assert len(data) == pack.RECORD_HEADER_SIZE == 52
    h = pack.decode_record_header(data, "p")
    assert h == pack.RecordHeader(ChunkId(chunk_id), codec, raw, stored)
    assert h.record_size == 52 + stored
    # A header followed by payload decodes the same (only the first 52 bytes are read).
    assert pack.decode_record_header(memoryview(data + b"x" * 100), "p") == h


@settings(max_examples=200)
@given(pos=st.integers(0, 51), xor=st.integers(1, 255))
def test_record_header_any_damaged_byte_is_rejected(pos: int, xor: int) -> None:
    data = bytearray(pack.encode_record_header(CID, CODEC_ZSTD, 5000, 3000))
    data[pos] ^= xor
    with pytest.raises(CorruptError):
        pack.decode_record_header(bytes(data), "p")


def test_record_header_rejections() -> None:
    good = pack.encode_record_header(CID, CODEC_ZSTD, 5000, 3000)
    # bad magic (with a valid crc of the changed bytes)
    head = b"SNCX" + good[4:48]
    with pytest.raises(CorruptError, match="magic"):
        pack.decode_record_header(head + struct.pack("<I", zlib.crc32(head)), "p")
    with pytest.raises(CorruptError, match="checksum"):
        pack.decode_record_header(good[:48] + b"\0\0\0\0", "p")
    with pytest.raises(CorruptError, match="truncated"):
        pack.decode_record_header(good[:51], "p")
    with pytest.raises(CorruptError):
        pack.decode_record_header(bytes(52), "p")  # a hole-punched range
    # Valid checksums over impossible values.
    for chunk_codec, raw, stored in (
        (CODEC_ZSTD, MAX_CHUNK_SIZE + 1, 10),  # raw too large
        (CODEC_ZSTD, 100, 101),  # stored larger than raw
        (CODEC_NONE, 100, 99),  # raw record with stored != raw
        (9, 100, 100),  # unknown codec
    ):
        with pytest.raises(CorruptError):
            pack.decode_record_header(pack.encode_record_header(CID, chunk_codec, raw, stored), "p")


def test_find_record_resynchronises_after_damage() -> None:
    rec = pack.encode_record_header(CID, CODEC_NONE, 4, 4) + b"data"
    fake = b"SNCK" + bytes(60)  # magic without a valid header
    buf = bytes(100) + fake + b"junk" + rec + bytes(10)
    at = pack.find_record(buf, 0)
    assert at == 100 + len(fake) + 4
    assert pack.decode_record_header(buf[at:], "p").chunk_id == CID
    assert pack.find_record(buf, at + 1) == -1
    assert pack.find_record(bytes(1000), 0) == -1
    assert pack.find_record(rec[:51], 0) == -1  # a torn header at the end


# manifests --------------------------------------------------------------------------------

# Surrogates included: file names that are not UTF-8 reach Python as lone surrogates.
path_parts = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_characters="/\0"),
        st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
    ),
    min_size=1,
    max_size=12,
).filter(lambda p: p not in (".", ".."))
paths = st.lists(path_parts, min_size=1, max_size=3).map("/".join)
pieces = st.lists(
    st.one_of(
        st.builds(ChunkRef, st.binary(min_size=32, max_size=32), st.integers(1, MAX_CHUNK_SIZE)),
        st.builds(ZeroRun, st.integers(1, 1 << 50)),
    ),
    max_size=20,
)


@st.composite
def entries(draw: st.DrawFn) -> list[ManifestRecord]:
    start = EntryStart(draw(paths), "file", draw(st.integers(0, 0o7777)), draw(st.integers(0, 2**63 - 1)))
    body = draw(pieces)
    size = sum(p.raw_size if isinstance(p, ChunkRef) else p.length for p in body)
    return [start, *body, EntryEnd(size, draw(st.binary(min_size=32, max_size=32)))]


def build_manifest(records: list[ManifestRecord], **trailer: object) -> bytes:
    fields: dict[str, object] = {
        "name": "vm.img",
        "created": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        "message": "nightly",
        "size": 0,
        "entries": 1,
        "chunk_refs": 0,
        "hostname": "host",
        "source": "/images/vm.img",
    }
    fields.update(trailer)
    body = b"".join(mf.encode_record(r) for r in records)
    return mf.encode_header() + body + mf.encode_trailer(**fields)  # type: ignore[arg-type]


def parse_manifest(data: bytes) -> tuple[list[ManifestRecord], object]:
    """Read a manifest as SnapshotStore does: header, records, then the trailer from the end."""
    mf.check_header(data[: mf.HEADER_SIZE], "m")
    stream = io.BytesIO(data)
    stream.seek(mf.HEADER_SIZE)
    records = list(mf.iter_records(stream.read, "m"))
    length = mf.trailer_length(data[-mf.FOOTER_SIZE :], len(data), "m")
    info = mf.decode_trailer(
        SnapshotId(b"\1" * 32), data[len(data) - mf.FOOTER_SIZE - length : -mf.FOOTER_SIZE], "m"
    )
    return records, info


@settings(max_examples=100)
@given(st.lists(entries(), max_size=4))
def test_manifest_records_round_trip(groups: list[list[ManifestRecord]]) -> None:
    records = [r for g in groups for r in g]
    data = build_manifest(records)
    got, _ = parse_manifest(data)
    assert got == records


@settings(max_examples=50)
@given(
    name=st.text(max_size=40),
    message=st.text(max_size=200),
    size=st.integers(0, mf.MAX_SIZE),
    created=st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    refs=st.integers(0, 10**9),
)
def test_trailer_round_trip(name: str, message: str, size: int, created: datetime, refs: int) -> None:
    data = build_manifest(
        [], name=name, message=message, size=size, created=created, chunk_refs=refs, entries=0
    )
    _, info = parse_manifest(data)
    assert info.name == name  # type: ignore[attr-defined]
    assert info.message == message  # type: ignore[attr-defined]
    assert info.size == size  # type: ignore[attr-defined]
    assert info.created == created  # type: ignore[attr-defined]
    assert info.chunk_refs == refs  # type: ignore[attr-defined]
    assert info.hostname == "host" and info.source == "/images/vm.img"  # type: ignore[attr-defined]


# Any text, plus the lone surrogates os.fsdecode makes of bytes that are not UTF-8.
ANY_TEXT = st.text(
    alphabet=st.one_of(st.characters(), st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)),
    max_size=30,
)


@settings(max_examples=50)
@given(name=ANY_TEXT, message=ANY_TEXT, source=ANY_TEXT)
def test_trailer_round_trips_any_python_string(name: str, message: str, source: str) -> None:
    data = build_manifest([], name=name, message=message, source=source)
    length = mf.trailer_length(data[-mf.FOOTER_SIZE :], len(data), "m")
    data[-mf.FOOTER_SIZE - length : -mf.FOOTER_SIZE].decode("utf-8")  # the JSON stays valid UTF-8
    _, info = parse_manifest(data)
    assert (info.name, info.message, info.source) == (name, message, source)  # type: ignore[attr-defined]


def test_names_that_are_not_utf8() -> None:
    """A file called b"\xff.img" is "\udcff.img" in Python: it must be storable."""
    name = os.fsdecode(b"disk-\xff\xfe.img")
    records: list[ManifestRecord] = [EntryStart(name), EntryEnd(0, bytes(32))]
    data = build_manifest(records, name=name, source="/vms/" + name)
    got, info = parse_manifest(data)
    assert got == records
    assert info.name == name and info.source == "/vms/" + name  # type: ignore[attr-defined]
    assert b"\\udcff" in data


def test_trailer_keeps_the_instant_of_non_utc_times() -> None:
    tz = datetime(2024, 1, 1, 12, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=5)))
    _, info = parse_manifest(build_manifest([], created=tz))
    assert info.created == tz  # type: ignore[attr-defined]
    assert info.created.tzinfo == UTC  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "path",
    ["../x", "a/../b", "..", ".", "./a", "/abs", "a//b", "a/", "", "a\0b", "a/./b", "/"],
)
def test_unsafe_paths_are_rejected(path: str) -> None:
    with pytest.raises(CorruptError):
        mf.check_path(path)
    with pytest.raises(CorruptError):
        mf.encode_record(EntryStart(path))
    # The decoder refuses them too (a manifest written by something else).
    body = json.dumps({"kind": "file", "mode": 420, "mtime_ns": 0, "path": path}).encode()
    data = mf.TAG_ENTRY + struct.pack("<I", len(body)) + body + mf.TAG_END + struct.pack("<Q", 0) + bytes(32)
    with pytest.raises(CorruptError):
        list(mf.iter_records(io.BytesIO(data + b"T").read, "m"))


@pytest.mark.parametrize("path", ["a", "a/b", "vm.img", "dir/sub/file.qcow2", "..a", "a..", ".hidden", "é ü"])
def test_safe_paths_are_accepted(path: str) -> None:
    mf.check_path(path)
    data = mf.encode_record(EntryStart(path)) + mf.encode_record(EntryEnd(0, bytes(32))) + b"T"
    assert next(iter(mf.iter_records(io.BytesIO(data).read, "m"))) == EntryStart(path)


def sample_manifest() -> bytes:
    records: list[ManifestRecord] = [
        EntryStart("vm.img", mode=0o640, mtime_ns=123),
        ChunkRef(CID, 1000),
        ZeroRun(1 << 33),
        ChunkRef(ChunkId(bytes(32)), 5),
        EntryEnd(1000 + (1 << 33) + 5, bytes(range(32, 64))),
    ]
    return build_manifest(records, size=1000 + (1 << 33) + 5, chunk_refs=2)


def test_every_truncation_is_rejected_with_corrupt_error() -> None:
    data = sample_manifest()
    parse_manifest(data)
    for n in range(len(data)):
        with pytest.raises(CorruptError):
            parse_manifest(data[:n])


@settings(max_examples=300)
@given(pos=st.integers(0, 10_000), value=st.integers(0, 255), cut=st.integers(0, 10_000))
def test_damaged_manifests_raise_only_corrupt_error(pos: int, value: int, cut: int) -> None:
    """Any one byte changed (and possibly truncated): CorruptError or a clean parse."""
    data = bytearray(sample_manifest())
    data[pos % len(data)] = value
    data = data[: len(data) - cut % 8]
    with contextlib.suppress(CorruptError):
        parse_manifest(bytes(data))


def _entry(body: bytes) -> bytes:
    return mf.TAG_ENTRY + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"C" + bytes(36) + b"T", id="chunk-outside-entry"),
        pytest.param(b"Z" + bytes(8) + b"T", id="zero-outside-entry"),
        pytest.param(b"E" + bytes(40) + b"T", id="end-outside-entry"),
        pytest.param(b"X", id="unknown-tag"),
        pytest.param(b"", id="empty"),
        pytest.param(mf.encode_record(EntryStart("a")) + b"T", id="trailer-inside-entry"),
        pytest.param(mf.encode_record(EntryStart("a")) * 2, id="entry-inside-entry"),
        pytest.param(
            mf.encode_record(EntryStart("a"))
            + mf.encode_record(ChunkRef(CID, 10))
            + mf.encode_record(EntryEnd(11, CID)),
            id="size-mismatch",
        ),
        pytest.param(mf.encode_record(EntryStart("a")) + b"C" + CID + struct.pack("<I", 0), id="zero-chunk"),
        pytest.param(
            mf.encode_record(EntryStart("a")) + b"C" + CID + struct.pack("<I", MAX_CHUNK_SIZE + 1),
            id="huge-chunk",
        ),
        pytest.param(mf.encode_record(EntryStart("a")) + b"Z" + struct.pack("<Q", 0), id="empty-zero-run"),
        pytest.param(mf.TAG_ENTRY + struct.pack("<I", mf.MAX_JSON + 1), id="huge-entry"),
        pytest.param(_entry(b"not json"), id="entry-not-json"),
        pytest.param(_entry(b"[]"), id="entry-list"),
        pytest.param(_entry(b"\xff\xfe"), id="entry-not-utf8"),
        pytest.param(_entry(b'{"path": "a"}'), id="entry-missing-fields"),
        pytest.param(_entry(b'{"path":"a","kind":"dir","mode":0,"mtime_ns":0}'), id="entry-kind"),
        pytest.param(_entry(b'{"path":"a","kind":"file","mode":"x","mtime_ns":0}'), id="entry-bad-mode"),
        pytest.param(
            _entry(b'{"path":"a","kind":"file","mode":Infinity,"mtime_ns":0}'), id="entry-infinite-mode"
        ),
        pytest.param(_entry(b"[" * 100_000 + b"]" * 100_000), id="entry-deeply-nested"),
    ],
)
def test_bad_record_streams_are_rejected(data: bytes) -> None:
    with pytest.raises(CorruptError):
        list(mf.iter_records(io.BytesIO(data).read, "m"))


def _trailer(doc: object) -> bytes:
    return json.dumps(doc).encode() if not isinstance(doc, bytes) else doc


GOOD_TRAILER = {
    "name": "a",
    "created": "2024-01-01T00:00:00.000000Z",
    "message": "",
    "size": 1,
    "entries": 1,
    "chunk_refs": 1,
}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"\xff",
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
        _trailer({**GOOD_TRAILER, "created": "yesterday"}),
        _trailer({**GOOD_TRAILER, "created": 5}),
        _trailer({**GOOD_TRAILER, "size": -1}),
        _trailer({**GOOD_TRAILER, "size": mf.MAX_SIZE + 1}),
        _trailer({**GOOD_TRAILER, "size": "big"}),
        pytest.param(
            b'{"name":"a","created":"2024-01-01T00:00:00.000000Z","message":"","size":1e999,'
            b'"entries":1,"chunk_refs":1}',
            id="infinite-size",
        ),
        b'{"name":"a","created":"2024-01-01T00:00:00.000000Z","message":"","size":NaN,'
        b'"entries":1,"chunk_refs":1}',
        _trailer({k: v for k, v in GOOD_TRAILER.items() if k != "name"}),
        _trailer({**GOOD_TRAILER, "sequence": 0}),
        _trailer({**GOOD_TRAILER, "sequence": -3}),
        _trailer({**GOOD_TRAILER, "sequence": "next"}),
        _trailer({**GOOD_TRAILER, "sequence": mf.MAX_SEQUENCE + 1}),
    ],
)
def test_bad_trailers_are_rejected(body: bytes) -> None:
    with pytest.raises(CorruptError):
        mf.decode_trailer(SnapshotId(CID), body, "m")


def test_trailer_accepts_a_good_body() -> None:
    info = mf.decode_trailer(SnapshotId(CID), _trailer(GOOD_TRAILER), "m")
    assert info.id == SnapshotId(CID) and info.size == 1 and info.hostname == "" and info.sequence is None


def test_trailer_sequence_round_trips_and_is_left_out_when_absent() -> None:
    """``sequence`` is an ignorable JSON field (format version unchanged): written only when
    given, so a manifest without it keeps its bytes (and id)."""
    with_seq = build_manifest([], sequence=42)
    assert b'"sequence":42' in with_seq
    assert parse_manifest(with_seq)[1].sequence == 42  # type: ignore[attr-defined]
    without = build_manifest([])
    assert b"sequence" not in without and parse_manifest(without)[1].sequence is None  # type: ignore[attr-defined]
    # An old reader's view: every field it knows is there with the same value.
    old, new = json.loads(without[17:-12]), json.loads(with_seq[17:-12])
    assert {k: v for k, v in new.items() if k != "sequence"} == old


def test_header_and_footer_rejections() -> None:
    data = sample_manifest()
    for bad in (
        b"",
        data[:5],
        b"SNAPMFSX" + data[8:],
        data[:8] + struct.pack("<I", 99) + data[12:],
        data[:12] + struct.pack("<I", 1) + data[16:],  # reserved must be 0
    ):
        with pytest.raises(CorruptError):
            mf.check_header(bad, "m")
    footer = data[-mf.FOOTER_SIZE :]
    with pytest.raises(CorruptError):
        mf.trailer_length(footer[:-1], len(data), "m")
    with pytest.raises(CorruptError):
        mf.trailer_length(footer[:4] + b"SNAPMENX", len(data), "m")
    with pytest.raises(CorruptError):
        mf.trailer_length(struct.pack("<I", len(data)) + mf.END_MAGIC, len(data), "m")
    with pytest.raises(CorruptError):
        mf.trailer_length(footer, mf.HEADER_SIZE + mf.FOOTER_SIZE, "m")


def test_snapshot_id_is_the_hash_of_the_bytes() -> None:
    """Same records and trailer: same bytes (canonical JSON), so the same snapshot id."""
    a, b = sample_manifest(), sample_manifest()
    assert a == b
    assert blake3.blake3(a).digest() == blake3.blake3(b).digest()
    assert build_manifest([], message="x") != build_manifest([], message="y")


# config -----------------------------------------------------------------------------------


CONFIGS = [
    Config(FORMAT_VERSION, "ab" * 16, "2024-01-01T00:00:00Z"),
    Config(
        FORMAT_VERSION,
        "cd" * 16,
        "2024-01-01T00:00:00Z",
        chunker=ChunkerParams("fixed", 4096, 4096, 4096, 0),
        codec=CodecParams("zstd", 19),
        pack_target_size=1 << 20,
        quota_bytes=200 << 30,
        shared=True,
    ),
    Config(
        FORMAT_VERSION,
        "ef" * 16,
        "2024-01-01T00:00:00Z",
        chunker=ChunkerParams("fastcdc", 4096, 16384, 65536),
    ),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_config_round_trip(config: Config) -> None:
    data = cfg.encode(config)
    assert cfg.peek_version(data) == FORMAT_VERSION
    assert cfg.decode(data) == config
    assert cfg.encode(cfg.decode(data)) == data  # canonical


def _edit(change: dict[str, object]) -> bytes:
    """A config edited by hand: without its checksum (else that alone would reject it)."""
    doc = json.loads(cfg.encode(CONFIGS[1]))
    del doc["checksum"]
    for key, value in change.items():
        if value is KeyError:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc).encode()


def test_config_unknown_version() -> None:
    data = _edit({"format_version": 4})
    assert cfg.peek_version(data) == 4
    with pytest.raises(CorruptError):
        cfg.decode(data)
    assert cfg.peek_version(_edit({"format_version": KeyError})) is None


@pytest.mark.parametrize(
    "data",
    [
        _edit({"hash": "sha256"}),
        _edit({"codec": {"name": "lz4", "level": 1}}),
        _edit({"pack_target_size": 1000}),
        _edit({"pack_target_size": 1 << 40}),
        _edit({"pack_target_size": True}),
        _edit({"pack_target_size": "64M"}),
        _edit({"chunker": KeyError}),
        _edit({"chunker": {"algorithm": "fastcdc"}}),
        _edit({"quota_bytes": "lots"}),
        _edit({"repository_id": KeyError}),
        _edit({"chunker": {"algorithm": "fastcdc", "min_size": 0, "avg_size": 10, "max_size": 5}}),
        _edit({"chunker": {"algorithm": "rabin", "min_size": 64, "avg_size": 256, "max_size": 1024}}),
        _edit({"codec": {"name": "zstd", "level": 99}}),
        _edit({"quota_bytes": -1}),
        _edit({"quota_bytes": 1 << 80}),
        b"[1, 2]",
        pytest.param(b"{" + b" " * cfg.MAX_CONFIG_SIZE + b"}", id="too-large"),
    ],
)
def test_config_bad_fields_are_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptError):
        cfg.decode(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"\xff\xfe", b"[]", b"5", pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested")],
)
def test_config_peek_rejects_non_objects(data: bytes) -> None:
    with pytest.raises(CorruptError):
        cfg.peek_version(data)


def test_config_optional_fields_default() -> None:
    doc = json.loads(cfg.encode(CONFIGS[0]))
    del doc["quota_bytes"], doc["shared"], doc["checksum"]  # as written before these fields
    config = cfg.decode(json.dumps(doc).encode())
    assert config == replace(CONFIGS[0], quota_bytes=None, shared=False)


def test_config_checksum() -> None:
    """The checksum covers every other field: a changed value is corrupt, whatever it is; a
    config without a checksum (older, or edited by hand with it removed) is accepted."""
    data = cfg.encode(replace(CONFIGS[1], quota_bytes=5 << 30))
    doc = json.loads(data)
    assert len(doc["checksum"]) == 64
    changed = data.replace(b'"quota_bytes": 5368709120', b'"quota_bytes": 1368709120')
    assert changed != data
    with pytest.raises(CorruptError, match="checksum mismatch"):
        cfg.decode(changed)
    del doc["checksum"]
    doc["quota_bytes"] = 1 << 30
    assert cfg.decode(json.dumps(doc).encode()).quota_bytes == 1 << 30
    doc["checksum"] = 12
    with pytest.raises(CorruptError):
        cfg.decode(json.dumps(doc).encode())
