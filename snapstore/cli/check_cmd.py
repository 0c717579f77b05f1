"""snap verify, snap repair"""

from __future__ import annotations

from typing import Annotated

import typer

from snapstore.cli.common import (
    JsonOption,
    NoLockOption,
    RepoOption,
    emit_json,
    info,
    open_repo,
    out,
    progress_for,
)
from snapstore.cli.snapshots_cmd import snapshot_doc
from snapstore.errors import DamagedError, UsageError
from snapstore.ops.repair import repair as do_repair
from snapstore.ops.verify import affected
from snapstore.ops.verify import verify as do_verify
from snapstore.repo import Mode


def verify(
    read_data: Annotated[bool, typer.Option("--read-data", help="Read and hash every chunk.")] = False,
    sample: Annotated[
        float | None,
        typer.Option(min=0.0, max=100.0, help="Read and hash this percentage of chunks, chosen at random."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for --sample (repeatable choice).")] = None,
    repo: RepoOption = None,
    no_lock: NoLockOption = False,
    json_output: JsonOption = False,
) -> None:
    """Check the repository; exit 5 if anything is wrong."""
    if read_data and sample is not None:
        raise UsageError("--read-data reads every chunk and --sample a part of them", hint="give one of them")
    with (
        open_repo(repo, Mode.CHECK, reports_index=True, no_lock=no_lock) as r,
        progress_for(json_output) as progress,
    ):
        report = do_verify(r, read_data=read_data, sample=sample, seed=seed, progress=progress)
        listed = r.list_snapshots(skip_damaged=True) if json_output else []
    hit = affected(report.problems)
    if json_output:
        emit_json(
            {
                "ok": report.ok,
                "snapshots": [snapshot_doc(s) for s in listed],  # the snapshot objects, as in stats
                "snapshot_count": report.snapshots,
                "chunks": report.chunks,
                "chunks_read": report.chunks_read,
                "problems": [
                    {"kind": p.kind, "detail": p.detail, "snapshots": [s.hex() for s in p.snapshots]}
                    for p in report.problems
                ],
                "affected_snapshots": sorted(s.hex() for s in hit),
            }
        )
    else:
        for p in report.problems:
            names = ", ".join(s.hex()[:12] for s in p.snapshots) or "no snapshot"
            out(f"{p.kind}: {p.detail} (affects {names})")
        if report.ok:
            info(
                f"checked {report.snapshots} snapshots, {report.chunks} chunks, "
                f"{report.chunks_read} read and hashed: no problems"
            )
    if not report.ok:
        raise DamagedError(len(report.problems), len(hit))


def repair(
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Also drop index entries whose data does not match its id.")
    ] = False,
    repo: RepoOption = None,
    json_output: JsonOption = False,
) -> None:
    """Rebuild the index from the packs; name snapshots that lost data."""
    with open_repo(repo, Mode.EXCLUSIVE, rebuild_index=True) as r, progress_for(json_output) as progress:
        report = do_repair(r, read_data=read_data, progress=progress)
    if json_output:
        emit_json(
            {
                "chunks_indexed": report.chunks_indexed,
                "duplicate_records": report.duplicate_records,
                "dropped_corrupt": report.dropped_corrupt,
                "rewritten_pack_headers": [p.hex() for p in report.rewritten_pack_headers],
                "rewritten_pack_trailers": [p.hex() for p in report.rewritten_pack_trailers],
                "damaged_manifests": [s.hex() for s in report.damaged_manifests],
                "damaged_snapshots": [s.hex() for s in report.damaged_snapshots],
            }
        )
    else:
        out(
            f"index rebuilt: {report.chunks_indexed} chunks, {report.duplicate_records} duplicate "
            f"records (freed by gc), {report.dropped_corrupt} corrupt chunks dropped"
        )
        for pack_id in report.rewritten_pack_headers:
            out(f"pack {pack_id.hex()}: damaged header written again")
        for pack_id in report.rewritten_pack_trailers:
            out(f"pack {pack_id.hex()}: trailer written again from a scan (it omitted indexed records)")
        for sid in report.damaged_snapshots:
            why = "manifest damaged" if sid in report.damaged_manifests else "chunks missing or corrupt"
            out(f"damaged: {sid.hex()[:12]} lost data ({why})")
    if report.damaged_snapshots:
        raise DamagedError(len(report.damaged_snapshots), len(report.damaged_snapshots))
