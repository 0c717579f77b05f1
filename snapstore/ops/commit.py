"""commit: one file -> one snapshot, streaming, in a pipeline that keeps every core busy.

The main thread reads (holes are skipped), cuts chunks and writes in order; a thread pool
hashes and compresses (blake3 and zstd release the GIL). Memory is bounded by the window
of chunks in flight, whatever the file size.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from snapstore import codec
from snapstore.chunker import Splitter
from snapstore.errors import InputChangedError, InputError, InputNotFoundError, SnapstoreError
from snapstore.extents import data_extents
from snapstore.format.manifest import encode_trailer
from snapstore.hashing import StreamHasher, chunk_id
from snapstore.model import ChunkId, ChunkRef, EntryEnd, EntryStart, SnapshotInfo, ZeroRun
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Repository
from snapstore.storage.snapshots import ManifestWriter

READ_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class CommitResult:
    snapshot: SnapshotInfo
    chunks: int  # chunk references in the manifest
    new_chunks: int  # chunks stored by this commit
    new_raw_bytes: int  # plaintext bytes of those chunks
    new_stored_bytes: int  # bytes they take in packs (after compression)
    zero_bytes: int  # bytes recorded as zero runs (holes and zero chunks)
    seconds: float


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
) -> CommitResult:
    fd = _open_input(path)
    try:
        before = os.fstat(fd)
        if stat.S_ISDIR(before.st_mode):
            raise InputError(path, "is a directory (only single files can be committed yet)")
        size = before.st_size if stat.S_ISREG(before.st_mode) else os.lseek(fd, 0, os.SEEK_END)
        with ThreadPoolExecutor(threads or default_threads(), thread_name_prefix="commit") as pool:
            writer = repo.manifest_writer()
            try:
                job = _CommitJob(repo, pool, writer, threads or default_threads(), progress)
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
            except BaseException:
                writer.abort()
                _keep_what_is_stored(repo)
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
        )
    finally:
        os.close(fd)


def _keep_what_is_stored(repo: Repository) -> None:
    """After a failed commit, index what was stored so a retry reuses it; drop it if even
    that fails (a full disk)."""
    try:
        repo.flush()
    except SnapstoreError:
        repo.abort_writes()


def _entry_name(name: str) -> str:
    return name.replace("/", "_").lstrip(".") or "file"


def _open_input(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY)
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


class _CommitJob:
    def __init__(
        self,
        repo: Repository,
        pool: ThreadPoolExecutor,
        writer: ManifestWriter,
        threads: int,
        progress: Progress,
    ) -> None:
        self.repo = repo
        self.pool = pool
        self.writer = writer
        self.progress = progress
        self.window = 4 * threads
        self.level = repo.config.codec.level
        # (length, None) is a hole; (length, (chunk, future id)) a chunk being hashed
        self.hashed: deque[tuple[int, tuple[memoryview, Future[ChunkId | None]] | None]] = deque()
        self.encoded: deque[tuple[ChunkId, int, Future[tuple[int, bytes]]]] = deque()
        self.queued: set[ChunkId] = set()
        self.chunk_ids: set[ChunkId] = set()
        self.zero_pending = 0
        self.refs = self.new_chunks = self.new_raw = self.new_stored = self.zero_bytes = 0
        self.started = time.perf_counter()

    def run(self, fd: int, size: int, path: Path) -> bytes:
        hasher = StreamHasher()
        splitter = Splitter(self.repo.config.chunker)
        pos = 0
        for offset, length in (*data_extents(fd, size), (size, 0)):
            if offset > pos:  # a hole: queued in order, never read
                self.hashed.append((offset - pos, None))
                hasher.update_zeros(offset - pos)
                self.progress.advance(offset - pos)
            for block in _read(fd, offset, length, path):
                hasher.update(block)
                for chunk in splitter.feed(block):
                    self._submit(chunk)
                self.progress.advance(len(block))
            for chunk in splitter.finish():
                self._submit(chunk)
            pos = offset + length
        while self.hashed:
            self._drain_hashed()
        self._flush_zeros()
        while self.encoded:
            self._drain_encoded()
        return hasher.digest()

    def _submit(self, chunk: memoryview) -> None:
        self.hashed.append((len(chunk), (chunk, self.pool.submit(_analyse, chunk))))
        while len(self.hashed) > self.window:
            self._drain_hashed()

    def _drain_hashed(self) -> None:
        length, job = self.hashed.popleft()
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
        while len(self.encoded) > self.window:
            self._drain_encoded()

    def _drain_encoded(self) -> None:
        cid, raw_size, future = self.encoded.popleft()
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


def _read(fd: int, offset: int, length: int, path: Path) -> Iterator[bytes]:
    end = offset + length
    while offset < end:
        try:
            block = os.pread(fd, min(READ_BLOCK, end - offset), offset)
        except OSError as exc:
            raise InputError(path, exc.strerror or str(exc)) from exc
        if not block:
            raise InputChangedError(path)
        yield block
        offset += len(block)
