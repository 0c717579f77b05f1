"""snap verify, snap repair"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from snapstore.cli.common import (
    GLOBAL,
    JsonOption,
    NoLockOption,
    RepoOption,
    emit_json,
    info,
    out,
)
from snapstore.cli.maintenance import Work, perform
from snapstore.cli.snapshots_cmd import snapshot_doc
from snapstore.errors import DamagedError, UsageError
from snapstore.ops.repair import repair as do_repair
from snapstore.ops.verify import affected
from snapstore.ops.verify import verify as do_verify
from snapstore.progress import Progress
from snapstore.repo import Mode, Repository


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
    args = {
        "read_data": read_data,
        "sample": sample,
        "seed": seed,
        "no_lock": no_lock or GLOBAL.no_lock,
        "list_snapshots": json_output,
    }
    doc = perform(repo, "verify", args, json_output=json_output)
    if json_output:
        emit_json(doc)
    else:
        for p in doc["problems"]:
            names = ", ".join(s[:12] for s in p["snapshots"]) or "no snapshot"
            out(f"{p['kind']}: {p['detail']} (affects {names})")
        if doc["ok"]:
            info(
                f"checked {doc['snapshot_count']} snapshots, {doc['chunks']} chunks, "
                f"{doc['chunks_read']} read and hashed: no problems"
            )
    if not doc["ok"]:
        raise DamagedError(len(doc["problems"]), len(doc["affected_snapshots"]))


def verify_work(args: dict[str, Any]) -> Work:
    """verify's work (cli/maintenance.py): its document, every problem found."""
    read_data, sample, seed = bool(args["read_data"]), args["sample"], args["seed"]
    sample = None if sample is None else float(sample)
    seed = None if seed is None else int(seed)
    listing = bool(args["list_snapshots"])

    def compute(r: Repository, progress: Progress) -> dict[str, Any]:
        report = do_verify(r, read_data=read_data, sample=sample, seed=seed, progress=progress)
        listed = r.list_snapshots(skip_damaged=True, warn=False) if listing else []
        return {
            "ok": report.ok,
            "snapshots": [snapshot_doc(s) for s in listed],  # the snapshot objects, as in stats
            "snapshot_count": report.snapshots,
            "chunks": report.chunks,
            "chunks_read": report.chunks_read,
            "problems": [
                {"kind": p.kind, "detail": p.detail, "snapshots": [s.hex() for s in p.snapshots]}
                for p in report.problems
            ],
            "affected_snapshots": sorted(s.hex() for s in affected(report.problems)),
        }

    return Work(Mode.CHECK, compute, reports_index=True, no_lock=bool(args["no_lock"]), progress=True)


def repair(
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Also drop index entries whose data does not match its id.")
    ] = False,
    repo: RepoOption = None,
    json_output: JsonOption = False,
) -> None:
    """Rebuild the index from the packs; name snapshots that lost data."""
    doc = perform(repo, "repair", {"read_data": read_data}, json_output=json_output)
    if json_output:
        emit_json(doc)
    else:
        out(
            f"index rebuilt: {doc['chunks_indexed']} chunks, {doc['duplicate_records']} duplicate "
            f"records (freed by gc), {doc['dropped_corrupt']} corrupt chunks dropped"
        )
        for pack_id in doc["rewritten_pack_headers"]:
            out(f"pack {pack_id}: damaged header written again")
        for pack_id in doc["rewritten_pack_trailers"]:
            out(f"pack {pack_id}: trailer written again from a scan (it omitted indexed records)")
        for sid in doc["damaged_snapshots"]:
            why = "manifest damaged" if sid in doc["damaged_manifests"] else "chunks missing or corrupt"
            out(f"damaged: {sid[:12]} lost data ({why})")
    if doc["damaged_snapshots"]:
        raise DamagedError(len(doc["damaged_snapshots"]), len(doc["damaged_snapshots"]))


def repair_work(args: dict[str, Any]) -> Work:
    """repair's work (cli/maintenance.py): its document, what was rebuilt and what was lost."""
    read_data = bool(args["read_data"])

    def compute(r: Repository, progress: Progress) -> dict[str, Any]:
        report = do_repair(r, read_data=read_data, progress=progress)
        return {
            "chunks_indexed": report.chunks_indexed,
            "duplicate_records": report.duplicate_records,
            "dropped_corrupt": report.dropped_corrupt,
            "rewritten_pack_headers": [p.hex() for p in report.rewritten_pack_headers],
            "rewritten_pack_trailers": [p.hex() for p in report.rewritten_pack_trailers],
            "damaged_manifests": [s.hex() for s in report.damaged_manifests],
            "damaged_snapshots": [s.hex() for s in report.damaged_snapshots],
        }

    return Work(Mode.EXCLUSIVE, compute, rebuild_index=True, progress=True)
