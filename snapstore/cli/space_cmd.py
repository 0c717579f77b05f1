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
    open_repo,
    out,
    snapshot_filter,
)
from snapstore.cli.snapshots_cmd import snapshot_doc
from snapstore.cli.text import safe, when
from snapstore.format.config import check_quota
from snapstore.ops import gc as gc_ops
from snapstore.ops import prune as prune_ops
from snapstore.repo import Mode
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
    with open_repo(repo, Mode.READ if dry_run else Mode.EXCLUSIVE) as r:
        if dry_run:
            plan = gc_ops.plan_for(r, repack=repack, repack_threshold=repack_threshold)
            freed = None
        else:
            result = gc_ops.collect(r, repack=repack, repack_threshold=repack_threshold)
            plan, freed = result.plan, result.freed_bytes
    if json_output:
        emit_json({"dry_run": dry_run, **_gc_plan_doc(plan), "freed_bytes": freed})
        return
    head = "would free" if dry_run else "freed"
    amount = plan.freed_bytes if freed is None else freed
    if plan.repack_threshold is not None:
        verb = "would repack" if dry_run else "repacked"
        out(
            f"{head} {format_size(amount)}: {len(plan.dead_chunks)} unreferenced chunks, "
            f"{len(plan.delete_packs)} packs removed, {verb} {len(plan.repack)} packs "
            f"(live fraction below {plan.repack_threshold:g}) writing {format_size(plan.repack_bytes)}, "
            f"scratch space {format_size(plan.scratch_bytes)}"
        )
        return
    out(
        f"{head} {format_size(amount)}: {len(plan.dead_chunks)} unreferenced chunks, "
        f"{len(plan.punch)} ranges punched, {len(plan.delete_packs)} packs removed"
        + (f", {len(plan.truncate)} unindexed pack tails cut" if plan.truncate else "")
    )


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
    select = snapshot_filter(tag, host)
    policy = KeepPolicy(
        keep_last,
        keep_hourly,
        keep_daily,
        keep_weekly,
        keep_monthly,
        keep_yearly,
        parse_duration(keep_within) if keep_within else None,
    )
    quota_bytes = parse_size(quota) if quota else None
    if quota_bytes is not None:
        check_quota(quota_bytes)
    now = datetime.now(UTC)
    with open_repo(repo, Mode.READ if dry_run else Mode.EXCLUSIVE) as r:
        if quota_bytes is None:
            quota_bytes = r.config.quota_bytes
        plan = prune_ops.plan(r, policy, now, quota_bytes=quota_bytes, select=select)
        kept = [s for s in r.list_snapshots() if s.id in plan.keep]
        freed = None if dry_run else prune_ops.apply(r, plan).gc.freed_bytes
        disk_after = plan.expected_disk_bytes if freed is None else r.disk_usage()
    if json_output:
        emit_json(
            {
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
        )
        return
    verb = "would drop" if dry_run else "dropped"
    for s in plan.drop:
        why = "quota" if s.id in plan.by_quota else "keep rules"
        out(f"{verb} {s.hex[:12]}  {when(s.created, utc=GLOBAL.utc)}  {safe(s.name)}  ({why})")
    if not plan.drop:
        info("nothing to drop")
    amount = plan.freed_bytes if freed is None else freed
    out(
        f"{'would free' if dry_run else 'freed'} {format_size(amount)}; disk usage "
        f"{format_size(plan.disk_bytes)} -> {format_size(disk_after)}"
        + (f" (quota {format_size(quota_bytes)})" if quota_bytes else "")
    )
