"""checkout: rebuild a snapshot's file in one streaming pass, every chunk verified.

Chunks are fetched, decompressed and hashed by a thread pool and written in order by the
main thread. Zero runs become holes (sparse output) and are never read from the store.
The output is a temp file next to OUT, renamed over OUT only when complete and verified.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from snapstore.errors import (
    CorruptError,
    IntegrityError,
    OutputExistsError,
    UsageError,
    translate_os_error,
)
from snapstore.model import ChunkId, ChunkRef, EntryEnd, EntryStart, SnapshotInfo, ZeroRun
from snapstore.ops.commit import default_threads
from snapstore.ops.streams import DigestWorker
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Repository

TEMP_MARK = ".snap-tmp-"
WINDOW_BYTES = 32 * 1024 * 1024  # chunk bytes in flight, whatever the thread count
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
    if out == "-":
        stream = sys.stdout.buffer
        zeros = _run(repo, snapshot, stream, None, threads, progress)
        stream.flush()
        return CheckoutResult(snapshot, "-", snapshot.size, zeros)
    target = Path(out)
    if target.is_dir():
        raise UsageError(f"{target} is a directory", hint="give the output file's path")
    if target.exists() and not force:
        raise OutputExistsError(target)
    clean_stale_temps(target)
    tmp = target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        f = open(tmp, "xb", buffering=0)  # noqa: SIM115
    except FileNotFoundError as exc:
        raise UsageError(f"{target.parent} does not exist") from exc
    except OSError as exc:
        raise translate_os_error(exc, str(tmp)) from exc
    try:
        with f:
            zeros = _run(repo, snapshot, f, f.fileno() if sparse else None, threads, progress)
            f.truncate(snapshot.size)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise translate_os_error(exc, str(target)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return CheckoutResult(snapshot, str(target), snapshot.size, zeros)


def clean_stale_temps(target: Path) -> None:
    """Remove temp files that killed checkouts to ``target`` left behind."""
    prefix = f".{target.name}{TEMP_MARK}"
    with suppress(OSError):
        for entry in os.scandir(target.parent if str(target.parent) else "."):
            if entry.name.startswith(prefix):
                pid = entry.name[len(prefix) :].split("-", 1)[0]
                if pid.isdigit() and not _alive(int(pid)):
                    Path(entry.path).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run(
    repo: Repository,
    snapshot: SnapshotInfo,
    out: BinaryIO,
    sparse_fd: int | None,
    threads: int | None,
    progress: Progress,
) -> int:
    """Write every entry's bytes to ``out``; returns the zero bytes not written (holes)."""
    n = threads or default_threads()
    inflight = 0  # chunk bytes fetched or being fetched, bounded by WINDOW_BYTES
    hasher = DigestWorker()
    pending: deque[tuple[int, Future[bytes] | None]] = deque()
    zero_bytes = 0
    written = 0
    entries = 0

    def emit(length: int, future: Future[bytes] | None) -> None:
        nonlocal zero_bytes, written, inflight
        if future is None:
            hasher.update_zeros(length)
            if sparse_fd is not None:
                os.lseek(sparse_fd, length, os.SEEK_CUR)
                zero_bytes += length
            else:
                _write_zeros(out.write, length)
        else:
            inflight -= length
            data = future.result()
            hasher.update(data)
            _write_all(out.write, data)
        written += length
        progress.advance(length)

    progress.start(snapshot.size, f"checkout {snapshot.name}")
    with ThreadPoolExecutor(n, thread_name_prefix="checkout") as pool:
        try:
            for record in repo.iter_records(snapshot.id):
                if isinstance(record, ChunkRef):
                    pending.append((record.raw_size, pool.submit(_fetch, repo, record.chunk_id)))
                    inflight += record.raw_size
                elif isinstance(record, ZeroRun):
                    pending.append((record.length, None))
                elif isinstance(record, EntryStart):
                    entries += 1
                    if entries > 1:
                        raise CorruptError(f"snapshot {snapshot.hex[:12]}", "several entries")
                elif isinstance(record, EntryEnd):
                    while pending:
                        emit(*pending.popleft())
                    actual = hasher.digest()
                    if actual != record.digest:
                        raise IntegrityError(
                            f"snapshot {snapshot.hex[:12]} content",
                            record.digest.hex(),
                            actual.hex(),
                        )
                while inflight > WINDOW_BYTES or len(pending) > _MAX_PENDING:
                    emit(*pending.popleft())
        except BaseException:
            for _, future in pending:
                if future is not None:
                    future.cancel()
            hasher.cancel()
            raise
        finally:
            progress.finish()
    if written != snapshot.size:
        raise CorruptError(f"snapshot {snapshot.hex[:12]}", f"{written} bytes, expected {snapshot.size}")
    return zero_bytes


def _fetch(repo: Repository, chunk_id: ChunkId) -> bytes:
    return repo.get_chunk(chunk_id)


def _write_all(write: Callable[[bytes], int | None], data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = write(view)  # type: ignore[arg-type]
        if n is None:  # a buffered stream wrote everything
            return
        view = view[n:]


def _write_zeros(write: Callable[[bytes], int | None], length: int) -> None:
    while length > 0:
        n = min(length, len(_ZEROS))
        _write_all(write, _ZEROS[:n])
        length -= n
