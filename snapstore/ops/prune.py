"""prune: drop snapshots by keep rules and/or to fit a storage quota, then free their space.

Planning reads only: retention rules (pure) pick what they drop, then, while the predicted
disk usage is over the quota, the oldest snapshot that nothing protects is added. If even
that cannot reach the quota, nothing is dropped and QuotaError says how much is missing.
Applying removes the snapshots (each atomically, see Repository.remove_snapshot) and runs
gc, so a rerun after kill -9 finishes the job.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from snapstore import retention
from snapstore.errors import LockedError, QuotaError
from snapstore.model import SnapshotId, SnapshotInfo
from snapstore.ops import gc
from snapstore.ops.space import freed_by_removing
from snapstore.repo import Repository
from snapstore.retention import KeepPolicy
from snapstore.selection import EVERY_SNAPSHOT, SnapshotFilter
from snapstore.units import format_size


class _Configured(enum.Enum):
    QUOTA = "the repository's configured quota"


CONFIGURED = _Configured.QUOTA  # plan()'s default quota: the one the repository's config sets


@dataclass(frozen=True)
class PrunePlan:
    drop: tuple[SnapshotInfo, ...]
    keep: dict[SnapshotId, tuple[str, ...]]
    quota_bytes: int | None
    disk_bytes: int  # now
    freed_bytes: int  # predicted: garbage already there + what dropping frees
    by_quota: tuple[SnapshotId, ...] = ()  # the dropped snapshots chosen for the quota

    @property
    def expected_disk_bytes(self) -> int:
        return max(0, self.disk_bytes - self.freed_bytes)


@dataclass(frozen=True)
class PruneResult:
    plan: PrunePlan
    gc: gc.GcResult


def plan(
    repo: Repository,
    policy: KeepPolicy,
    now: datetime,
    *,
    quota_bytes: int | _Configured | None = CONFIGURED,
    protect: frozenset[SnapshotId] = frozenset(),
    select: SnapshotFilter = EVERY_SNAPSHOT,
) -> PrunePlan:
    """What prune would drop (reads only): what ``policy`` does not keep, then, while the
    repository would stay over ``quota_bytes`` (default: its configured quota; None: no
    quota), its oldest unprotected snapshots. QuotaError if even that cannot reach it.

    Only the snapshots ``select`` matches are considered (restic's ``forget --tag/--host``):
    the others are neither dropped nor listed as kept, and the newest-of-name rule and the
    keep rules count among the matching snapshots only."""
    if isinstance(quota_bytes, _Configured):
        quota_bytes = repo.config.quota_bytes
    gc.refuse_while_damaged(repo)  # before anything is dropped
    snapshots = select.select(repo.list_snapshots())
    pinned = repo.pinned() | protect
    rp = retention.plan(snapshots, policy, now, pinned)
    drop = list(rp.drop)
    keep = dict(rp.keep)
    garbage = gc.garbage_bytes(repo)
    disk = repo.disk_usage()
    hard = retention.protected(snapshots, pinned)
    candidates = [s for s in snapshots if keep.get(s.id) == ("no keep rule",) and not hard.get(s.id)]
    freeing = freed_by_removing(repo, [s.id for s in (*drop, *candidates)])  # lazy, cumulative
    freed_by_drop = 0
    for _ in drop:
        freed_by_drop = next(freeing)
    by_quota: list[SnapshotId] = []
    if quota_bytes is not None:
        for s in candidates:
            if disk - garbage - freed_by_drop <= quota_bytes:
                break
            freed_by_drop = next(freeing)
            drop.append(s)
            by_quota.append(s.id)
            del keep[s.id]
        short = disk - garbage - freed_by_drop - quota_bytes
        if short > 0:
            raise QuotaError(
                f"cannot fit the repository in {format_size(quota_bytes)}: even after dropping every "
                f"unprotected snapshot it would use {format_size(disk - garbage - freed_by_drop)} "
                f"({format_size(short)} short); nothing was deleted",
                short_bytes=short,
            )
    freed = garbage + freed_by_drop
    return PrunePlan(tuple(drop), keep, quota_bytes, disk, freed, tuple(by_quota))


def apply(repo: Repository, prune_plan: PrunePlan) -> PruneResult:
    """Remove the planned snapshots, then gc (the repository must be opened EXCLUSIVE).

    The reserve file is released first so that the removals have room on a full disk; the
    disk usage before is measured before that, so the freed size does not count it."""
    before = repo.disk_usage()
    repo.release_reserve()
    try:
        for s in prune_plan.drop:
            repo.remove_snapshot(s.id)
        collected = gc.collect(repo)
    finally:
        repo.restore_reserve()
    return PruneResult(prune_plan, replace(collected, disk_before=before))


def prune(
    repo: Repository,
    policy: KeepPolicy,
    *,
    now: datetime | None = None,
    quota_bytes: int | _Configured | None = CONFIGURED,
    select: SnapshotFilter = EVERY_SNAPSHOT,
) -> PruneResult:
    """Plan and apply prune (``snap prune``): the repository must be opened ``Mode.EXCLUSIVE``.
    ``select``: only the snapshots it matches are considered (see :func:`plan`)."""
    return apply(repo, plan(repo, policy, now or datetime.now(UTC), quota_bytes=quota_bytes, select=select))


def enforce_quota(
    repo: Repository, now: datetime, *, protect: frozenset[SnapshotId] = frozenset()
) -> PruneResult | None:
    """Prune oldest unprotected snapshots until the repository quota holds (None: it held).
    The repository must be opened EXCLUSIVE."""
    quota = repo.config.quota_bytes
    if quota is None or repo.disk_usage() <= quota:
        return None
    return apply(repo, plan(repo, KeepPolicy(), now, quota_bytes=quota, protect=protect))


@dataclass(frozen=True)
class QuotaOutcome:
    pruned: PruneResult | None = None
    deferred: bool = False  # a reader held the data lock: the repository stays over quota for now


def keep_within_quota(
    repo: Repository, now: datetime, new_snapshot: SnapshotId | None = None
) -> QuotaOutcome:
    """Enforce the repository quota around a commit (repository opened WRITE).

    Before a commit (``new_snapshot`` None) this makes room where it can. After it, the oldest
    unprotected snapshots go; if the new snapshot cannot fit even then, it is removed again,
    its chunks freed, and QuotaError raised: the repository is as it was before the commit.
    """
    quota = repo.config.quota_bytes
    if quota is None or repo.disk_usage() <= quota:
        return QuotaOutcome()
    try:
        repo.upgrade()
    except LockedError:
        return QuotaOutcome(deferred=True)
    protect = frozenset() if new_snapshot is None else frozenset({new_snapshot})
    try:
        return QuotaOutcome(enforce_quota(repo, now, protect=protect))
    except QuotaError as exc:
        if new_snapshot is None:
            return QuotaOutcome()
        repo.remove_snapshot(new_snapshot)
        gc.collect(repo)
        raise QuotaError(
            f"the new snapshot does not fit in the repository quota of {format_size(quota)} "
            f"({format_size(exc.short_bytes)} short even after pruning); it was not kept",
            short_bytes=exc.short_bytes,
        ) from exc
