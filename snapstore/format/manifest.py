"""Manifest encoding: the bytes of a snapshot (docs/FORMAT.md, "manifests").

A manifest is a header, a stream of tagged records (entries, each with its chunk list), and
a trailer describing the snapshot, closed by a fixed footer so that the trailer can be read
from the end without reading the chunk list. The snapshot id is BLAKE3-256 of all its bytes.
Streaming both ways: neither side holds the chunk list in memory.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from snapstore.chunkparams import MAX_CHUNK_SIZE
from snapstore.errors import CorruptError
from snapstore.format import MANIFEST_VERSION
from snapstore.format.tree import decode_entry, encode_entry
from snapstore.model import (
    ChunkRef,
    EntryEnd,
    EntryStart,
    ManifestRecord,
    SnapshotId,
    SnapshotInfo,
    TreeRoot,
    ZeroRun,
)

MAGIC = b"SNAPMFST"
END_MAGIC = b"SNAPMEND"
_HEADER = struct.Struct("<8sII")  # magic, format version, reserved
HEADER_SIZE = _HEADER.size
_FOOTER = struct.Struct("<I8s")  # trailer JSON length, end magic
FOOTER_SIZE = _FOOTER.size
TAG_ENTRY, TAG_CHUNK, TAG_ZERO, TAG_END, TAG_TRAILER = b"F", b"C", b"Z", b"E", b"T"
TAG_ROOT = b"R"  # a tree snapshot's root entry (docs/FORMAT.md, "trees")
_U32 = struct.Struct("<I")
_CHUNK = struct.Struct("<32sI")
_U64 = struct.Struct("<Q")
_END = struct.Struct("<Q32s")
MAX_JSON = 1 << 20
# What decoding damaged JSON can raise: bad syntax or fields, Infinity as an int, deep nesting.
_BAD_JSON = (ValueError, KeyError, TypeError, OverflowError, RecursionError)
MAX_SIZE = 1 << 62
MAX_SEQUENCE = 1 << 62
MAX_TAGS = 1024


def _json(doc: dict[str, Any]) -> bytes:
    # Lone surrogates (a file name that is not UTF-8, decoded by Python's surrogateescape)
    # cannot be UTF-8 encoded: they are written as JSON escapes (\udcff), which decode back
    # to the same string. Every other character is written as itself.
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace")


def encode_header() -> bytes:
    return _HEADER.pack(MAGIC, MANIFEST_VERSION, 0)


def encode_record(record: ManifestRecord) -> bytes:
    if isinstance(record, ChunkRef):
        return TAG_CHUNK + _CHUNK.pack(record.chunk_id, record.raw_size)
    if isinstance(record, ZeroRun):
        return TAG_ZERO + _U64.pack(record.length)
    if isinstance(record, TreeRoot):
        if record.entry.kind != "dir":
            raise ValueError("a tree snapshot's root is a directory")
        body = encode_entry(record.entry)
        return TAG_ROOT + _U32.pack(len(body)) + body
    if isinstance(record, EntryStart):
        check_path(record.path)
        body = _json(
            {
                "kind": record.kind,
                "mode": record.mode,
                "mtime_ns": record.mtime_ns,
                "path": record.path,
            }
        )
        return TAG_ENTRY + _U32.pack(len(body)) + body
    return TAG_END + _END.pack(record.size, record.digest)


def encode_trailer(
    *,
    name: str,
    created: datetime,
    message: str,
    size: int,
    entries: int,
    chunk_refs: int,
    hostname: str,
    source: str,
    sequence: int | None = None,
    tags: tuple[str, ...] = (),
    kind: str = "file",
    excludes: tuple[str, ...] = (),
) -> bytes:
    doc: dict[str, Any] = {
        "name": name,
        "created": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "message": message,
        "size": size,
        "entries": entries,
        "chunk_refs": chunk_refs,
        "hostname": hostname,
        "source": source,
    }
    if sequence is not None:
        doc["sequence"] = sequence
    if tags:  # absent when there are none: a manifest without tags has the bytes it always had
        doc["tags"] = sorted(set(tags))
    if kind != "file":  # absent for a file snapshot: its manifest keeps the bytes it always had
        doc["kind"] = kind
    if excludes:  # absent when there are none, as tags
        doc["excludes"] = list(excludes)
    body = _json(doc)
    return TAG_TRAILER + body + _FOOTER.pack(len(body), END_MAGIC)


def check_path(path: str) -> None:
    """Entry paths are relative, normalised POSIX paths: nothing can escape a checkout target."""
    p = PurePosixPath(path)
    if (
        not path
        or "\0" in path
        or p.is_absolute()
        or any(part in ("..", ".", "") for part in path.split("/"))
    ):
        raise CorruptError("manifest", f"unsafe entry path {path!r}")


def check_header(data: bytes, what: str) -> None:
    if len(data) < HEADER_SIZE:
        raise CorruptError(what, "shorter than a manifest header")
    magic, version, reserved = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptError(what, "bad manifest magic")
    if version != MANIFEST_VERSION:
        raise CorruptError(what, f"manifest format version {version}")
    if reserved:
        raise CorruptError(what, "reserved bytes of the manifest header are not 0")


def trailer_length(footer: bytes, file_size: int, what: str) -> int:
    """Length of the trailer JSON, from the file's last FOOTER_SIZE bytes."""
    if len(footer) != FOOTER_SIZE or file_size < HEADER_SIZE + 1 + FOOTER_SIZE:
        raise CorruptError(what, "truncated manifest")
    length, magic = _FOOTER.unpack(footer)
    if magic != END_MAGIC:
        raise CorruptError(what, "bad manifest end magic (truncated?)")
    if length > MAX_JSON or length > file_size - HEADER_SIZE - 1 - FOOTER_SIZE:
        raise CorruptError(what, f"implausible trailer length {length}")
    return int(length)


def decode_trailer(snapshot_id: SnapshotId, body: bytes, what: str) -> SnapshotInfo:
    try:
        doc = json.loads(body)
        created = datetime.strptime(doc["created"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        info = SnapshotInfo(
            id=snapshot_id,
            name=str(doc["name"]),
            created=created,
            message=str(doc["message"]),
            size=int(doc["size"]),
            entries=int(doc["entries"]),
            chunk_refs=int(doc["chunk_refs"]),
            hostname=str(doc.get("hostname", "")),
            source=str(doc.get("source", "")),
            sequence=None if doc.get("sequence") is None else int(doc["sequence"]),
            tags=_tags(doc.get("tags", [])),
            kind=str(doc.get("kind", "file")),
            excludes=_excludes(doc.get("excludes", [])),
        )
    except _BAD_JSON as exc:
        raise CorruptError(what, f"bad trailer ({exc})") from exc
    if not 0 <= info.size <= MAX_SIZE:
        raise CorruptError(what, f"implausible size {info.size}")
    if info.kind not in ("file", "tree"):
        raise CorruptError(what, f"unknown snapshot kind {info.kind!r}")
    if info.sequence is not None and not 0 < info.sequence <= MAX_SEQUENCE:
        raise CorruptError(what, f"implausible sequence {info.sequence}")
    return info


def _excludes(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ValueError(f"excludes {value!r} are not a list of non-empty strings")
    return tuple(value)


def _tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"tags {value!r} are not a list of non-empty strings")
    if len(value) > MAX_TAGS:
        raise ValueError(f"{len(value)} tags")
    return tuple(sorted(set(value)))


def iter_records(read: Callable[[int], bytes], what: str) -> Iterator[ManifestRecord]:
    """Decode records after the header up to (not including) the trailer, checking the grammar
    ``(F (C|Z)* E)* | R`` and that each entry's pieces add up to its size."""

    def exact(n: int) -> bytes:
        data = read(n)
        if len(data) != n:
            raise CorruptError(what, "truncated record")
        return data

    in_entry = False
    total = 0
    records = 0
    rooted = False
    while True:
        tag = exact(1)
        if tag == TAG_TRAILER:
            if in_entry:
                raise CorruptError(what, "trailer inside an entry")
            return
        records += 1
        if rooted:
            raise CorruptError(what, "a record after a tree root")
        if tag == TAG_ROOT:
            if records != 1:
                raise CorruptError(what, "a tree root after other records")
            (length,) = _U32.unpack(exact(4))
            if length > MAX_JSON:
                raise CorruptError(what, f"implausible root length {length}")
            root = decode_entry(exact(length), what)
            if root.kind != "dir":
                raise CorruptError(what, f"a tree root of kind {root.kind!r}")
            rooted = True
            yield TreeRoot(root)
        elif tag == TAG_ENTRY:
            if in_entry:
                raise CorruptError(what, "entry inside an entry")
            (length,) = _U32.unpack(exact(4))
            if length > MAX_JSON:
                raise CorruptError(what, f"implausible entry length {length}")
            yield _decode_entry(exact(length), what)
            in_entry, total = True, 0
        elif tag in (TAG_CHUNK, TAG_ZERO, TAG_END) and not in_entry:
            raise CorruptError(what, "record outside an entry")
        elif tag == TAG_CHUNK:
            chunk_id, raw_size = _CHUNK.unpack(exact(_CHUNK.size))
            if not 0 < raw_size <= MAX_CHUNK_SIZE:
                raise CorruptError(what, f"implausible chunk size {raw_size}")
            total += raw_size
            yield ChunkRef(chunk_id, raw_size)
        elif tag == TAG_ZERO:
            (length,) = _U64.unpack(exact(8))
            if not 0 < length <= MAX_SIZE:
                raise CorruptError(what, f"implausible zero run {length}")
            total += length
            yield ZeroRun(length)
        elif tag == TAG_END:
            size, digest = _END.unpack(exact(_END.size))
            if size != total:
                raise CorruptError(what, f"entry size {size} but its pieces add up to {total}")
            in_entry = False
            yield EntryEnd(size, digest)
        else:
            raise CorruptError(what, f"unknown record tag {tag!r}")


def _decode_entry(body: bytes, what: str) -> EntryStart:
    try:
        doc = json.loads(body)
        entry = EntryStart(
            path=str(doc["path"]),
            kind=str(doc["kind"]),
            mode=int(doc["mode"]),
            mtime_ns=int(doc["mtime_ns"]),
        )
    except _BAD_JSON as exc:
        raise CorruptError(what, f"bad entry ({exc})") from exc
    check_path(entry.path)
    if entry.kind != "file":
        raise CorruptError(what, f"unknown entry kind {entry.kind!r}")
    return entry
