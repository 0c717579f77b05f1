"""gc: free the space of chunks no snapshot references, with no scratch space.

Plan (pure, snapstore/gcplan.py) from what the repository reports: its index entries, its
garbage list and its packs' sizes; then the repository applies it (Repository.apply_gc, in
the order docs/FORMAT.md gives: unindex and list dead ranges, remove dead packs and cut the
others back, punch). Killed at any point, a rerun finishes the job; a kept snapshot never
loses a chunk. While a published manifest cannot be read whole, gc frees nothing (it may
name any chunk).

Repacking (``repack``, and the only way where the repository cannot punch holes): packs
whose live fraction is below a threshold have their live records copied to a new pack, one
pack at a time, and are then removed; nothing is punched or cut.
"""

from __future__ import annotations

from dataclasses import dataclass

from snapstore.errors import DamagedManifestsError, UsageError
from snapstore.gcplan import DEFAULT_REPACK_THRESHOLD, GcPlan, PackRange, Repack, plan
from snapstore.repo import Mode, Repository

__all__ = [
    "DEFAULT_REPACK_THRESHOLD",
    "GcPlan",
    "GcResult",
    "PackRange",
    "Repack",
    "apply",
    "collect",
    "plan",
    "plan_for",
    "refuse_while_damaged",
    "repack_threshold_for",
]


@dataclass(frozen=True)
class GcResult:
    plan: GcPlan
    disk_before: int
    disk_after: int

    @property
    def freed_bytes(self) -> int:
        return self.disk_before - self.disk_after


def refuse_while_damaged(repo: Repository) -> None:
    """DamagedManifestsError while a published manifest cannot be read whole (the index's
    damaged table): it may name any chunk, so nothing may be freed."""
    damaged = repo.damaged_manifests()
    if damaged:
        raise DamagedManifestsError(damaged)


def garbage_bytes(repo: Repository) -> int:
    """What gc would free now, without planning it: the pack bytes of unreferenced chunks
    (the index keeps their total) and the ranges a killed gc left on the garbage list."""
    return repo.space_totals().garbage_bytes + sum(length for _, _, length in repo.garbage_ranges())


def repack_threshold_for(repo: Repository, repack: bool, threshold: float | None) -> float | None:
    """The live fraction below which packs are repacked, or None to punch holes: repacking
    when asked (``repack``, or a ``threshold``) or when the repository cannot punch."""
    if threshold is not None and not 0 < threshold <= 1:
        raise UsageError(f"the repack threshold must be above 0 and at most 1, not {threshold}")
    if threshold is None and (repack or not repo.can_punch()):
        threshold = DEFAULT_REPACK_THRESHOLD
    return threshold


def plan_for(repo: Repository, *, repack: bool = False, repack_threshold: float | None = None) -> GcPlan:
    """The plan for the repository as it is. While a published manifest cannot be read whole
    (the index's damaged table), nothing is planned: DamagedManifestsError."""
    refuse_while_damaged(repo)
    threshold = repack_threshold_for(repo, repack, repack_threshold)
    packs = repo.pack_sizes()
    sizes = {pack_id: allocated for pack_id, (allocated, _) in packs.items()}
    lengths = {pack_id: length for pack_id, (_, length) in packs.items()}
    return plan(repo.chunk_locations(), repo.garbage_ranges(), sizes, lengths, repack_threshold=threshold)


def apply(repo: Repository, gc_plan: GcPlan) -> None:
    """Have the repository carry out a plan (it must be opened EXCLUSIVE)."""
    if repo.mode is not Mode.EXCLUSIVE:
        raise AssertionError("gc needs the repository opened EXCLUSIVE")
    refuse_while_damaged(repo)
    repo.apply_gc(gc_plan)


def collect(repo: Repository, *, repack: bool = False, repack_threshold: float | None = None) -> GcResult:
    """Plan and apply gc; the reserve file gives the index room on a full disk."""
    before = repo.disk_usage()
    repo.release_reserve()
    try:
        gc_plan = plan_for(repo, repack=repack, repack_threshold=repack_threshold)
        apply(repo, gc_plan)
    finally:
        repo.restore_reserve()
    return GcResult(gc_plan, before, repo.disk_usage())
