"""Which snapshots to keep (pure: snapshots and ``now`` in, a plan out).

"Newest" is by the snapshots' order (their sequence, then time: see SnapshotInfo.order), so
a commit made with the clock running behind is still the newest. Rules follow restic's
meaning: ``keep_last`` keeps the newest N; each calendar rule keeps the
newest snapshot of each of the N most recent hours/days/weeks/months/years that have one;
``keep_within`` keeps everything created less than that long before ``now``. Rules apply per
snapshot name. Pinned snapshots and the newest snapshot of every name are always kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from snapstore.model import SnapshotId, SnapshotInfo


@dataclass(frozen=True)
class KeepPolicy:
    """Which snapshots prune keeps, per snapshot name (the fields are the CLI's
    ``--keep-last``, ``--keep-hourly``... without ``keep_``): ``last`` newest N; the newest
    of each of the ``hourly``/``daily``/``weekly``/``monthly``/``yearly`` N most recent
    periods that have one; everything created ``within`` that long before now. Pinned
    snapshots and the newest of each name are always kept."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: timedelta | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.last
            or self.hourly
            or self.daily
            or self.weekly
            or self.monthly
            or self.yearly
            or self.within
        )


@dataclass(frozen=True)
class RetentionPlan:
    keep: dict[SnapshotId, tuple[str, ...]] = field(default_factory=dict)  # id -> reasons
    drop: tuple[SnapshotInfo, ...] = ()


_BUCKETS: tuple[tuple[str, Callable[[datetime], tuple[int, ...]]], ...] = (
    ("hourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("daily", lambda t: (t.year, t.month, t.day)),
    ("weekly", lambda t: t.isocalendar()[:2]),
    ("monthly", lambda t: (t.year, t.month)),
    ("yearly", lambda t: (t.year,)),
)


def protected(
    snapshots: Iterable[SnapshotInfo], pinned: AbstractSet[SnapshotId]
) -> dict[SnapshotId, list[str]]:
    """Snapshots no prune may drop: pinned ones and the newest of each name."""
    reasons: dict[SnapshotId, list[str]] = defaultdict(list)
    newest: dict[str, SnapshotInfo] = {}
    for s in snapshots:
        if s.id in pinned:
            reasons[s.id].append("pinned")
        if s.name not in newest or s.order > newest[s.name].order:
            newest[s.name] = s
    for s in newest.values():
        reasons[s.id].append("newest of its name")
    return reasons


def plan(
    snapshots: list[SnapshotInfo],
    policy: KeepPolicy,
    now: datetime,
    pinned: AbstractSet[SnapshotId] = frozenset(),
) -> RetentionPlan:
    """Keep what the policy, pins and newest-of-name protect; drop the rest.

    With an empty policy nothing is dropped by rules (only quota pruning may drop)."""
    reasons = protected(snapshots, pinned)
    if policy.empty:
        for s in snapshots:
            reasons.setdefault(s.id, []).append("no keep rule")
    by_name: dict[str, list[SnapshotInfo]] = defaultdict(list)
    for s in snapshots:
        by_name[s.name].append(s)
    for group in by_name.values():
        group.sort(key=lambda s: s.order, reverse=True)  # newest first
        for s in group[: policy.last]:
            reasons[s.id].append(f"last {policy.last}")
        for rule, bucket in _BUCKETS:
            count = getattr(policy, rule)
            seen: set[tuple[int, ...]] = set()
            for s in group:
                if len(seen) >= count:
                    break
                key = bucket(s.created)
                if key not in seen:
                    seen.add(key)
                    reasons[s.id].append(f"{rule} {count}")
        if policy.within is not None:
            for s in group:
                if now - s.created < policy.within:
                    reasons[s.id].append("within")
    keep = {sid: tuple(r) for sid, r in reasons.items() if r}
    drop = tuple(s for s in sorted(snapshots, key=lambda s: s.order) if s.id not in keep)
    return RetentionPlan(keep=keep, drop=drop)
