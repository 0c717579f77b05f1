"""checkout --in-place: make an existing file or block device hold a snapshot's bytes,
writing only where they differ.

The target's bytes are hashed along the snapshot's chunk boundaries, in parallel (each worker
reads a chunk's range into a buffer of its own, read ahead as one sequential stream); a range
whose hash is the chunk's id is left alone. For any other the chunk is fetched (verified) and
compared with the range in blocks of 4 KiB (aligned to the file's offsets: a file system's
block), and only the blocks that differ are written: an edit of a few bytes writes a block,
not a chunk of a megabyte, and nothing unchanged is rewritten under a copy-on-write snapshot
of the target. Where the snapshot has a zero run, the target's data extents there
(SEEK_DATA/SEEK_HOLE: a hole is zeros already) are read in steps; the steps holding a
non-zero byte are punched out of a file, adjacent ones at once (written with zeros on a
device, or where the file system cannot punch holes); a step of zeros is left as it is. A
regular file is resized to the snapshot's size first; a block device is never truncated and
is refused when smaller than the snapshot.

Every byte the target ends up with is checked on the way: its own bytes where their hash is
the chunk's id or where they equal the verified chunk's, the chunk's bytes where they did
not, zeros where the snapshot has a zero run (and the sizes add up to the snapshot's). So,
unlike a plain checkout, the snapshot's whole-file digest is not computed again (that would
be a second BLAKE3 pass over every byte, half the work of a run that writes little): the
manifest that lists the chunks is itself checked against the snapshot's id when it is read;
a plain checkout still checks the digest.

Interrupted and run again, it finishes the job: every step compares what the target holds
now with what the snapshot says, and only then writes; nothing depends on what a previous
run did, so a rerun writes only what the interrupted one had not written yet.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapstore.chunker import is_zero
from snapstore.errors import CorruptError, UsageError, translate_os_error
from snapstore.extents import raw_extents
from snapstore.hashing import chunk_id
from snapstore.model import ChunkId, ChunkRef, ManifestRecord, Piece, SnapshotInfo, ZeroRun
from snapstore.ops.checkout import WRITEBACK_BYTES
from snapstore.ops.commit import default_threads
from snapstore.ops.output import check_device_size, open_output
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import ChunkPrefetch, Repository
from snapstore.storage import fsio

BLOCK = 4096  # where a chunk differs, its bytes are compared and written this much at a time
ZERO_STEP = 1024 * 1024  # a zero run's data is checked (and punched) this much at a time
_ZEROS = bytes(ZERO_STEP)
_buffers = threading.local()  # each worker's buffer for the target's bytes, reused


@dataclass(kw_only=True)
class Rewrite:
    """What an in-place rewrite of one file's bytes wrote (dry run: would write)."""

    write_bytes: int = 0  # bytes of chunks written, only their blocks that differ (dry_run: to be)
    zeroed_bytes: int = 0  # bytes of zero runs written as zeros (a device, no hole punching)
    punched_bytes: int = 0  # bytes of zero runs punched out
    unchanged_bytes: int = 0  # bytes that already matched
    chunks_written: int = 0


@dataclass
class InPlaceResult(Rewrite):
    snapshot: SnapshotInfo
    path: str
    size: int
    old_size: int
    dry_run: bool


@dataclass(frozen=True, slots=True)
class _Outcome:
    written: int = 0
    zeroed: int = 0
    punched: int = 0


_UNCHANGED = _Outcome()


def checkout_in_place(
    repo: Repository,
    snapshot: SnapshotInfo,
    out: str,
    *,
    dry_run: bool = False,
    threads: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> InPlaceResult:
    """Make the existing file or block device ``out`` hold ``snapshot``'s bytes, writing only
    the chunks that differ (module docstring). With ``dry_run`` nothing is written: the result
    tells what would be. Raises UsageError (no such file, not a file or device, a device
    smaller than the snapshot), IntegrityError (a damaged chunk), NoSpaceError...
    (snapstore.errors)."""
    if snapshot.kind != "file":
        raise UsageError(
            f"snapshot {snapshot.hex[:12]} is a directory tree",
            hint="--in-place for trees is not written yet: restore into a new directory",
        )
    target = Path(out)
    fd, device, old_size = _open_target(target, snapshot.size, dry_run)
    res = InPlaceResult(snapshot, str(target), snapshot.size, old_size, dry_run)
    try:
        if not device and not dry_run and old_size != snapshot.size:
            os.ftruncate(fd, snapshot.size)
        with contextlib.suppress(OSError):  # only a hint: read ahead further
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        _run(repo, snapshot, fd, device, res, threads or default_threads(), progress)
        if not dry_run:
            os.fsync(fd)
    except OSError as exc:
        raise translate_os_error(exc, str(target), output=True) from exc
    finally:
        os.close(fd)
    return res


def _open_target(target: Path, size: int, dry_run: bool) -> tuple[int, bool, int]:
    """(fd, is a block device, its size now)."""
    try:
        st = os.stat(target)
    except FileNotFoundError as exc:
        raise UsageError(
            f"{target} does not exist", hint="--in-place rewrites an existing file; drop it to create one"
        ) from exc
    except OSError as exc:
        raise translate_os_error(exc, str(target), output=True) from exc
    device = stat.S_ISBLK(st.st_mode)
    if not (device or stat.S_ISREG(st.st_mode)):
        raise UsageError(f"{target} is not a regular file or block device", hint="--in-place needs one")
    fd = open_output(target, os.O_RDONLY if dry_run else os.O_RDWR, device=device)
    try:
        old = os.lseek(fd, 0, os.SEEK_END) if device else os.fstat(fd).st_size
        if device:
            check_device_size(target, old, size)
    except BaseException:
        os.close(fd)
        raise
    return fd, device, old


def _run(
    repo: Repository,
    snapshot: SnapshotInfo,
    fd: int,
    device: bool,
    res: InPlaceResult,
    threads: int,
    progress: Progress,
) -> None:
    progress.start(snapshot.size, f"checkout --in-place {snapshot.name}")
    try:
        with (
            repo.prefetch_chunks() as chunks,
            ThreadPoolExecutor(threads, thread_name_prefix="inplace") as pool,
        ):
            rewrite(
                chunks, pool, threads, fd, repo.iter_records(snapshot.id), snapshot.size, res.old_size,
                device=device, dry_run=res.dry_run, what=f"snapshot {snapshot.hex[:12]}", counts=res,
                progress=progress,
            )  # fmt: skip
    finally:
        progress.finish()


def rewrite(
    chunks: ChunkPrefetch,
    pool: Executor | None,
    threads: int,
    fd: int,
    records: Iterable[ManifestRecord | Piece],
    size: int,
    old_size: int,
    *,
    device: bool,
    dry_run: bool,
    what: str,
    counts: Rewrite,
    progress: Progress = NULL_PROGRESS,
) -> None:
    """Make the open file (or device) ``fd``, ``old_size`` bytes long now and already resized
    to ``size`` (a file), hold the chunks and zero runs of ``records`` (``size`` bytes in
    all), writing only the 4 KiB blocks that differ (module docstring); ``counts`` gets what
    was written. ``pool`` (None: this thread does it all, for a small file) hashes and
    compares the chunks, ``threads`` of them at a time. Nothing is fsynced here."""
    pending: deque[tuple[int, Future[_Outcome]]] = deque()  # (length, job)
    total = 0  # everything before is settled
    written_back = 0  # writeback started up to here
    dirty = 0  # bytes written since

    def settle() -> None:
        nonlocal total, written_back, dirty
        length, future = pending.popleft()
        out = future.result()
        dirty += out.written + out.zeroed
        if dirty >= WRITEBACK_BYTES and not dry_run:  # the final fsync has less to wait for
            fsio.start_writeback(fd, written_back, total + length - written_back)
            written_back, dirty = total + length, 0
        counts.write_bytes += out.written
        counts.chunks_written += out.written > 0
        counts.zeroed_bytes += out.zeroed
        counts.punched_bytes += out.punched
        counts.unchanged_bytes += length - out.written - out.zeroed - out.punched
        total += length
        progress.advance(length)

    submit = pool.submit if pool is not None else _now
    try:
        offset = 0
        for record in records:
            if isinstance(record, ChunkRef):
                length = record.raw_size
                _check_fits(what, size, offset + length)
                job = submit(_fix_chunk, chunks, fd, offset, length, record.chunk_id, old_size, dry_run)
            elif isinstance(record, ZeroRun):
                length = record.length
                _check_fits(what, size, offset + length)
                job = submit(_fix_zeros, fd, offset, length, device, old_size, dry_run)
            else:
                continue
            pending.append((length, job))
            offset += length
            while len(pending) > 4 * threads + 16:  # the reads stay close together
                settle()
        while pending:
            settle()
    except BaseException:
        for _, job in pending:
            job.cancel()
        raise
    if total != size:
        raise CorruptError(what, f"{total} bytes, expected {size}")


def _now(fn: Callable[..., _Outcome], *args: Any) -> Future[_Outcome]:
    """Run ``fn`` in this thread, as a finished future."""
    done: Future[_Outcome] = Future()
    done.set_result(fn(*args))
    return done


def _check_fits(what: str, size: int, end: int) -> None:
    if end > size:
        raise CorruptError(what, f"its records run past its size of {size}")


def _read(fd: int, offset: int, length: int, limit: int) -> memoryview:
    """``length`` bytes of the target at ``offset``, zeros past ``limit`` (its old size), in
    this thread's buffer: valid until its next call."""
    buf: bytearray | None = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < length:
        buf = _buffers.buf = bytearray(length)
    view = memoryview(buf)[:length]
    done = 0
    stop = max(0, min(length, limit - offset))
    while done < stop:
        n = os.preadv(fd, [view[done:stop]], offset + done)
        if n == 0:
            break
        done += n
    if done < length:
        view[done:] = bytes(length - done)
    return view


def _fix_chunk(
    chunks: ChunkPrefetch,
    fd: int,
    offset: int,
    length: int,
    expected: ChunkId,
    old_size: int,
    dry_run: bool,
) -> _Outcome:
    """On a worker: hash the target's range; if it is not the chunk, write the chunk's blocks
    that differ there (dry run: count them)."""
    held = _read(fd, offset, length, old_size)
    if chunk_id(held) == expected:
        return _UNCHANGED
    data = chunks.get(expected, None)  # verified (get_location is safe from workers)
    if len(data) != length:
        raise CorruptError(f"chunk {expected.hex()[:16]}", f"{len(data)} bytes, its manifest says {length}")
    spans = differing_spans(held.tobytes(), bytes(data), offset)
    if not dry_run:
        view = memoryview(data)
        for start, n in spans:
            fsio.pwritev_all(fd, [view[start : start + n]], offset + start)
    return _Outcome(written=sum(n for _, n in spans))


def _fix_zeros(fd: int, offset: int, length: int, device: bool, old_size: int, dry_run: bool) -> _Outcome:
    """On a worker: make ``[offset, offset + length)`` zeros, touching only the steps of the
    target's data there that hold a non-zero byte (holes and zeros are left alone)."""
    zeroed = punched = 0
    end = min(offset + length, old_size)
    punch = not device
    for start, size in list(raw_extents(fd, offset, end)):  # found before any punch
        for at, n in list(_nonzero_spans(fd, start, start + size, end)):
            if dry_run:
                punched += n if punch else 0
                zeroed += 0 if punch else n
                continue
            if punch:
                try:
                    fsio.punch_hole(fd, at, n)
                    punched += n
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        raise
                    punch = False  # this file system cannot: zeros are written instead
            for step in range(at, at + n, ZERO_STEP):
                fsio.pwritev_all(fd, [memoryview(_ZEROS)[: min(ZERO_STEP, at + n - step)]], step)
            zeroed += n
    return _Outcome(zeroed=zeroed, punched=punched)


def _nonzero_spans(fd: int, start: int, stop: int, limit: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of the target's steps in ``[start, stop)`` that hold a non-zero
    byte, adjacent steps merged into one span."""
    span_at = span_end = start
    for at in range(start, stop, ZERO_STEP):
        n = min(ZERO_STEP, stop - at)
        if is_zero(_read(fd, at, n, limit)):
            continue
        if at != span_end:
            if span_end > span_at:
                yield span_at, span_end - span_at
            span_at = at
        span_end = at + n
    if span_end > span_at:
        yield span_at, span_end - span_at


def differing_spans(old: bytes, new: bytes, offset: int, block: int = BLOCK) -> list[tuple[int, int]]:
    """``(start, length)`` within a chunk at file offset ``offset`` of the stretches where
    ``new`` (the chunk) differs from ``old`` (what the target holds, as long), in whole
    ``block``-sized blocks of the file (aligned to its offsets, cut by the chunk's ends):
    a block that is already equal is in none, adjacent differing blocks are merged. Blocks
    are compared 16 at a time first, so equal stretches cost one comparison each."""
    spans: list[tuple[int, int]] = []
    size = len(new)
    coarse = 16 * block
    at = 0
    while at < size:
        end = min(size, (offset + at) // coarse * coarse + coarse - offset)
        if old[at:end] != new[at:end]:
            fine = at
            while fine < end:
                stop = min(end, (offset + fine) // block * block + block - offset)
                if old[fine:stop] != new[fine:stop]:
                    if spans and sum(spans[-1]) == fine:
                        spans[-1] = (spans[-1][0], stop - spans[-1][0])
                    else:
                        spans.append((fine, stop - fine))
                fine = stop
        at = end
    return spans
