"""snap gc, snap prune"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from snapstore.cli.common import (
    GLOBAL,
    HostFilterOption,
    JsonOption,
    RepoOption,
    TagFilterOption,
    emit_json,
    info,
    out,
    snapshot_filter,
)
from snapstore.cli.maintenance import Work, perform
from snapstore.cli.snapshots_cmd import snapshot_doc
from snapstore.cli.text import safe, when
from snapstore.format.config import check_quota
from snapstore.ops import gc as gc_ops
from snapstore.ops import prune as prune_ops
from snapstore.progress import Progress
from snapstore.repo import Mode, Repository
from snapstore.retention import KeepPolicy
from snapstore.units import format_size, parse_duration, parse_size

DryRunOption = Annotated[bool, typer.Option("--dry-run", "-n", help="Print the plan; change nothing.")]


RepackOption = Annotated[
    bool,
    typer.Option(
        "--repack",
        help="Copy the live chunks of mostly dead packs to new packs and remove the old ones, "
        "instead of punching holes (scratch space: one pack).",
    ),
]
RepackThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--repack-threshold",
        metavar="F",
        help=f"Repack packs whose live fraction is below F (0 < F <= 1; implies --repack; "
        f"default {gc_ops.DEFAULT_REPACK_THRESHOLD}).",
    ),
]


def _gc_plan_doc(p: gc_ops.GcPlan) -> dict[str, Any]:
    return {
        "dead_chunks": len(p.dead_chunks),
        "punch_ranges": len(p.punch),
        "delete_packs": len(p.delete_packs),
        "truncate_packs": len(p.truncate),
        "planned_free_bytes": p.freed_bytes,
        "repack_threshold": p.repack_threshold,
        "repack_packs": [
            {
                "pack": r.pack_id.hex(),
                "live_bytes": r.live_bytes,
                "live_chunks": r.live_records,
                "pack_bytes": r.pack_bytes,
            }
            for r in p.repack
        ],
        "repack_written_bytes": p.repack_bytes,
        "scratch_bytes": p.scratch_bytes,
    }


def gc(
    dry_run: DryRunOption = False,
    repack: RepackOption = False,
    repack_threshold: RepackThresholdOption = None,
    repo: RepoOption = None,
    json_output: JsonOption = False,
) -> None:
    """Free the space of chunks no snapshot references (no scratch space needed; one pack
    with --repack)."""
    args = {"dry_run": dry_run, "repack": repack, "repack_threshold": repack_threshold}
    doc = perform(repo, "gc", args, json_output=json_output)
    if json_output:
        emit_json(doc)
        return
    head = "would free" if dry_run else "freed"
    amount = doc["planned_free_bytes"] if doc["freed_bytes"] is None else doc["freed_bytes"]
    if doc["repack_threshold"] is not None:
        verb = "would repack" if dry_run else "repacked"
        out(
            f"{head} {format_size(amount)}: {doc['dead_chunks']} unreferenced chunks, "
            f"{doc['delete_packs']} packs removed, {verb} {len(doc['repack_packs'])} packs "
            f"(live fraction below {doc['repack_threshold']:g}) writing "
            f"{format_size(doc['repack_written_bytes'])}, scratch space {format_size(doc['scratch_bytes'])}"
        )
        return
    out(
        f"{head} {format_size(amount)}: {doc['dead_chunks']} unreferenced chunks, "
        f"{doc['punch_ranges']} ranges punched, {doc['delete_packs']} packs removed"
        + (f", {doc['truncate_packs']} unindexed pack tails cut" if doc["truncate_packs"] else "")
    )


def gc_work(args: dict[str, Any]) -> Work:
    """gc's work (cli/maintenance.py): its document, the plan and what was freed."""
    dry_run, repack = bool(args["dry_run"]), bool(args["repack"])
    threshold = args["repack_threshold"]
    threshold = None if threshold is None else float(threshold)

    def compute(r: Repository, progress: Progress) -> dict[str, Any]:
        if dry_run:
            plan = gc_ops.plan_for(r, repack=repack, repack_threshold=threshold)
            freed = None
        else:
            result = gc_ops.collect(r, repack=repack, repack_threshold=threshold)
            plan, freed = result.plan, result.freed_bytes
        return {"dry_run": dry_run, **_gc_plan_doc(plan), "freed_bytes": freed}

    return Work(Mode.READ if dry_run else Mode.EXCLUSIVE, compute)


def prune(
    keep_last: Annotated[int, typer.Option(min=0, help="Keep the newest N of each name.")] = 0,
    keep_hourly: Annotated[int, typer.Option(min=0, help="Keep the last of each of N hours.")] = 0,
    keep_daily: Annotated[int, typer.Option(min=0, help="Keep the last of each of N days.")] = 0,
    keep_weekly: Annotated[int, typer.Option(min=0, help="Keep the last of each of N weeks.")] = 0,
    keep_monthly: Annotated[int, typer.Option(min=0, help="Keep the last of each of N months.")] = 0,
    keep_yearly: Annotated[int, typer.Option(min=0, help="Keep the last of each of N years.")] = 0,
    keep_within: Annotated[str | None, typer.Option(help="Keep all newer than this (e.g. 7d, 12h).")] = None,
    quota: Annotated[
        str | None, typer.Option(help="Drop oldest unprotected snapshots until disk usage fits (e.g. 200G).")
    ] = None,
    tag: TagFilterOption = None,
    host: HostFilterOption = None,
    dry_run: DryRunOption = False,
    repo: RepoOption = None,
    json_output: JsonOption = False,
) -> None:
    """Drop snapshots by keep rules and/or to fit a quota, and free their space.

    With --tag/--host only the matching snapshots are considered (kept or dropped); the
    others are left alone."""
    args = {
        "keep": [keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly],
        "keep_within": keep_within,
        "quota_bytes": parse_size(quota) if quota else None,
        "tags": tag or [],
        "hosts": host or [],
        "dry_run": dry_run,
        "now": datetime.now(UTC).isoformat(),
    }
    doc = perform(repo, "prune", args, json_output=json_output)
    if json_output:
        emit_json(doc)
        return
    verb = "would drop" if dry_run else "dropped"
    for s in doc["drop"]:
        why = "quota" if s["reason"] == "quota" else "keep rules"
        created = datetime.fromisoformat(s["created"])
        out(f"{verb} {s['id'][:12]}  {when(created, utc=GLOBAL.utc)}  {safe(s['name'])}  ({why})")
    if not doc["drop"]:
        info("nothing to drop")
    amount = doc["planned_free_bytes"] if doc["freed_bytes"] is None else doc["freed_bytes"]
    quota_bytes = doc["quota_bytes"]
    out(
        f"{'would free' if dry_run else 'freed'} {format_size(amount)}; disk usage "
        f"{format_size(doc['disk_bytes_before'])} -> {format_size(doc['disk_bytes_after'])}"
        + (f" (quota {format_size(quota_bytes)})" if quota_bytes else "")
    )


def prune_work(args: dict[str, Any]) -> Work:
    """prune's work (cli/maintenance.py): its document, what was dropped and kept, and why."""
    select = snapshot_filter([str(t) for t in args["tags"]], [str(h) for h in args["hosts"]])
    last, hourly, daily, weekly, monthly, yearly = (int(n) for n in args["keep"])
    keep_within = args["keep_within"]
    within = parse_duration(str(keep_within)) if keep_within else None
    policy = KeepPolicy(last, hourly, daily, weekly, monthly, yearly, within)
    given_quota = args["quota_bytes"]
    if given_quota is not None:
        check_quota(int(given_quota))
    dry_run, now = bool(args["dry_run"]), datetime.fromisoformat(str(args["now"]))

    def compute(r: Repository, progress: Progress) -> dict[str, Any]:
        quota_bytes = r.config.quota_bytes if given_quota is None else int(given_quota)
        plan = prune_ops.plan(r, policy, now, quota_bytes=quota_bytes, select=select)
        kept = [s for s in r.list_snapshots() if s.id in plan.keep]
        freed = None if dry_run else prune_ops.apply(r, plan).gc.freed_bytes
        disk_after = plan.expected_disk_bytes if freed is None else r.disk_usage()
        return {
            "dry_run": dry_run,
            "drop": [
                snapshot_doc(s, reason="quota" if s.id in plan.by_quota else "rules") for s in plan.drop
            ],
            "keep": [snapshot_doc(s, reasons=list(plan.keep[s.id])) for s in kept],
            "quota_bytes": quota_bytes,
            "disk_bytes_before": plan.disk_bytes,
            "planned_free_bytes": plan.freed_bytes,
            "freed_bytes": freed,
            "disk_bytes_after": disk_after,
        }

    return Work(Mode.READ if dry_run else Mode.EXCLUSIVE, compute)
