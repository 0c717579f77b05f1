"""The one exception tree of snapstore.

Every error a user can cause or meet derives from :class:`SnapstoreError` and carries a
stable ``exit_code`` (documented in docs/CLI.md). Library and OS errors are translated into
these where the library is used, chained with ``raise ... from``. Only the CLI turns them
into messages and exit codes; anything else escaping is a bug.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path


class SnapstoreError(Exception):
    """Root of every snapstore error."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(SnapstoreError):
    """The command was asked something that cannot be done as asked."""

    exit_code = 2


class ObjectNameError(UsageError):
    """A name a storage backend does not accept (docs/BACKENDS.md, "names")."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid stored object name {name!r}: {reason}")
        self.name = name
        self.reason = reason


class AmbiguousIdError(UsageError):
    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = distinct_prefixes(candidates)
        more = ", ..." if len(shown) > 5 else ""
        super().__init__(
            f"snapshot id {prefix!r} is ambiguous: it matches {len(shown)} snapshots "
            f"({', '.join(shown[:5])}{more})",
            hint="give more characters of the id",
        )
        self.prefix = prefix
        self.candidates = candidates


class OutputExistsError(UsageError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already exists", hint="pass --force to replace it")
        self.path = path


class NotFoundError(SnapstoreError):
    """Something named by the user does not exist."""

    exit_code = 3


class InputNotFoundError(NotFoundError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: no such file")
        self.path = path


class UnknownSnapshotError(NotFoundError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no snapshot matches {ref!r}", hint="list snapshots with 'snap log'")
        self.ref = ref


class EntryNotFoundError(NotFoundError):
    """A path that a tree snapshot does not hold."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no entry {path!r} in the snapshot", hint="list its entries with 'snap ls ID'")
        self.path = path


class RepositoryNotFoundError(NotFoundError):
    def __init__(self, path: Path | None) -> None:
        where = f"at {path}" if path is not None else "here or in any parent directory"
        super().__init__(
            f"no snapstore repository {where}",
            hint="create one with 'snap init', or point at one with --repo or SNAP_REPO",
        )
        self.path = path


class ObjectNotFoundError(NotFoundError):
    """A storage backend holds no object of that name (docs/BACKENDS.md)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"stored object {name!r} does not exist")
        self.name = name


class RepositoryError(SnapstoreError):
    """The repository cannot be used as it is (format, structure)."""

    exit_code = 4


class UnsupportedFormatError(RepositoryError):
    def __init__(self, path: Path, found: object, supported: tuple[int, ...]) -> None:
        super().__init__(
            f"{path}: repository format version {found!r} is not supported "
            f"(this snap reads versions {', '.join(map(str, supported))})",
            hint="upgrade snapstore",
        )
        self.found = found
        self.supported = supported


class CorruptError(RepositoryError):
    """Repository metadata that cannot be parsed (config, manifest, index, pack header)."""

    def __init__(self, what: str, detail: str, *, hint: str = "run 'snap verify'") -> None:
        super().__init__(f"{what} is corrupt: {detail}", hint=hint)
        self.what = what
        self.detail = detail


class ObjectExistsError(RepositoryError):
    """A storage backend was asked to put an object that exists (objects are immutable)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"stored object {name!r} exists already", hint="objects are never replaced")
        self.name = name


class ShortObjectError(CorruptError):
    """A ranged get reaches past the end of a stored object."""

    def __init__(self, name: str, size: int, end: int) -> None:
        super().__init__(f"stored object {name!r}", f"{size} bytes long, bytes up to {end} asked for")
        self.name = name
        self.size = size
        self.end = end


class SnapshotRemovedError(NotFoundError, CorruptError):
    """A snapshot found a moment ago whose manifest is gone: it was removed meanwhile (``snap
    rm`` beside a reader). Not found (exit 3) for the user; it stays a CorruptError (its
    manifest is missing) for callers that catch those."""

    exit_code = NotFoundError.exit_code

    def __init__(self, short_id: str) -> None:
        SnapstoreError.__init__(
            self,
            f"snapshot {short_id} was removed while it was being read",
            hint="list snapshots with 'snap log'",
        )
        self.what = f"manifest {short_id}"
        self.detail = "missing"
        self.short_id = short_id


class DamagedManifestsError(RepositoryError):
    """gc (prune, quota pruning) refuses to free anything: manifests that cannot be read
    whole may name any chunk (docs/FORMAT.md, "index")."""

    def __init__(self, snapshot_ids: Sequence[bytes]) -> None:
        shown = ", ".join(s.hex()[:12] for s in snapshot_ids[:5])
        more = f" and {len(snapshot_ids) - 5} more" if len(snapshot_ids) > 5 else ""
        super().__init__(
            f"nothing can be freed while the manifest of {len(snapshot_ids)} snapshot(s) cannot be "
            f"read whole ({shown}{more}): the chunks it names are not known",
            hint="restore the manifest file (then 'snap repair'), or give the snapshot up with 'snap rm ID'",
        )
        self.snapshot_ids = snapshot_ids


class IntegrityError(SnapstoreError):
    """Data read back does not match its hash."""

    exit_code = 5

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{what}: hash mismatch (expected {expected[:16]}, got {actual[:16]})",
            hint="the repository is damaged; run 'snap verify --read-data'",
        )
        self.what = what
        self.expected = expected
        self.actual = actual


class DamagedChunkError(IntegrityError, CorruptError):
    """A stored chunk's payload cannot be decoded: its bytes were damaged. Like a hash
    mismatch it is an integrity error (exit 5), whether or not the damage also stops the
    decompressor; it stays a CorruptError for callers that catch those."""

    exit_code = IntegrityError.exit_code

    def __init__(self, what: str, detail: str) -> None:
        SnapstoreError.__init__(
            self,
            f"{what} is damaged: {detail}",
            hint="the repository is damaged; run 'snap verify --read-data'",
        )
        self.what = what
        self.detail = detail
        self.expected = ""
        self.actual = ""


class DamagedError(SnapstoreError):
    """verify or repair found problems (listed before this error is raised)."""

    exit_code = 5

    def __init__(self, problems: int, snapshots: int) -> None:
        super().__init__(
            f"{problems} problem(s) found, affecting {snapshots} snapshot(s)",
            hint="'snap repair' rebuilds the index; damaged snapshots cannot be fully restored",
        )
        self.problems = problems
        self.snapshots = snapshots


class LockedError(SnapstoreError):
    exit_code = 6

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"repository {path} is locked by {holder}", hint="wait and retry")
        self.path = path
        self.holder = holder


class QuotaError(SnapstoreError):
    exit_code = 7

    def __init__(self, message: str, *, short_bytes: int) -> None:
        super().__init__(message)
        self.short_bytes = short_bytes


class NoSpaceError(SnapstoreError):
    exit_code = 8

    def __init__(self, where: str, *, output: bool = False) -> None:
        """``output``: the disk that filled up is the one of a checkout's output, not the
        repository's (removing snapshots would not help)."""
        hint = (
            "free space where the output goes, or write it elsewhere"
            if output
            else "free space with 'snap rm' + 'snap gc' or 'snap prune'"
        )
        super().__init__(f"no space left on device while writing {where}", hint=hint)
        self.where = where
        self.output = output


class InputChangedError(SnapstoreError):
    exit_code = 9

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} changed while it was being read; no snapshot was made",
            hint="stop the writer (e.g. pause the VM) or commit from a filesystem snapshot; "
            "data already read is kept and makes the retry fast",
        )
        self.path = path


class InputError(SnapstoreError):
    """The input could not be read (permissions, I/O error, not a regular file)."""

    exit_code = 10

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class StorageIOError(SnapstoreError):
    """The repository's own files could not be written or read (not a full disk)."""

    exit_code = 11

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"I/O error on {where}: {reason}")
        self.where = where
        self.reason = reason


class CommandFailedError(SnapstoreError):
    """The command a commit read its input from failed (exit status or signal): no snapshot
    was made, whatever it wrote."""

    exit_code = 12

    def __init__(self, command: str, status: str) -> None:
        super().__init__(
            f"command {command} {status}; no snapshot was made",
            hint="the chunks already stored are kept for a retry; gc frees them if none comes",
        )
        self.command = command
        self.status = status


class RemoteError(SnapstoreError):
    """A remote repository could not be reached, or its connection was lost or spoke
    another protocol (docs/PROTOCOL.md): nothing more can be asked of the server."""

    exit_code = 13


class ConnectionLostError(RemoteError):
    """``connecting``: the connection never came up (ssh failed, or no snap server answered)."""

    def __init__(self, where: str, reason: str, *, connecting: bool = False) -> None:
        if connecting:
            super().__init__(
                f"cannot reach {where}: {reason}",
                hint="check the address and SNAP_RSH, and that snapstore is installed on the server "
                "(--remote-snap, SNAP_REMOTE_SNAP)",
            )
        else:
            super().__init__(
                f"connection to {where} lost: {reason}",
                hint="what was published before stays; rerun the command (a commit reuses what was sent)",
            )
        self.where = where
        self.reason = reason


class ProtocolError(RemoteError):
    """The other side is not a snap server, or speaks a protocol version this snap does not."""

    def __init__(self, where: str, detail: str, *, hint: str | None = None) -> None:
        super().__init__(f"{where}: {detail}", hint=hint)
        self.where = where
        self.detail = detail


class AccessDeniedError(SnapstoreError):
    """The server refuses the request: a path outside ``--restrict-to-path``, or a removal on
    an ``--append-only`` server."""

    exit_code = 14

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)


class ServerError(SnapstoreError):
    """An error the server met of a class the client does not rebuild: its message, hint and
    exit code as the server sent them (docs/PROTOCOL.md, "errors")."""

    def __init__(self, message: str, *, hint: str | None, exit_code: int, kind: str) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.kind = kind


class PartialSnapshotError(SnapstoreError):
    """A tree commit made its snapshot, but left out entries it could not read (listed
    before this error is raised); the snapshot is tagged ``partial``."""

    exit_code = 15

    def __init__(self, short_id: str, left_out: int) -> None:
        super().__init__(
            f"snapshot {short_id} is partial: {left_out} unreadable "
            f"entr{'y' if left_out == 1 else 'ies'} left out",
            hint="they are listed above; the snapshot is tagged 'partial'",
        )
        self.short_id = short_id
        self.left_out = left_out


def translate_os_error(exc: OSError, where: str, *, output: bool = False) -> SnapstoreError:
    """Map an OSError met on the repository's own files (or, ``output``, on a checkout's
    output) to a snapstore error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpaceError(where, output=output)
    return StorageIOError(where, exc.strerror or str(exc))


def distinct_prefixes(hex_ids: list[str], shortest: int = 12) -> list[str]:
    """The ids as listings show them (``shortest`` digits), longer where that many digits
    would not tell them apart; the same id twice is shown once."""
    unique = sorted(set(hex_ids))
    n = shortest
    while n < max((len(h) for h in unique), default=0) and len({h[:n] for h in unique}) < len(unique):
        n += 1
    return [h[:n] for h in unique]


EXIT_CODES: dict[str, int] = {
    "usage": UsageError.exit_code,
    "not found": NotFoundError.exit_code,
    "repository": RepositoryError.exit_code,
    "integrity": IntegrityError.exit_code,
    "locked": LockedError.exit_code,
    "quota": QuotaError.exit_code,
    "no space": NoSpaceError.exit_code,
    "input changed": InputChangedError.exit_code,
    "input": InputError.exit_code,
    "storage i/o": StorageIOError.exit_code,
    "command failed": CommandFailedError.exit_code,
    "remote": RemoteError.exit_code,
    "access denied": AccessDeniedError.exit_code,
    "partial": PartialSnapshotError.exit_code,
}
