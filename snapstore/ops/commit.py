"""commit: one file or stream -> one snapshot (the pipeline that cuts and stores it is ops/pipeline.py).

This module checks the input, begins a snapshot in the repository, appends its entry around
the pipeline's chunk records, and has the repository publish it (the repository writes the
manifest's bytes, in the order docs/FORMAT.md requires). When the file has a previous
snapshot of the same name, its chunk list is handed to the pipeline as hints.
"""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from snapstore.errors import (
    CommandFailedError,
    InputChangedError,
    InputError,
    InputNotFoundError,
    NoSpaceError,
    SnapstoreError,
    UsageError,
)
from snapstore.model import SnapshotInfo
from snapstore.ops.hints import HintCursor, confirmable_chunks
from snapstore.ops.pipeline import CommitPipeline
from snapstore.ops.prune import keep_within_quota
from snapstore.ops.streams import InputStream
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


def commit_labels(tags: Iterable[str], host: str | None) -> _Labels:
    """Checked tags and host (UsageError for a bad one)."""
    return _Labels(normal_tags(tags), None if host is None else check_host(host))


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
    labels = commit_labels(tags, host)
    fd = _open_input(path)
    try:
        source = _file_source(fd, path, name)
        return _commit_quota(repo, source, message, threads, progress, now, use_hints, quota, labels)
    finally:
        os.close(fd)


def commit_stream(
    repo: Repository,
    stream: BinaryIO | int,
    *,
    name: str,
    message: str = "",
    threads: int | None = None,
    progress: Progress = NULL_PROGRESS,
    now: datetime | None = None,
    quota: bool = True,
    source: str = "stdin",
    tags: Iterable[str] = (),
    host: str | None = None,
) -> CommitResult:
    """Commit the bytes of ``stream`` (a binary file object with ``readinto``, or a file
    descriptor: a pipe, stdin, a socket), read to its end, as a new snapshot named ``name``.
    The chunk list is the one a file of the same bytes gets (zero runs found in the bytes);
    nothing is confirmed against a previous snapshot (a stream cannot be read twice: every
    byte is chunked). The stream is not closed. ``source`` is recorded as the snapshot's source."""
    labels = commit_labels(tags, host)
    src = _stream_source(stream, name, source)
    return _commit_quota(repo, src, message, threads, progress, now, False, quota, labels)


def commit_command(
    repo: Repository,
    argv: Sequence[str],
    *,
    name: str,
    message: str = "",
    threads: int | None = None,
    progress: Progress = NULL_PROGRESS,
    now: datetime | None = None,
    quota: bool = True,
    tags: Iterable[str] = (),
    host: str | None = None,
) -> CommitResult:
    """Run ``argv`` and commit what it writes on its stdout as a new snapshot named ``name``
    (its stdin and stderr are this process's). The snapshot is published only once the
    command has exited with status 0: a command that fails (nonzero status, killed by a
    signal) raises CommandFailedError and makes no snapshot, whatever it wrote (the chunks
    already stored are indexed for a retry; gc frees them if none comes). InputError if
    the command cannot be started."""
    if not argv:
        raise UsageError("no command given", hint="snap commit --from-command --name NAME -- CMD ARGS...")
    labels = commit_labels(tags, host)
    shown = shlex.join(argv)
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE)
    except OSError as exc:
        raise InputError(argv[0], exc.strerror or str(exc)) from exc
    assert proc.stdout is not None
    src = _stream_source(proc.stdout.fileno(), name, f"command: {shown}")
    src.check = lambda: _command_status(proc, shown)
    try:
        return _commit_quota(repo, src, message, threads, progress, now, False, quota, labels)
    finally:
        if proc.poll() is None:  # the commit failed first: the command is not needed any more
            proc.kill()
        proc.stdout.close()
        proc.wait()


@dataclass
class _Source:
    """What a commit reads: an open input, its size (None: a stream, read to its end) and
    what the snapshot's entry and trailer say of it."""

    fd: int | InputStream
    path: Path  # in messages
    name: str
    size: int | None
    mode: int
    mtime_ns: int
    source: str
    label: str  # in the progress line
    check: Callable[[], None]  # after reading: raises if what was read must not be kept


def _file_source(fd: int, path: Path, name: str | None) -> _Source:
    before = os.fstat(fd)
    if stat.S_ISDIR(before.st_mode):
        raise InputError(
            path, "is a directory (commit it with snapstore.commit_tree, as 'snap commit DIR' does)"
        )
    if not (stat.S_ISREG(before.st_mode) or stat.S_ISBLK(before.st_mode)):
        # A pipe or a character device has no size to read up to and cannot be read twice.
        raise InputError(path, "not a regular file or block device (a stream: give '-' and pipe it)")
    os.set_blocking(fd, True)
    size = before.st_size if stat.S_ISREG(before.st_mode) else os.lseek(fd, 0, os.SEEK_END)

    def check() -> None:
        if _changed(before, os.fstat(fd)):
            raise InputChangedError(path)

    return _Source(
        fd,
        path,
        name or path.name,
        size,
        stat.S_IMODE(before.st_mode),
        before.st_mtime_ns,
        str(path.absolute()),
        path.name,
        check,
    )


def _stream_source(stream: BinaryIO | int, name: str, source: str) -> _Source:
    if isinstance(stream, int):
        os.set_blocking(stream, True)
    now_ns = time.time_ns()
    reader = InputStream(stream, Path(source))
    return _Source(reader, Path(source), name, None, 0o600, now_ns, source, name, lambda: None)


def _commit_quota(
    repo: Repository,
    source: _Source,
    message: str,
    threads: int | None,
    progress: Progress,
    now: datetime | None,
    use_hints: bool,
    quota: bool,
    labels: _Labels,
) -> CommitResult:
    if not quota:
        return _commit(repo, source, message, threads, progress, now, use_hints, labels)
    before = keep_within_quota(repo, now or datetime.now(UTC))
    res = _commit(repo, source, message, threads, progress, now, use_hints, labels)
    after = keep_within_quota(repo, now or datetime.now(UTC), res.snapshot.id)
    dropped = tuple(
        s for outcome in (before, after) if outcome.pruned is not None for s in outcome.pruned.plan.drop
    )
    return replace(res, pruned=dropped, quota_deferred=after.deferred)


def _commit(
    repo: Repository,
    src: _Source,
    message: str,
    threads: int | None,
    progress: Progress,
    now: datetime | None,
    use_hints: bool,
    labels: _Labels,
) -> CommitResult:
    started = time.perf_counter()
    builder = repo.begin_snapshot()
    try:
        known = repo.list_snapshots(skip_damaged=True)
        sequence = 1 + max((s.sequence or 0 for s in known), default=0)
        hints = _hints(repo, known, src.name, src.size) if use_hints and src.size is not None else None
        job = CommitPipeline(repo, builder, progress, hints, threads or default_threads())
        builder.start_entry(path=_entry_name(src.name), mode=src.mode, mtime_ns=src.mtime_ns)
        progress.start(src.size or 0, f"commit {src.label}")
        digest = job.run(src.fd, src.size or 0, src.path)
        src.check()
        builder.end_entry(job.size, digest)
        info = repo.publish_snapshot(
            builder,
            name=src.name,
            created=now or datetime.now(UTC),
            message=message,
            source=src.source,
            sequence=sequence,
            tags=labels.tags,
            hostname=labels.host,
        )
    except BaseException as exc:
        builder.abort()
        keep_what_is_stored(repo, exc)
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


def _command_status(proc: subprocess.Popen[bytes], shown: str) -> None:
    """Wait for the command (its stdout has ended); raise unless it exited with status 0."""
    code = proc.wait()
    if code == 0:
        return
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
        raise CommandFailedError(shown, f"was killed by {sig}")
    raise CommandFailedError(shown, f"exited with status {code}")


def _hints(repo: Repository, known: list[SnapshotInfo], name: str, size: int) -> HintCursor | None:
    """Hints from the newest snapshot of ``name`` among ``known`` (oldest first)."""
    same = [s for s in known if s.name == name and s.entries == 1 and s.kind == "file"]
    if not same:
        return None
    return HintCursor(confirmable_chunks(repo.iter_records(same[-1].id), size))


def keep_what_is_stored(repo: Repository, exc: BaseException) -> None:
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
