"""commit: one file -> one snapshot (the pipeline that cuts and stores it is ops/pipeline.py).

This module checks the input, writes the manifest around the pipeline's chunk records, and
registers the snapshot in the order docs/FORMAT.md requires. When the file has a previous
snapshot of the same name, its chunk list is handed to the pipeline as hints.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from snapstore.errors import (
    InputChangedError,
    InputError,
    InputNotFoundError,
    NoSpaceError,
    SnapstoreError,
)
from snapstore.format.manifest import encode_trailer
from snapstore.model import EntryEnd, EntryStart, SnapshotInfo
from snapstore.ops.hints import HintCursor, confirmable_chunks
from snapstore.ops.pipeline import CommitPipeline
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Repository


@dataclass(frozen=True)
class CommitResult:
    snapshot: SnapshotInfo
    chunks: int  # chunk references in the manifest
    new_chunks: int  # chunks stored by this commit
    new_raw_bytes: int  # plaintext bytes of those chunks
    new_stored_bytes: int  # bytes they take in packs (after compression)
    zero_bytes: int  # bytes recorded as zero runs (holes and zero chunks)
    seconds: float
    confirmed_chunks: int = 0  # chunks and zero runs confirmed in place (previous snapshot)
    read_bytes: int = 0  # bytes read from the input (holes are not read)
    chunked_bytes: int = 0  # bytes the chunker scanned (not confirmed in place)


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
        started = time.perf_counter()
        writer = repo.manifest_writer()
        try:
            known = repo.list_snapshots(skip_damaged=True)
            sequence = 1 + max((s.sequence or 0 for s in known), default=0)
            hints = _hints(repo, known, name or path.name, size) if use_hints else None
            job = CommitPipeline(repo, writer, progress, hints, threads or default_threads())
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
                sequence=sequence,
            )
            snapshot_id = repo.register_snapshot(writer, trailer, job.chunk_ids)
        except BaseException as exc:
            writer.abort()
            _keep_what_is_stored(repo, exc)
            raise
        finally:
            progress.finish()
        return CommitResult(
            snapshot=repo.load_info(snapshot_id),
            chunks=job.refs,
            new_chunks=job.new_chunks,
            new_raw_bytes=job.new_raw,
            new_stored_bytes=job.new_stored,
            zero_bytes=job.zero_bytes,
            seconds=time.perf_counter() - started,
            confirmed_chunks=job.confirmed,
            read_bytes=job.read_bytes,
            chunked_bytes=job.chunked_bytes,
        )
    finally:
        os.close(fd)


def _hints(repo: Repository, known: list[SnapshotInfo], name: str, size: int) -> HintCursor | None:
    """Hints from the newest snapshot of ``name`` among ``known`` (oldest first)."""
    same = [s for s in known if s.name == name and s.entries == 1]
    if not same:
        return None
    return HintCursor(confirmable_chunks(repo.iter_records(same[-1].id), size))


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
