"""A snapshot being built: the records a commit appends, in order, before the repository
publishes it (Repository.begin_snapshot / publish_snapshot).

The repository owns every byte of a manifest: an operation appends entries, chunk refs and
zero runs here as values, and this module (through the manifest writer) turns them into
bytes. It also keeps what the trailer and the reference counts need: the entries and
chunk references appended, the set of chunk ids named, the entries' total size.
"""

from __future__ import annotations

from typing import Protocol

from snapstore.model import ChunkId, ChunkRef, EntryEnd, EntryStart, Piece, TreeEntry, TreeRoot, ZeroRun
from snapstore.storage.kinds import ManifestWriting


class PieceSink(Protocol):
    """Where the commit pipeline appends a file's chunk list, in order: a snapshot's
    manifest (a file snapshot) or one entry of a tree (:class:`EntryPieces`)."""

    def add_chunk(self, chunk_id: ChunkId, raw_size: int) -> None: ...

    def add_zeros(self, length: int) -> None: ...


class EntryPieces:
    """A file's chunk list gathered in memory, for its entry in a tree object."""

    def __init__(self) -> None:
        self.pieces: list[Piece] = []

    def add_chunk(self, chunk_id: ChunkId, raw_size: int) -> None:
        self.pieces.append(ChunkRef(chunk_id, raw_size))

    def add_zeros(self, length: int) -> None:
        self.pieces.append(ZeroRun(length))


class SnapshotBuilder:
    """Appends one snapshot's records to its manifest as they come (streamed: the chunk list
    is not held in memory, only the set of distinct chunk ids)."""

    def __init__(self, writer: ManifestWriting) -> None:
        self.writer = writer
        self.chunk_ids: set[ChunkId] = set()  # every chunk id named (counted once each)
        self.chunk_refs = 0  # chunk references appended
        self.entries = 0
        self.size = 0  # of the entries ended so far
        self.kind = "file"  # "tree" once a tree root is set

    def count_tree(self, tree_id: ChunkId, entries: list[TreeEntry]) -> None:
        """A tree object stored for this snapshot: its id and its files' chunks are named by
        the snapshot (counted), its entries and their sizes go into the trailer."""
        self.chunk_ids.add(tree_id)
        self.chunk_refs += 1
        for entry in entries:
            self.entries += 1
            self.size += entry.size
            for piece in entry.pieces:
                if isinstance(piece, ChunkRef):
                    self.chunk_ids.add(piece.chunk_id)
                    self.chunk_refs += 1

    def set_root(self, entry: TreeEntry) -> None:
        """Make this a tree snapshot whose root is ``entry`` (a directory already counted)."""
        self.writer.add(TreeRoot(entry))
        self.entries += 1
        self.kind = "tree"

    def start_entry(self, path: str, mode: int, mtime_ns: int) -> None:
        self.writer.add(EntryStart(path=path, mode=mode, mtime_ns=mtime_ns))
        self.entries += 1

    def add_chunk(self, chunk_id: ChunkId, raw_size: int) -> None:
        self.writer.add(ChunkRef(chunk_id, raw_size))
        self.chunk_refs += 1
        self.chunk_ids.add(chunk_id)

    def add_zeros(self, length: int) -> None:
        self.writer.add(ZeroRun(length))

    def end_entry(self, size: int, digest: bytes) -> None:
        self.writer.add(EntryEnd(size, digest))
        self.size += size

    def abort(self) -> None:
        """Drop the unfinished manifest (after a failure, before or during publishing)."""
        self.writer.abort()
