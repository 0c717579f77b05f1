"""The repository's tree interface: storing and reading tree objects (docs/FORMAT.md,
"Trees"; mixed into Repository), and reading them for counting a tree snapshot's chunks."""

from __future__ import annotations

from collections.abc import Callable

from snapstore.chunkparams import MAX_CHUNK_SIZE
from snapstore.errors import CorruptError, UsageError
from snapstore.format import tree as tree_fmt
from snapstore.model import Buffer, ChunkId, ChunkLocation, TreeEntry
from snapstore.repo_delta import PayloadDecoder
from snapstore.snapshotbuilder import SnapshotBuilder
from snapstore.storage.index import Index
from snapstore.storage.kinds import Packs


class Trees:
    """Mixed into Repository, which provides the chunk methods used here."""

    def _require_write(self) -> None:
        raise NotImplementedError

    def put_chunk(self, data: bytes) -> tuple[ChunkId, int]:
        raise NotImplementedError

    def get_chunk(self, chunk_id: ChunkId) -> Buffer:
        raise NotImplementedError

    def put_tree(self, builder: SnapshotBuilder, entries: list[TreeEntry]) -> ChunkId:
        """Store one directory's tree object (as a chunk: an unchanged directory is already
        stored and costs nothing) and count it and its files' chunks into ``builder``."""
        self._require_write()
        data = tree_fmt.encode_tree(entries)
        if len(data) > MAX_CHUNK_SIZE:
            raise UsageError(f"a directory of {len(entries)} entries has a tree object over 64 MiB")
        tree_id, _ = self.put_chunk(data)
        builder.count_tree(tree_id, entries)
        return tree_id

    def get_tree(self, tree_id: ChunkId) -> list[TreeEntry]:
        """The entries of a tree object, read and checked against its id."""
        return tree_fmt.decode_tree(bytes(self.get_chunk(tree_id)), f"tree {tree_id.hex()[:12]}")


def tree_loader(index: Index, packs: Packs) -> Callable[[ChunkId], bytes]:
    """What reads a tree object for counting (Snapshots.load_tree): the chunk located through
    ``index``, read from ``packs`` and checked against its id; CorruptError if it is not
    indexed, IntegrityError if its bytes are damaged."""

    def locate(chunk_id: ChunkId) -> ChunkLocation | None:
        with index.read() as r:
            return r.get(chunk_id)

    decode = PayloadDecoder(locate, packs.read_record)  # (a chunk of the same bytes may be a delta)

    def load(chunk_id: ChunkId) -> bytes:
        loc = locate(chunk_id)
        if loc is None:
            raise CorruptError(f"tree {chunk_id.hex()[:12]}", "not in the index")
        return bytes(decode(chunk_id, loc, packs.read_record(loc, chunk_id)))

    return load
