"""checkout: rebuild a snapshot's file in one streaming pass, every chunk verified.

Chunks are fetched, decompressed and hashed by a thread pool and written in order by the
main thread. Zero runs become holes (sparse output) and are never read from the store.
The output is a temp file next to OUT, private to its owner until it is complete and
verified; it then gets the snapshot's permission bits, is made durable and is renamed over
OUT (fsync of the file, rename, fsync of the directory).
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from snapstore.chunker import data_runs
from snapstore.errors import (
    CorruptError,
    IntegrityError,
    UsageError,
    translate_os_error,
)
from snapstore.model import (
    Buffer,
    ChunkId,
    ChunkLocation,
    ChunkRef,
    EntryEnd,
    EntryStart,
    ManifestRecord,
    SnapshotInfo,
    ZeroRun,
)
from snapstore.ops.commit import default_threads
from snapstore.ops.output import OpenTarget, TargetKind, open_special
from snapstore.ops.streams import DigestWorker
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import ChunkPrefetch, Repository
from snapstore.storage import fsio

TEMP_MARK = ".snap-tmp-"
WINDOW_BYTES = 32 * 1024 * 1024  # chunk bytes in flight, whatever the thread count
WRITEBACK_BYTES = 32 * 1024 * 1024  # start writing back to disk this often
SPARSE_MIN = 4096  # zero runs inside a chunk at least this long stay holes
_MAX_PENDING = 4096  # records queued (zero runs cost no memory but are bounded too)
_ZEROS = bytes(1 << 20)


@dataclass(frozen=True)
class CheckoutResult:
    snapshot: SnapshotInfo
    path: str
    size: int
    zero_bytes: int


def checkout(
    repo: Repository,
    snapshot: SnapshotInfo,
    out: str,
    *,
    force: bool = False,
    sparse: bool = True,
    threads: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> CheckoutResult:
    """Rebuild ``snapshot`` (from ``repo.resolve(...)``) at ``out``, every chunk and the whole
    file verified; ``repo`` opened ``Mode.READ`` or more. ``out``: a path (a temp file
    renamed over it when complete; an existing file only with ``force``), a block device
    (written in place, with ``force``), a character device or FIFO (a stream), or ``"-"``
    (stdout). ``sparse``: zero runs become holes. Raises OutputExistsError, UsageError,
    IntegrityError, NoSpaceError... (snapstore.errors)."""
    if snapshot.kind != "file":
        raise UsageError(
            f"snapshot {snapshot.hex[:12]} is a directory tree",
            hint="restore it into a directory (snapstore.restore_tree; snap checkout ID -o OUTDIR)",
        )
    if out == "-":
        stream = sys.stdout.buffer
        try:
            zeros = _run(repo, snapshot, _StreamOutput(stream), threads, progress)
            stream.flush()
        except BrokenPipeError:
            raise  # the reader went away: the CLI ends quietly
        except OSError as exc:  # e.g. stdout is a full disk (> /dev/full)
            raise translate_os_error(exc, "standard output", output=True) from exc
        return CheckoutResult(snapshot, "-", snapshot.size, zeros)
    target = Path(out)
    special = open_special(target, force=force, size=snapshot.size)
    if special is not None:
        return _checkout_special(repo, snapshot, special, threads, progress)
    clean_stale_temps(target)
    tmp = target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:  # owner-only until its mode is set from the snapshot's, just before the rename
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileNotFoundError as exc:
        raise UsageError(f"{target.parent} does not exist") from exc
    except OSError as exc:
        raise translate_os_error(exc, str(tmp), output=True) from exc
    except BaseException:  # a signal (SIGINT, SIGTERM) just after the file was made: not kept
        tmp.unlink(missing_ok=True)
        raise
    try:
        try:
            output = _FileOutput(fd, sparse, snapshot.size)
            zeros = _run(repo, snapshot, output, threads, progress)
            output.finish(snapshot.size)
        finally:
            os.close(fd)
        fsio.rename_durable(tmp, target, output=True)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise translate_os_error(exc, str(target), output=True) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return CheckoutResult(snapshot, str(target), snapshot.size, zeros)


def output_mode(entry: EntryStart | None) -> int:
    """The mode a checkout's output gets: the snapshot's permission bits (never setuid,
    setgid or sticky), or owner-only where the snapshot has none that make sense."""
    if entry is None or not 0 <= entry.mode <= 0o7777:
        return 0o600
    return entry.mode & 0o777


def _checkout_special(
    repo: Repository, snapshot: SnapshotInfo, target: OpenTarget, threads: int | None, progress: Progress
) -> CheckoutResult:
    """Write a block device in place, or a character device or FIFO as a stream."""
    try:
        if target.kind is TargetKind.DEVICE:
            device = _DeviceOutput(target.fd)
            zeros = _run(repo, snapshot, device, threads, progress)
            device.finish(snapshot.size)
        else:
            with os.fdopen(target.fd, "wb", closefd=False) as stream:
                zeros = _run(repo, snapshot, _StreamOutput(stream), threads, progress)
    except OSError as exc:  # e.g. the FIFO's reader went away, the device failed
        raise translate_os_error(exc, str(target.path), output=True) from exc
    finally:
        os.close(target.fd)
    return CheckoutResult(snapshot, str(target.path), snapshot.size, zeros)


def clean_stale_temps(target: Path) -> None:
    """Remove temp files that killed checkouts to ``target`` left behind: only this user's
    own regular files (never followed through a symlink) whose process is gone, so that
    root never deletes another user's file that merely has a temp file's name."""
    prefix = f".{target.name}{TEMP_MARK}"
    euid = os.geteuid()
    with suppress(OSError):
        for entry in os.scandir(target.parent if str(target.parent) else "."):
            if not entry.name.startswith(prefix):
                continue
            pid = entry.name[len(prefix) :].split("-", 1)[0]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            with suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_uid == euid:
                    os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or no process could have it
        return False
    except PermissionError:
        return True
    return True


class _FileOutput:
    """A regular file: workers write each chunk at its offset as soon as it is verified (in
    any order); zero runs stay holes when sparse. Writeback is started behind the point up to
    which everything is written, so the final fsync has little left to wait for."""

    positional = True

    def __init__(self, fd: int, sparse: bool, size: int) -> None:
        self.fd = fd
        self.sparse = sparse
        self.pos = 0  # everything before is written
        self.written_back = 0  # writeback started up to here
        self.mode = output_mode(None)  # until the entry tells
        os.ftruncate(fd, size)  # one hole to start with; a size the filesystem refuses fails now

    def entry(self, record: EntryStart) -> None:
        self.mode = output_mode(record)

    def place(self, data: Buffer, offset: int) -> None:
        """Write one chunk at ``offset``; when sparse, its zero runs are left as holes (the
        file starts as one), so the output is sparse where the source was."""
        if not self.sparse:
            fsio.pwritev_all(self.fd, [data], offset)
            return
        view = memoryview(data)
        for start, end in data_runs(view, SPARSE_MIN):
            fsio.pwritev_all(self.fd, [view[start:end]], offset + start)

    def advance(self, data: Buffer) -> None:
        self.pos += len(data)
        if self.pos - self.written_back >= WRITEBACK_BYTES:
            fsio.start_writeback(self.fd, self.written_back, self.pos - self.written_back)
            self.written_back = self.pos

    def zeros(self, length: int) -> None:
        if not self.sparse:
            for at in range(0, length, len(_ZEROS)):
                fsio.pwritev_all(
                    self.fd, [memoryview(_ZEROS)[: min(len(_ZEROS), length - at)]], self.pos + at
                )
        self.pos += length  # sparse: a hole (the file is extended to its size at the end)

    def finish(self, size: int) -> None:
        """Complete the file and make it durable (the caller renames it into place)."""
        os.ftruncate(self.fd, size)
        os.fchmod(self.fd, self.mode)
        os.fsync(self.fd)


class _DeviceOutput(_FileOutput):
    """A block device, written in place: zeros are written too (the device holds old data),
    nothing is truncated or chmod'ed; made durable at the end."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sparse = False
        self.pos = 0
        self.written_back = 0
        self.mode = 0

    def entry(self, record: EntryStart) -> None:
        pass  # a device keeps its own node's mode

    def finish(self, size: int) -> None:
        os.fsync(self.fd)


class _StreamOutput:
    """A pipe or terminal (stdout): every byte is written in order, zeros too."""

    positional = False
    sparse = False

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def entry(self, record: EntryStart) -> None:
        pass  # a stream has no mode of its own

    def place(self, data: Buffer, offset: int) -> None:
        raise AssertionError("a stream is written in order")

    def advance(self, data: Buffer) -> None:
        self.stream.write(data)

    def zeros(self, length: int) -> None:
        for at in range(0, length, len(_ZEROS)):
            self.stream.write(memoryview(_ZEROS)[: min(len(_ZEROS), length - at)])


def _fetch(
    chunks: ChunkPrefetch,
    chunk_id: ChunkId,
    loc: ChunkLocation | None,
    output: _FileOutput | _StreamOutput,
    offset: int,
) -> Buffer:
    """On a worker: read, decode and verify one chunk; a file output gets it in place."""
    data = chunks.get(chunk_id, loc)
    if output.positional:
        output.place(data, offset)
    return data


def _length(record: ChunkRef | ZeroRun) -> int:
    return record.raw_size if isinstance(record, ChunkRef) else record.length


def _run(
    repo: Repository,
    snapshot: SnapshotInfo,
    output: _FileOutput | _StreamOutput,
    threads: int | None,
    progress: Progress,
) -> int:
    """Write every entry's bytes to ``output``; returns the zero bytes left as holes."""
    progress.start(snapshot.size, f"checkout {snapshot.name}")
    try:
        return _write_records(
            repo,
            repo.iter_records(snapshot.id),
            snapshot.size,
            f"snapshot {snapshot.hex[:12]}",
            output,
            threads,
            progress,
        )
    finally:
        progress.finish()


def fill_file(
    repo: Repository,
    fd: int,
    pieces: Iterable[ChunkRef | ZeroRun],
    size: int,
    digest: bytes,
    what: str,
    *,
    threads: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> int:
    """Write a chunk list (``size`` bytes, BLAKE3 ``digest``) into the new, empty regular file
    ``fd``, every chunk and the whole verified; zero runs stay holes. Returns the bytes left
    as holes. Nothing is made durable and no metadata is set (a tree restore does it)."""
    output = _FileOutput(fd, True, size)
    pieces = list(pieces)
    if len(pieces) == 1 and isinstance(pieces[0], ChunkRef) and pieces[0].raw_size == size:
        # One chunk (most small files): its id is the whole file's digest; no thread pool.
        if pieces[0].chunk_id != digest:
            raise IntegrityError(f"{what} content", digest.hex(), pieces[0].chunk_id.hex())
        output.place(repo.get_chunk(pieces[0].chunk_id), 0)  # checked against its id
        progress.advance(size)
        return 0
    records: list[ManifestRecord] = [EntryStart("file"), *pieces, EntryEnd(size, digest)]
    zeros = _write_records(repo, records, size, what, output, threads, progress)
    os.ftruncate(fd, size)
    return zeros


def _write_records(
    repo: Repository,
    records: Iterable[ManifestRecord],
    size: int,
    what: str,
    output: _FileOutput | _StreamOutput,
    threads: int | None,
    progress: Progress,
) -> int:
    """Write one entry's ``records`` to ``output``; returns the zero bytes left as holes."""
    n = threads or default_threads()
    inflight = 0  # chunk bytes fetched or being fetched, bounded by WINDOW_BYTES
    hasher = DigestWorker()
    pending: deque[tuple[int, Future[Buffer] | None]] = deque()
    zero_bytes = 0
    written = 0
    offset = 0  # of the next record, in the entry
    entries = 0

    def emit(length: int, future: Future[Buffer] | None) -> None:
        """Take the oldest record: its data (verified, in place) into the whole-file digest."""
        nonlocal zero_bytes, written, inflight
        if future is None:
            hasher.update_zeros(length)
            output.zeros(length)
            if output.sparse:
                zero_bytes += length
                progress.skip(length)  # a hole: no time
            else:
                progress.advance(length)
        else:
            inflight -= length
            data = future.result()
            hasher.update(data)
            output.advance(data)
            progress.advance(length)
        written += length

    with repo.prefetch_chunks() as chunks, ThreadPoolExecutor(n, thread_name_prefix="checkout") as pool:
        try:
            for record in records:
                if isinstance(record, ChunkRef | ZeroRun) and offset + _length(record) > size:
                    raise CorruptError(what, f"its records run past its size of {size}")
                if isinstance(record, ChunkRef):
                    loc = chunks.want(record.chunk_id)
                    future = pool.submit(_fetch, chunks, record.chunk_id, loc, output, offset)
                    pending.append((record.raw_size, future))
                    inflight += record.raw_size
                    offset += record.raw_size
                elif isinstance(record, ZeroRun):
                    pending.append((record.length, None))
                    offset += record.length
                elif isinstance(record, EntryStart):
                    entries += 1
                    if entries > 1:
                        raise CorruptError(what, "several entries")
                    output.entry(record)
                elif isinstance(record, EntryEnd):
                    while pending:
                        emit(*pending.popleft())
                    actual = hasher.digest()
                    if actual != record.digest:
                        raise IntegrityError(
                            f"{what} content",
                            record.digest.hex(),
                            actual.hex(),
                        )
                while inflight > WINDOW_BYTES or len(pending) > _MAX_PENDING:
                    emit(*pending.popleft())
        except BaseException:
            for _, queued in pending:
                if queued is not None:
                    queued.cancel()
            hasher.cancel()
            raise
    if written != size:
        raise CorruptError(what, f"{written} bytes, expected {size}")
    return zero_bytes
