"""Tree objects: one directory's entries as bytes (docs/FORMAT.md, "trees"; pure).

A tree object is stored as a chunk, so it is content-addressed: a directory whose entries did
not change encodes to the same bytes, hence the same chunk id, and costs nothing new in a later
snapshot. An entry is encoded the same way inside a tree object and in a manifest's root record.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from snapstore.chunkparams import MAX_CHUNK_SIZE
from snapstore.errors import CorruptError
from snapstore.model import ENTRY_KINDS, ChunkId, ChunkRef, Piece, TreeEntry, ZeroRun

MAGIC = b"SNAPTREE"
TREE_VERSION = 1
_HEADER = struct.Struct("<8sII")  # magic, version, entry count
# kind, reserved, mode, uid, gid, mtime_ns, ctime_ns, inode, link id
_FIXED = struct.Struct("<BBHIIqqQQ")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_FILE = struct.Struct("<Q32sI")  # size, digest, piece count
_CHUNK = struct.Struct("<32sI")
_DEV = struct.Struct("<II")
KIND_CODES = {kind: code for code, kind in enumerate(ENTRY_KINDS, start=1)}
MAX_NAME = 4096
MAX_XATTR_VALUE = 1 << 24
MAX_SIZE = 1 << 62


def check_name(name: bytes, what: str) -> None:
    """An entry name is one path component: nothing in it can lead out of its directory."""
    if not name or len(name) > MAX_NAME or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise CorruptError(what, f"unsafe entry name {name!r}")


def encode_entry(entry: TreeEntry) -> bytes:
    check_name(entry.name, "tree entry")
    out = bytearray(_U16.pack(len(entry.name)) + entry.name)
    out += _FIXED.pack(
        KIND_CODES[entry.kind],
        0,
        entry.mode,
        entry.uid,
        entry.gid,
        entry.mtime_ns,
        entry.ctime_ns,
        entry.inode,
        entry.link_id,
    )
    for owner in (entry.user, entry.group):
        out += _U16.pack(len(owner)) + owner
    out += _U32.pack(len(entry.xattrs))
    for name, value in sorted(entry.xattrs):
        out += _U16.pack(len(name)) + name + _U32.pack(len(value)) + value
    if entry.kind == "file":
        out += _FILE.pack(entry.size, entry.digest, len(entry.pieces))
        for piece in entry.pieces:
            if isinstance(piece, ChunkRef):
                out += b"C" + _CHUNK.pack(piece.chunk_id, piece.raw_size)
            else:
                out += b"Z" + _U64.pack(piece.length)
    elif entry.kind == "dir":
        assert entry.subtree is not None and len(entry.subtree) == 32
        out += entry.subtree
    elif entry.kind == "symlink":
        out += _U32.pack(len(entry.target)) + entry.target
    elif entry.kind in ("chardev", "blockdev"):
        out += _DEV.pack(*entry.rdev)
    out += _U32.pack(0)  # extension: none in this version
    return bytes(out)


def encode_tree(entries: Iterable[TreeEntry]) -> bytes:
    """A directory's tree object: its entries sorted by name (each name once)."""
    ordered = sorted(entries, key=lambda e: e.name)
    for a, b in itertools.pairwise(ordered):
        if a.name == b.name:
            raise ValueError(f"two entries named {a.name!r}")
    body = b"".join(encode_entry(e) for e in ordered)
    return _HEADER.pack(MAGIC, TREE_VERSION, len(ordered)) + body


def decode_tree(data: bytes | memoryview, what: str) -> list[TreeEntry]:
    view = memoryview(data)
    if len(view) < _HEADER.size:
        raise CorruptError(what, "shorter than a tree header")
    magic, version, count = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise CorruptError(what, "bad tree magic")
    if version != TREE_VERSION:
        raise CorruptError(what, f"tree version {version}")
    reader = _Reader(view, _HEADER.size, what)
    entries = [decode_entry_from(reader) for _ in range(count)]
    if reader.pos != len(view):
        raise CorruptError(what, "bytes after the last entry")
    for a, b in itertools.pairwise(entries):
        if not a.name < b.name:
            raise CorruptError(what, "entries not in ascending order of name")
    return entries


def decode_entry(data: bytes | memoryview, what: str) -> TreeEntry:
    reader = _Reader(memoryview(data), 0, what)
    entry = decode_entry_from(reader)
    if reader.pos != len(data):
        raise CorruptError(what, "bytes after the entry")
    return entry


class _Reader:
    def __init__(self, view: memoryview, pos: int, what: str) -> None:
        self.view, self.pos, self.what = view, pos, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.view):
            raise CorruptError(self.what, "truncated tree entry")
        data = bytes(self.view[self.pos : self.pos + n])
        self.pos += n
        return data

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size))

    def sized(self, fmt: struct.Struct, limit: int) -> bytes:
        (length,) = self.unpack(fmt)
        if length > limit:
            raise CorruptError(self.what, f"implausible length {length}")
        return self.take(length)


def decode_entry_from(r: _Reader) -> TreeEntry:
    name = r.sized(_U16, MAX_NAME)
    check_name(name, r.what)
    code, reserved, mode, uid, gid, mtime_ns, ctime_ns, inode, link_id = r.unpack(_FIXED)
    if not 1 <= code <= len(ENTRY_KINDS) or reserved or mode > 0o7777:
        raise CorruptError(r.what, f"bad entry header (kind {code}, mode {mode:o})")
    kind = ENTRY_KINDS[code - 1]
    user = r.sized(_U16, 0xFFFF)
    group = r.sized(_U16, 0xFFFF)
    (n_xattrs,) = r.unpack(_U32)
    if n_xattrs > 0xFFFF:
        raise CorruptError(r.what, f"implausible xattr count {n_xattrs}")
    xattrs = tuple((r.sized(_U16, 0xFFFF), r.sized(_U32, MAX_XATTR_VALUE)) for _ in range(n_xattrs))
    if any(not name for name, _ in xattrs) or list(xattrs) != sorted(xattrs):
        raise CorruptError(r.what, "xattrs unnamed or out of order")
    entry = TreeEntry(name, kind, mode, uid, gid, mtime_ns, ctime_ns, inode, link_id, user, group, xattrs)
    if kind == "file":
        size, digest, count = r.unpack(_FILE)
        if size > MAX_SIZE or count > MAX_CHUNK_SIZE:
            raise CorruptError(r.what, f"implausible file size {size}")
        pieces = tuple(_piece(r) for _ in range(count))
        if sum(p.raw_size if isinstance(p, ChunkRef) else p.length for p in pieces) != size:
            raise CorruptError(r.what, f"file {name!r}: pieces do not add up to its size {size}")
        entry = replace(entry, size=size, digest=digest, pieces=pieces)
    elif kind == "dir":
        entry = replace(entry, subtree=ChunkId(r.take(32)))
    elif kind == "symlink":
        entry = replace(entry, target=r.sized(_U32, 1 << 16))
    elif kind in ("chardev", "blockdev"):
        major, minor = r.unpack(_DEV)
        entry = replace(entry, rdev=(major, minor))
    r.sized(_U32, 1 << 20)  # extension: skipped (none defined yet)
    return entry


def _piece(r: _Reader) -> Piece:
    tag = r.take(1)
    if tag == b"C":
        chunk_id, raw_size = r.unpack(_CHUNK)
        if not 0 < raw_size <= MAX_CHUNK_SIZE:
            raise CorruptError(r.what, f"implausible chunk size {raw_size}")
        return ChunkRef(ChunkId(chunk_id), raw_size)
    if tag == b"Z":
        (length,) = r.unpack(_U64)
        if not 0 < length <= MAX_SIZE:
            raise CorruptError(r.what, f"implausible zero run {length}")
        return ZeroRun(length)
    raise CorruptError(r.what, f"unknown piece tag {tag!r}")


def tree_chunk_ids(root: TreeEntry, load: Callable[[ChunkId], bytes], what: str) -> Iterator[ChunkId]:
    """Every chunk id a tree names, from its root entry down: each tree object's own id
    (once, however often it occurs) and the chunks of every file in it. ``load`` returns the
    plaintext of a tree object's chunk (CorruptError if it cannot)."""
    seen: set[ChunkId] = set()
    todo = [root]
    while todo:
        entry = todo.pop()
        if entry.kind == "file":
            yield from (p.chunk_id for p in entry.pieces if isinstance(p, ChunkRef))
        elif entry.kind == "dir" and entry.subtree is not None and entry.subtree not in seen:
            seen.add(entry.subtree)
            yield entry.subtree
            todo.extend(decode_tree(load(entry.subtree), f"{what}: tree {entry.subtree.hex()[:12]}"))
