"""commit: one file -> one snapshot, streaming, in a pipeline that keeps every core busy.

A reader thread reads ahead (holes are never read), a digest thread hashes the whole file,
a thread pool hashes and compresses chunks (blake3 and zstd release the GIL), and the main
thread cuts chunks and writes manifest and packs in order. When the file has a previous
snapshot, unchanged chunks are confirmed in place by hashing their old byte range instead
of running the chunker (see ops/hints.py). Memory is bounded by the queues and windows of
chunks in flight, whatever the file size.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from snapstore import codec
from snapstore.chunker import iter_cuts, zero_period
from snapstore.errors import (
    InputChangedError,
    InputError,
    InputNotFoundError,
    NoSpaceError,
    SnapstoreError,
)
from snapstore.format.manifest import encode_trailer
from snapstore.hashing import chunk_id
from snapstore.model import ChunkId, ChunkRef, EntryEnd, EntryStart, SnapshotInfo, ZeroRun
from snapstore.ops.hints import HintCursor, confirmable_chunks
from snapstore.ops.streams import BlockReader, DigestWorker, Hole
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Repository
from snapstore.storage.snapshots import ManifestWriter

_CONFIRM_WINDOW = 32 * 1024 * 1024  # bytes of unchanged chunks hashed in one parallel batch
_WINDOW_BYTES = 24 * 1024 * 1024  # chunk bytes in flight per stage (hashing, compressing)


@dataclass(frozen=True)
class CommitResult:
    snapshot: SnapshotInfo
    chunks: int  # chunk references in the manifest
    new_chunks: int  # chunks stored by this commit
    new_raw_bytes: int  # plaintext bytes of those chunks
    new_stored_bytes: int  # bytes they take in packs (after compression)
    zero_bytes: int  # bytes recorded as zero runs (holes and zero chunks)
    seconds: float
    confirmed_chunks: int = 0  # chunks confirmed in place against the previous snapshot


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def commit_file(
    repo: Repository,
    path: Path,
    *,
    name: str | None = None,
    message: str = "",
    threads: int | None = None,
    progress: Progress = NULL_PROGRESS,
    now: datetime | None = None,
    use_hints: bool = True,
) -> CommitResult:
    """Commit one file. With ``use_hints`` the newest snapshot of the same name is used to
    confirm unchanged chunks in place (same chunk list as a full chunking, less work)."""
    fd = _open_input(path)
    try:
        before = os.fstat(fd)
        if stat.S_ISDIR(before.st_mode):
            raise InputError(path, "is a directory (only single files can be committed yet)")
        if not (stat.S_ISREG(before.st_mode) or stat.S_ISBLK(before.st_mode)):
            # A pipe or a character device has no size to read up to and cannot be read twice.
            raise InputError(path, "not a regular file or block device")
        os.set_blocking(fd, True)
        size = before.st_size if stat.S_ISREG(before.st_mode) else os.lseek(fd, 0, os.SEEK_END)
        with ThreadPoolExecutor(threads or default_threads(), thread_name_prefix="commit") as pool:
            writer = repo.manifest_writer()
            try:
                hints = _hints(repo, name or path.name) if use_hints else None
                job = _CommitJob(repo, pool, writer, progress, hints)
                writer.add(
                    EntryStart(
                        path=_entry_name(name or path.name),
                        mode=stat.S_IMODE(before.st_mode),
                        mtime_ns=before.st_mtime_ns,
                    )
                )
                progress.start(size, f"commit {path.name}")
                digest = job.run(fd, size, path)
                after = os.fstat(fd)
                if _changed(before, after):
                    raise InputChangedError(path)
                writer.add(EntryEnd(size, digest))
                created = now or datetime.now(UTC)
                trailer = encode_trailer(
                    name=name or path.name,
                    created=created,
                    message=message,
                    size=size,
                    entries=1,
                    chunk_refs=job.refs,
                    hostname=socket.gethostname(),
                    source=str(path.absolute()),
                )
                snapshot_id = repo.register_snapshot(writer, trailer, job.chunk_ids)
            except BaseException as exc:
                writer.abort()
                _keep_what_is_stored(repo, exc)
                raise
            finally:
                progress.finish()
        return CommitResult(
            snapshot=repo.snapshots.load_info(snapshot_id),
            chunks=job.refs,
            new_chunks=job.new_chunks,
            new_raw_bytes=job.new_raw,
            new_stored_bytes=job.new_stored,
            zero_bytes=job.zero_bytes,
            seconds=time.perf_counter() - job.started,
            confirmed_chunks=job.confirmed,
        )
    finally:
        os.close(fd)


def _hints(repo: Repository, name: str) -> HintCursor | None:
    same = [s for s in repo.list_snapshots() if s.name == name and s.entries == 1]
    if not same:
        return None
    return HintCursor(confirmable_chunks(repo.iter_records(same[-1].id)))


def _keep_what_is_stored(repo: Repository, exc: BaseException) -> None:
    """After a failed commit, index what was stored so a retry reuses it; drop it if even
    that fails. On a full disk the pack being written is dropped at once: sealing it would
    keep the disk full, and nothing could then be removed to make room."""
    if isinstance(exc, NoSpaceError):
        repo.abort_writes()
        return
    try:
        repo.flush()
    except SnapstoreError:
        repo.abort_writes()


def _entry_name(name: str) -> str:
    return name.replace("/", "_").lstrip(".") or "file"


def _open_input(path: Path) -> int:
    try:
        # Non-blocking: opening a FIFO must not wait for a writer (it is refused next).
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise InputNotFoundError(path) from exc
    except IsADirectoryError as exc:
        raise InputError(path, "is a directory") from exc
    except OSError as exc:
        raise InputError(path, exc.strerror or str(exc)) from exc


def _changed(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) != (
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
        b.st_ino,
    )


@lru_cache(maxsize=64)
def _zero_id(length: int) -> ChunkId:
    return chunk_id(bytes(length))


def _analyse(chunk: memoryview) -> ChunkId | None:
    """The chunk's id, or None for an all-zero chunk (recorded as a zero run)."""
    cid = chunk_id(chunk)
    if chunk[0] == 0 and chunk[-1] == 0 and cid == _zero_id(len(chunk)):
        return None
    return cid


def _encode(chunk: memoryview, level: int) -> tuple[int, bytes]:
    return codec.encode(bytes(chunk), level)


def _resolved(value: ChunkId | None) -> Future[ChunkId | None]:
    future: Future[ChunkId | None] = Future()
    future.set_result(value)
    return future


class _CommitJob:
    """One file through the pipeline. The main thread owns the order: it consumes blocks
    from the reader, confirms unchanged chunks against ``hints`` or cuts new ones, and
    drains two windows of futures (hash, then compress) into the manifest and the packs."""

    def __init__(
        self,
        repo: Repository,
        pool: ThreadPoolExecutor,
        writer: ManifestWriter,
        progress: Progress,
        hints: HintCursor | None,
    ) -> None:
        self.repo = repo
        self.pool = pool
        self.writer = writer
        self.progress = progress
        self.hints = hints
        self.params = repo.config.chunker
        self.period = zero_period(self.params)
        self.buf, self.buf_off = b"", 0  # stream bytes not yet cut, from offset buf_off
        # Windows of chunks in flight are bounded in bytes, whatever the thread count.
        self.window_bytes = max(_WINDOW_BYTES, 2 * self.params.max_size)
        self.hashed_bytes = self.encoded_bytes = 0
        self.level = repo.config.codec.level
        # (length, None) is a hole; (length, (chunk, future id)) a chunk being hashed
        self.hashed: deque[tuple[int, tuple[memoryview, Future[ChunkId | None]] | None]] = deque()
        self.encoded: deque[tuple[ChunkId, int, Future[tuple[int, bytes]]]] = deque()
        self.queued: set[ChunkId] = set()
        self.chunk_ids: set[ChunkId] = set()
        self.zero_pending = 0
        self.refs = self.new_chunks = self.new_raw = self.new_stored = self.zero_bytes = 0
        self.confirmed = 0
        self.started = time.perf_counter()

    def run(self, fd: int, size: int, path: Path) -> bytes:
        """Chunk the file as one byte stream in which holes are zeros, without reading
        them: a hole's first and last stretch are materialised as zeros (so the chunks that
        straddle its edges are cut exactly as on the full stream) and its middle is stepped
        over in zero-run chunks of the chunker's zero period."""
        reader = BlockReader(fd, size, path)
        digest = DigestWorker()
        try:
            for item in reader:
                if isinstance(item, Hole):
                    digest.update_zeros(item.length)
                    self._hole(item.offset, item.length)
                    self.progress.advance(item.length)
                    continue
                digest.update(item.data)
                self._feed(item.data, item.offset)
                self.progress.advance(len(item.data))
            self._feed(b"", self.buf_off + len(self.buf), final=True)
            while self.hashed:
                self._drain_hashed()
            self._flush_zeros()
            while self.encoded:
                self._drain_encoded()
            return digest.digest()
        finally:
            digest.close()
            reader.stop()

    def _feed(self, data: bytes, offset: int, *, final: bool = False) -> None:
        """Append stream bytes at ``offset`` (just after the buffer) and cut what is certain."""
        if self.buf:
            self.buf += data
        else:
            self.buf, self.buf_off = data, offset
        done = self._consume(memoryview(self.buf), self.buf_off, final)
        self.buf, self.buf_off = self.buf[done - self.buf_off :], done

    def _hole(self, offset: int, length: int) -> None:
        fed = offset
        end = offset + length
        max_size = self.params.max_size
        while fed < end:
            n = min(end - fed, max_size)
            self._feed(bytes(n), fed)
            fed += n
            pos = self.buf_off  # where the chunker stands; all zeros from here to ``end``
            if pos >= offset and pos + max_size <= end:
                while pos + max_size <= end:
                    self._queue_zeros(self.period)
                    pos += self.period
                self.buf, self.buf_off = b"", pos
                self._feed(bytes(end - pos), pos)
                return

    def _consume(self, view: memoryview, base: int, final: bool) -> int:
        """Turn ``view`` (the bytes from ``base``) into chunks; return where it stopped (the
        start of the bytes that must wait for more data)."""
        pos, end = base, base + len(view)
        while pos < end:
            if self.hints is not None:
                run = self.hints.run(pos, end, _CONFIRM_WINDOW)
                if run:
                    views = [view[c.offset - base : c.offset - base + c.length] for c in run]
                    for c, v, cid in zip(run, views, self.pool.map(chunk_id, views), strict=True):
                        if cid != c.chunk_id:
                            break
                        self._queue_chunk(v, _resolved(cid))
                        self.confirmed += 1
                        pos += c.length
                    else:
                        continue
            took = False
            for length in iter_cuts(self.params, view[pos - base :], final):
                chunk = view[pos - base : pos - base + length]
                self._queue_chunk(chunk, self.pool.submit(_analyse, chunk))
                pos += length
                took = True
                if self.hints is not None and self.hints.at(pos) is not None:
                    break  # back in step with the previous snapshot
            if not took:
                break
        return pos

    def _queue_chunk(self, chunk: memoryview, future: Future[ChunkId | None]) -> None:
        self.hashed.append((len(chunk), (chunk, future)))
        self.hashed_bytes += len(chunk)
        while self.hashed_bytes > self.window_bytes:
            self._drain_hashed()

    def _queue_zeros(self, length: int) -> None:
        self.hashed.append((length, None))

    def _drain_hashed(self) -> None:
        length, job = self.hashed.popleft()
        if job is not None:
            self.hashed_bytes -= length
        cid = None if job is None else job[1].result()
        if job is None or cid is None:
            self._zeros(length)
            return
        chunk = job[0]
        self._flush_zeros()
        self.writer.add(ChunkRef(cid, length))
        self.refs += 1
        self.chunk_ids.add(cid)
        if cid in self.queued or self.repo.has_chunk(cid):
            return
        self.queued.add(cid)
        self.encoded.append((cid, length, self.pool.submit(_encode, chunk, self.level)))
        self.encoded_bytes += length
        while self.encoded_bytes > self.window_bytes:
            self._drain_encoded()

    def _drain_encoded(self) -> None:
        cid, raw_size, future = self.encoded.popleft()
        self.encoded_bytes -= raw_size
        codec_id, payload = future.result()
        stored = self.repo.put_encoded(cid, codec_id, raw_size, payload)
        self.queued.discard(cid)
        if stored:
            self.new_chunks += 1
            self.new_raw += raw_size
            self.new_stored += stored

    def _zeros(self, length: int) -> None:
        self.zero_pending += length
        self.zero_bytes += length

    def _flush_zeros(self) -> None:
        if self.zero_pending:
            self.writer.add(ZeroRun(self.zero_pending))
            self.zero_pending = 0
