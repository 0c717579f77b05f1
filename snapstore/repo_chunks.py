"""The repository's chunk interface: where chunks are, whether a commit may dedup against
them, reading them verified (a delta with its base), encoding and storing new ones (mixed
into Repository; the remote repository of a later issue implements the same methods)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from snapstore import codec, repo_delta, repo_verify
from snapstore.errors import CorruptError, SnapstoreError
from snapstore.gcplan import record_span
from snapstore.hashing import chunk_id as hash_chunk
from snapstore.model import Buffer, ChunkId, ChunkLocation, Config, PackId
from snapstore.storage.appender import PackAppender
from snapstore.storage.index import Index, IndexTxn
from snapstore.storage.kinds import Packs
from snapstore.storage.prefetch import Prefetch

log = logging.getLogger("snapstore.repo")


class Chunks:
    """Mixed into Repository, which sets these attributes and ``_require_write``."""

    config: Config
    _index: Index
    _packs: Packs
    _appender: PackAppender
    _usable_packs: dict[bytes, bool]
    _bases: repo_delta.BaseCache

    def _require_write(self) -> None:
        raise NotImplementedError

    def get_location(self, chunk_id: ChunkId) -> ChunkLocation | None:
        """Where a chunk is stored (safe to call from several threads)."""
        loc = self._appender.get(chunk_id)
        if loc is not None:
            return loc
        with self._index.read() as r:
            return r.get(chunk_id)

    def has_chunk(self, chunk_id: ChunkId) -> bool:
        """Whether the chunk is stored where it can be read: a chunk indexed in a pack that
        is not a readable regular file (replaced by a directory, say) is not, and a commit
        stores it again (its index entry then moves, keeping its count). Checked once per
        pack, not per chunk."""
        if self._appender.get(chunk_id) is not None:
            return True
        with self._index.read() as r:
            loc = r.get(chunk_id)
            return self._readable(r, loc)

    def _readable(self, r: IndexTxn, loc: ChunkLocation | None) -> bool:
        """Whether a commit may dedup against the chunk at ``loc``: its pack is usable and,
        for a delta, its base is indexed (a gc killed between freeing an unreferenced base
        and its unreferenced deltas leaves such a delta: it is stored again, full)."""
        if loc is None or not self._pack_usable(loc.pack_id):
            return False
        if loc.base is None:
            return True
        base = self._appender.get(loc.base) or r.get(loc.base)
        return base is not None and self._pack_usable(base.pack_id)

    def has_chunks(self, chunk_ids: Iterable[ChunkId]) -> list[bool]:
        """:meth:`has_chunk` for many chunks in one call (one index transaction)."""
        result = []
        with self._index.read() as r:
            for chunk_id in chunk_ids:
                if self._appender.get(chunk_id) is not None:
                    result.append(True)
                    continue
                result.append(self._readable(r, r.get(chunk_id)))
        return result

    @contextmanager
    def prefetch_chunks(self) -> Iterator[ChunkPrefetch]:
        """A reader of chunks in a known order: each chunk named to ``want`` is read ahead
        (its pack bytes asked for before a worker needs them); ``get`` returns it verified."""
        prefetch = Prefetch()
        try:
            yield ChunkPrefetch(self, prefetch)
        finally:
            prefetch.close()

    def _pack_usable(self, pack_id: PackId) -> bool:
        usable = self._usable_packs.get(pack_id)
        if usable is None:
            usable = self._usable_packs[pack_id] = self._packs.usable(pack_id)
            if not usable:
                log.warning("pack %s cannot be read; its chunks are stored again", pack_id.hex())
        return usable

    def get_chunk(self, chunk_id: ChunkId, loc: ChunkLocation | None = None) -> Buffer:
        """A chunk's plaintext, checked against its id (``loc``: where it is, if known)."""
        loc = loc or self.get_location(chunk_id)
        if loc is None:
            raise CorruptError(f"chunk {chunk_id.hex()[:16]}", "not in the index")
        payload = self._packs.read_record(loc, chunk_id)
        if loc.codec != codec.CODEC_DELTA:
            return self.decode_chunk(chunk_id, loc, payload)
        assert loc.base is not None  # (a delta's index entry names its base)
        return repo_delta.decode_delta(chunk_id, loc, payload, self._bases.get(loc.base, self._read_base))

    def _read_base(self, base_id: ChunkId) -> Buffer:
        return repo_delta.read_base(base_id, self.get_location, self.get_chunk)

    decode_chunk = staticmethod(repo_verify.decode_chunk)  # plaintext of a payload, checked

    @property
    def deltas(self) -> bool:
        """Whether a changed chunk may be stored as a delta (format 3, ``snap init --delta``)."""
        return self.config.delta

    def encode_changed(
        self, chunk_id: ChunkId, data: Buffer, level: int, prev: ChunkId
    ) -> tuple[int, Buffer]:
        """``(codec, payload)`` for a new chunk that stands where the previous snapshot had
        ``prev``: a delta against ``prev``'s keyframe when that pays, else stored full. Full
        too when the chunk is counted already (indexed in a pack that cannot be read, or in
        the lost table): the snapshots counting it do not count a base (safe from several
        threads)."""
        base_id = repo_delta.keyframe(prev, self.get_location)
        with self._index.read() as r:
            counted = self._appender.get(chunk_id) or r.get(chunk_id) or r.get_lost(chunk_id)
        if base_id is None or counted or base_id == chunk_id:
            return codec.encode(data, level)
        try:
            base = self._bases.get(base_id, self._read_base)
        except SnapstoreError as exc:
            log.warning("chunk %s stored full: its keyframe cannot be read (%s)", chunk_id.hex()[:16], exc)
            return codec.encode(data, level)
        return repo_delta.encode_changed(data, level, base_id, base)

    def put_encoded(self, chunk_id: ChunkId, codec_id: int, raw_size: int, payload: Buffer) -> int:
        """Store an encoded chunk unless present; return the bytes newly stored (0 if not).
        Safe to call from several threads; the chunk is indexed once its pack is durable."""
        self._require_write()
        if self.has_chunk(chunk_id):
            return 0
        return self._appender.append(chunk_id, codec_id, raw_size, payload)

    def put_chunk(self, data: bytes) -> tuple[ChunkId, int]:
        chunk_id = hash_chunk(data)
        if self.has_chunk(chunk_id):
            return chunk_id, 0
        codec_id, payload = codec.encode(data, self.config.codec.level)
        return chunk_id, self.put_encoded(chunk_id, codec_id, len(data), payload)

    def flush(self) -> None:
        """Pack data durable first, then the index entries that point at it. If a step fails,
        what is not indexed stays for :meth:`abort_writes` to drop."""
        self._appender.flush()

    def abort_writes(self) -> None:
        """Drop what is not durable and indexed yet (nothing points at it)."""
        self._appender.abort()


class ChunkPrefetch:
    """Chunks about to be read, in order (Repository.prefetch_chunks)."""

    def __init__(self, repo: Chunks, prefetch: Prefetch) -> None:
        self._repo = repo
        self._packs = repo._packs
        self._prefetch = prefetch
        # get(chunk_id, loc): the chunk's plaintext, verified (safe from several threads)
        self.get: Callable[[ChunkId, ChunkLocation | None], Buffer] = repo.get_chunk

    def want(self, chunk_id: ChunkId) -> ChunkLocation | None:
        """Where the chunk is (None: not stored); its bytes are read ahead."""
        loc = self._repo.get_location(chunk_id)
        if loc is not None and self._packs.local:  # a hint to the kernel about a pack file
            self._prefetch.want(self._packs.path(loc.pack_id), loc.offset, record_span(loc))
        return loc
