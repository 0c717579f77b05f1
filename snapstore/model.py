"""Frozen value types shared by every layer. Names follow the glossary in docs/FORMAT.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NewType

ChunkId = NewType("ChunkId", bytes)  # 32 bytes: BLAKE3-256 of the chunk's plaintext
SnapshotId = NewType("SnapshotId", bytes)  # 32 bytes: BLAKE3-256 of the manifest bytes
PackId = NewType("PackId", bytes)  # 16 random bytes
Buffer = bytes | bytearray | memoryview  # bytes in memory, copied as little as possible


@dataclass(frozen=True)
class ChunkerParams:
    """How a file is split into chunks: ``fastcdc`` (content-defined) or ``fixed``.

    ``zero_run`` (fastcdc only; 0 = off): every run of at least this many zero bytes is a
    zero run of its own, and the data between two such runs is chunked from its first byte
    (docs/FORMAT.md, "Chunker")."""

    algorithm: str = "fastcdc"
    min_size: int = 256 * 1024
    avg_size: int = 1024 * 1024
    max_size: int = 4 * 1024 * 1024
    zero_run: int = 64 * 1024


@dataclass(frozen=True)
class CodecParams:
    name: str = "zstd"
    level: int = 3


@dataclass(frozen=True)
class Config:
    """The repository's config file: fixed at init except for ``quota_bytes``."""

    format_version: int
    repository_id: str
    created: str
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    hash_name: str = "blake3-256"
    codec: CodecParams = field(default_factory=CodecParams)
    pack_target_size: int = 64 * 1024 * 1024
    quota_bytes: int | None = None
    shared: bool = False
    cipher: str = "none"  # format 2: how payloads are encrypted (reserved: only "none" exists)
    delta: bool = False  # format 3: changed chunks may be stored as deltas against a keyframe


@dataclass(frozen=True)
class ChunkLocation:
    """Index record: where a chunk's stored bytes live, and how many snapshots need it."""

    pack_id: PackId
    offset: int  # of the chunk record's header within the pack
    stored_size: int  # payload bytes in the pack (after compression)
    raw_size: int  # plaintext bytes
    codec: int  # CODEC_NONE, CODEC_ZSTD or CODEC_DELTA
    refcount: int = 0  # number of snapshots whose manifest names this chunk
    owners: bytes = bytes(32)  # XOR of the ids of those snapshots: the one id when refcount is 1
    base: ChunkId | None = None  # a delta record's base (a chunk stored full), else None


# Manifest records -------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryStart:
    """Begins one entry (today: a regular file) of a snapshot."""

    path: str
    kind: str = "file"
    mode: int = 0o644
    mtime_ns: int = 0


@dataclass(frozen=True)
class ChunkRef:
    chunk_id: ChunkId
    raw_size: int


@dataclass(frozen=True)
class ZeroRun:
    """``length`` zero bytes, stored as nothing (a hole on checkout)."""

    length: int


@dataclass(frozen=True)
class EntryEnd:
    size: int
    digest: bytes  # BLAKE3-256 of the entry's whole content


# Directory trees (docs/FORMAT.md, "trees") ------------------------------------------------

ENTRY_KINDS = ("file", "dir", "symlink", "chardev", "blockdev", "fifo")
Piece = ChunkRef | ZeroRun


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a directory tree: its name (raw bytes), kind, metadata, and what the kind
    has: a file its size, digest and chunk list, a directory the chunk id of its tree object,
    a symlink its target (raw bytes), a device its numbers."""

    name: bytes
    kind: str  # one of ENTRY_KINDS
    mode: int = 0o644  # permission bits with setuid, setgid and sticky (st_mode & 0o7777)
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0  # the parent rule compares it; never restored
    inode: int = 0  # the parent rule compares it; never restored
    link_id: int = 0  # equal for the entries of one hard-link group; 0: not hard-linked
    user: bytes = b""  # owner's name when committed (display only)
    group: bytes = b""
    xattrs: tuple[tuple[bytes, bytes], ...] = ()  # (name, value), sorted by name
    size: int = 0  # file: bytes of content
    digest: bytes = b""  # file: BLAKE3-256 of the content
    pieces: tuple[Piece, ...] = ()  # file: chunk list
    subtree: ChunkId | None = None  # dir: chunk id of its tree object
    target: bytes = b""  # symlink
    rdev: tuple[int, int] = (0, 0)  # chardev, blockdev: (major, minor)


@dataclass(frozen=True)
class TreeRoot:
    """The manifest record of a tree snapshot: the committed directory's own entry."""

    entry: TreeEntry


ManifestRecord = EntryStart | ChunkRef | ZeroRun | EntryEnd | TreeRoot


@dataclass(frozen=True)
class SnapshotInfo:
    """What a manifest's trailer says about its snapshot."""

    id: SnapshotId
    name: str
    created: datetime
    message: str
    size: int
    entries: int
    chunk_refs: int
    hostname: str = ""
    source: str = ""
    sequence: int | None = None  # one more than the highest of the snapshots before it
    tags: tuple[str, ...] = ()  # sorted, each once (snapstore.selection)
    kind: str = "file"  # "tree": a directory snapshot (docs/FORMAT.md, "trees")
    excludes: tuple[str, ...] = ()  # a tree: the exclude patterns of its commit, in order

    @property
    def hex(self) -> str:
        return self.id.hex()

    @property
    def order(self) -> tuple[bool, int, datetime, str]:
        """Sort key, oldest first: by sequence (a clock running behind cannot make a new
        snapshot older than the others); snapshots written without one come first, by time."""
        return (self.sequence is not None, self.sequence or 0, self.created, self.hex)
