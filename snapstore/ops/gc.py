"""gc: free the space of chunks no snapshot references, with no scratch space.

Plan (pure, snapstore/gcplan.py) from what the repository reports: its index entries, its
garbage list and its packs' sizes; then the repository applies it (Repository.apply_gc, in
the order docs/FORMAT.md gives: unindex and list dead ranges, remove dead packs and cut the
others back, punch). Killed at any point, a rerun finishes the job; a kept snapshot never
loses a chunk. While a published manifest cannot be read whole, gc frees nothing (it may
name any chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

from snapstore.errors import DamagedManifestsError
from snapstore.gcplan import GcPlan, PackRange, plan
from snapstore.repo import Mode, Repository

__all__ = ["GcPlan", "GcResult", "PackRange", "apply", "collect", "plan", "plan_for", "refuse_while_damaged"]


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


def plan_for(repo: Repository) -> GcPlan:
    """The plan for the repository as it is. While a published manifest cannot be read whole
    (the index's damaged table), nothing is planned: DamagedManifestsError."""
    refuse_while_damaged(repo)
    packs = repo.pack_sizes()
    sizes = {pack_id: allocated for pack_id, (allocated, _) in packs.items()}
    lengths = {pack_id: length for pack_id, (_, length) in packs.items()}
    return plan(repo.chunk_locations(), repo.garbage_ranges(), sizes, lengths)


def apply(repo: Repository, gc_plan: GcPlan) -> None:
    """Have the repository carry out a plan (it must be opened EXCLUSIVE)."""
    if repo.mode is not Mode.EXCLUSIVE:
        raise AssertionError("gc needs the repository opened EXCLUSIVE")
    refuse_while_damaged(repo)
    repo.apply_gc(gc_plan)


def collect(repo: Repository) -> GcResult:
    """Plan and apply gc; the reserve file gives the index room on a full disk."""
    before = repo.disk_usage()
    repo.release_reserve()
    try:
        gc_plan = plan_for(repo)
        apply(repo, gc_plan)
    finally:
        repo.restore_reserve()
    return GcResult(gc_plan, before, repo.disk_usage())
