"""snap log, snap show, snap rm"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from snapstore.cli.common import (
    GLOBAL,
    HostFilterOption,
    JsonOption,
    NoLockOption,
    RepoOption,
    TagFilterOption,
    emit_json,
    info,
    open_repo,
    out,
    snapshot_filter,
)
from snapstore.cli.text import cut, safe, when
from snapstore.errors import CorruptError, IntegrityError, UsageError
from snapstore.model import ChunkRef, SnapshotId, SnapshotInfo, ZeroRun
from snapstore.ops.space import exclusive_bytes
from snapstore.repo import Mode, Repository
from snapstore.units import format_size, parse_duration

IdArgument = Annotated[str, typer.Argument(help="Snapshot id, unique prefix, or 'latest'.")]
NameOption = Annotated[str | None, typer.Option(help="With 'latest': newest of this name.")]


def snapshot_doc(s: SnapshotInfo, **extra: Any) -> dict[str, Any]:
    return {
        "id": s.hex,
        "short_id": s.hex[:12],
        "name": s.name,
        "size": s.size,
        "created": s.created.isoformat(),
        "message": s.message,
        "hostname": s.hostname,
        "tags": list(s.tags),
        "source": s.source,
        "kind": s.kind,
        **extra,
    }


def log(
    name: Annotated[str | None, typer.Argument(help="Only snapshots of this name.")] = None,
    last: Annotated[int | None, typer.Option("--last", min=1, help="Only the newest N.")] = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN", help="Only those created since WHEN: a duration back (7d, 12h) or an ISO date."
        ),
    ] = None,
    reverse: Annotated[bool, typer.Option("--reverse", help="Newest first.")] = False,
    tag: TagFilterOption = None,
    host: HostFilterOption = None,
    repo: RepoOption = None,
    no_lock: NoLockOption = False,
    json_output: JsonOption = False,
) -> None:
    """List snapshots, oldest first, with the space each alone holds."""
    after = None if since is None else since_time(since, datetime.now(UTC))
    select = snapshot_filter(tag, host)
    with open_repo(repo, no_lock=no_lock) as r:
        snaps = [
            s
            for s in select.select(r.list_snapshots())
            if (name is None or s.name == name) and (after is None or s.created >= after)
        ]
        if last is not None:
            snaps = snaps[-last:]
        if reverse:
            snaps.reverse()
        rows = [(s, exclusive_bytes(r, s.id)) for s in snaps]
    if json_output:
        emit_json([snapshot_doc(s, exclusive_bytes=x) for s, x in rows])
        return
    if not rows:
        info("no snapshots")
        return
    created = "CREATED (UTC)" if GLOBAL.utc else "CREATED"
    out(
        f"{'ID':<12}  {created:<19}  {'NAME':<20}  {'HOST':<12}  {'SIZE':>10}  {'EXCLUSIVE':>10}  "
        f"{'TAGS':<16}  MESSAGE"
    )
    for s, x in rows:
        out(
            f"{s.hex[:12]}  {when(s.created, utc=GLOBAL.utc)}  {cut(s.name, 20):<20}  "
            f"{cut(s.hostname, 12):<12}  {format_size(s.size):>10}  {format_size(x):>10}  "
            f"{cut(','.join(s.tags), 16) or '-':<16}  {safe(s.message)}"
        )


def show(
    snapshot: IdArgument,
    name: NameOption = None,
    repo: RepoOption = None,
    no_lock: NoLockOption = False,
    json_output: JsonOption = False,
) -> None:
    """Show one snapshot in detail."""
    with open_repo(repo, no_lock=no_lock) as r:
        s = r.resolve(snapshot, name=name)
        chunks = zero = 0
        distinct: set[bytes] = set()
        for record in r.iter_records(s.id):
            if isinstance(record, ChunkRef):
                chunks += 1
                distinct.add(record.chunk_id)
            elif isinstance(record, ZeroRun):
                zero += record.length
        n_distinct = len(distinct)
        if s.kind == "tree":  # its chunks are named by its tree objects
            chunks, n_distinct = s.chunk_refs, len(next(r.snapshot_chunk_sets([s.id])))
        excl = exclusive_bytes(r, s.id)
    extra: dict[str, Any] = {
        "chunks": chunks,
        "distinct_chunks": n_distinct,
        "zero_bytes": zero,
        "exclusive_bytes": excl,
    }
    if s.kind == "tree":
        extra["entries"] = s.entries
    if json_output:
        emit_json(snapshot_doc(s, **extra))
        return
    for key, value in (
        ("id", s.hex),
        ("name", safe(s.name)),
        ("created", when(s.created, utc=GLOBAL.utc) + (" UTC" if GLOBAL.utc else "")),
        ("size", f"{format_size(s.size)} ({s.size} bytes)"),
        ("message", safe(s.message)),
        ("host", safe(s.hostname)),
        ("tags", safe(", ".join(s.tags)) or "-"),
        ("source", safe(s.source) + (f" (a directory: {s.entries} entries)" if s.kind == "tree" else "")),
        ("chunks", f"{chunks} ({n_distinct} distinct)"),
        ("zero bytes", format_size(zero)),
        ("exclusive", format_size(excl)),
    ):
        out(f"{key + ':':<11} {value}")


def rm(
    snapshots: Annotated[list[str], typer.Argument(help="Snapshot ids, prefixes, or 'latest'.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Say what would go; change nothing.")
    ] = False,
    repo: RepoOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove snapshots, damaged ones too (by id); 'snap gc' then frees their space."""
    with open_repo(repo, Mode.READ if dry_run else Mode.WRITE) as r:
        targets, damaged = _resolve_all(r, snapshots)
        if not dry_run:
            # On a full disk the index needs the reserve's room to drop the counts.
            r.release_reserve()
            try:
                for sid in [*(s.id for s in targets), *damaged]:
                    r.remove_snapshot(sid)
            finally:
                r.restore_reserve()
    if json_output:
        docs = [snapshot_doc(s) for s in targets] + [{"id": sid.hex(), "damaged": True} for sid in damaged]
        emit_json({"dry_run": dry_run, "removed": docs})
        return
    verb = "would remove" if dry_run else "removed"
    for s in targets:
        out(f"{verb} {s.hex[:12]} {safe(s.name)} {when(s.created, utc=GLOBAL.utc)}")
    for sid in damaged:
        out(f"{verb} {sid.hex()[:12]} (its manifest is damaged)")
    if not dry_run:
        info("run 'snap gc' to free the space they held")


def _resolve_all(r: Repository, refs: list[str]) -> tuple[list[SnapshotInfo], list[SnapshotId]]:
    """The snapshots ``refs`` name, and the ids of those whose manifest is damaged."""
    found: dict[SnapshotId, SnapshotInfo] = {}
    damaged: dict[SnapshotId, None] = {}
    for ref in refs:
        try:
            s = r.resolve(ref)
        except (CorruptError, IntegrityError):
            sid = r.find_damaged(ref)
            if sid is None:
                raise
            damaged[sid] = None
            continue
        found[s.id] = s
    return list(found.values()), list(damaged)


def since_time(text: str, now: datetime) -> datetime:
    """``7d`` (that long before ``now``) or an ISO 8601 date or time (UTC unless it says)."""
    try:
        return now - parse_duration(text)
    except UsageError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{text!r} is not a duration or a date", hint="write it like 7d or 2026-12-01"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
