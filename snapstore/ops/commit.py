"""commit: one file -> one snapshot (the pipeline that cuts and stores it is ops/pipeline.py).

This module checks the input, begins a snapshot in the repository, appends its entry around
the pipeline's chunk records, and has the repository publish it (the repository writes the
manifest's bytes, in the order docs/FORMAT.md requires). When the file has a previous
snapshot of the same name, its chunk list is handed to the pipeline as hints.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from snapstore.errors import (
    InputChangedError,
    InputError,
    InputNotFoundError,
    NoSpaceError,
    SnapstoreError,
)
from snapstore.model import SnapshotInfo
from snapstore.ops.hints import HintCursor, confirmable_chunks
from snapstore.ops.pipeline import CommitPipeline
from snapstore.ops.prune import keep_within_quota
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Repository
from snapstore.selection import check_host, normal_tags


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
    pruned: tuple[SnapshotInfo, ...] = ()  # dropped to keep the repository within its quota
    quota_deferred: bool = False  # over the quota, but a reader held the data lock: not pruned


@dataclass(frozen=True)
class _Labels:
    tags: tuple[str, ...]
    host: str | None  # None: this machine's name


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
    quota: bool = True,
    tags: Iterable[str] = (),
    host: str | None = None,
) -> CommitResult:
    """Commit the file (or block device) at ``path`` as a new snapshot named ``name`` (default:
    the file's name) in ``repo``, opened ``Mode.WRITE``.

    With ``use_hints`` the newest snapshot of the same name is used to confirm unchanged
    chunks in place (same chunk list as a full chunking, less work). With ``quota`` (the
    default, as ``snap commit``), a repository quota is kept: the oldest unprotected
    snapshots are pruned before and after the commit (``CommitResult.pruned``), and a new
    snapshot that cannot fit even then is removed again (QuotaError). Raises InputError,
    InputChangedError, QuotaError, NoSpaceError... (snapstore.errors).

    ``tags`` are recorded with the snapshot (each non-empty, printable, without a comma:
    UsageError otherwise), and ``host`` as the host it was taken on (default: this machine's
    name); ``snap log --tag/--host`` and prune select by them (snapstore.SnapshotFilter)."""
    labels = _Labels(normal_tags(tags), None if host is None else check_host(host))
    if not quota:
        return _commit_file(repo, path, name, message, threads, progress, now, use_hints, labels)
    before = keep_within_quota(repo, now or datetime.now(UTC))
    res = _commit_file(repo, path, name, message, threads, progress, now, use_hints, labels)
    after = keep_within_quota(repo, now or datetime.now(UTC), res.snapshot.id)
    dropped = tuple(
        s for outcome in (before, after) if outcome.pruned is not None for s in outcome.pruned.plan.drop
    )
    return replace(res, pruned=dropped, quota_deferred=after.deferred)


def _commit_file(
    repo: Repository,
    path: Path,
    name: str | None,
    message: str,
    threads: int | None,
    progress: Progress,
    now: datetime | None,
    use_hints: bool,
    labels: _Labels,
) -> CommitResult:
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
        builder = repo.begin_snapshot()
        try:
            known = repo.list_snapshots(skip_damaged=True)
            sequence = 1 + max((s.sequence or 0 for s in known), default=0)
            hints = _hints(repo, known, name or path.name, size) if use_hints else None
            job = CommitPipeline(repo, builder, progress, hints, threads or default_threads())
            builder.start_entry(
                path=_entry_name(name or path.name),
                mode=stat.S_IMODE(before.st_mode),
                mtime_ns=before.st_mtime_ns,
            )
            progress.start(size, f"commit {path.name}")
            digest = job.run(fd, size, path)
            after = os.fstat(fd)
            if _changed(before, after):
                raise InputChangedError(path)
            builder.end_entry(size, digest)
            info = repo.publish_snapshot(
                builder,
                name=name or path.name,
                created=now or datetime.now(UTC),
                message=message,
                source=str(path.absolute()),
                sequence=sequence,
                tags=labels.tags,
                hostname=labels.host,
            )
        except BaseException as exc:
            builder.abort()
            _keep_what_is_stored(repo, exc)
            raise
        finally:
            progress.finish()
        stats = job.stats
        return CommitResult(
            snapshot=info,
            chunks=builder.chunk_refs,
            new_chunks=stats.new_chunks,
            new_raw_bytes=stats.new_raw,
            new_stored_bytes=stats.new_stored,
            zero_bytes=stats.zero_bytes,
            seconds=time.perf_counter() - started,
            confirmed_chunks=stats.confirmed,
            read_bytes=stats.read_bytes,
            chunked_bytes=stats.chunked_bytes,
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
