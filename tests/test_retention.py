"""Retention rules (snapstore/retention.py) on synthetic histories with an injected ``now``.

Every test builds SnapshotInfo objects by hand, so the times are exact and the expected
plan can be written down. The property tests compare the plan with an independent model of
the rules (restic's meaning: the newest snapshot of each of the N most recent periods that
have one) and check the invariants prune relies on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapstore.model import SnapshotId, SnapshotInfo
from snapstore.retention import KeepPolicy, RetentionPlan, plan, protected

NOW = datetime(2024, 6, 15, 12, 0, 0, tzinfo=UTC)


def snap(created: datetime, name: str = "disk", tag: str = "") -> SnapshotInfo:
    ident = SnapshotId(hashlib.sha256(f"{name}|{created.isoformat()}|{tag}".encode()).digest())
    return SnapshotInfo(id=ident, name=name, created=created, message=tag, size=1, entries=1, chunk_refs=1)


def at(text: str) -> datetime:
    """'2024-03-10 23:00' (UTC)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def kept(p: RetentionPlan, snaps: list[SnapshotInfo]) -> list[str]:
    """The kept snapshots' creation times, oldest first (readable in assertion messages)."""
    return [f"{s.created:%Y-%m-%d %H:%M}" for s in snaps if s.id in p.keep]


def dropped(p: RetentionPlan) -> list[str]:
    return [f"{s.created:%Y-%m-%d %H:%M}" for s in p.drop]


def check_partition(p: RetentionPlan, snaps: list[SnapshotInfo]) -> None:
    ids = {s.id for s in snaps}
    drop_ids = [s.id for s in p.drop]
    assert len(drop_ids) == len(set(drop_ids)), "a snapshot is dropped twice"
    assert set(p.keep).isdisjoint(drop_ids), "a snapshot is both kept and dropped"
    assert set(p.keep) | set(drop_ids) == ids, "keep and drop do not cover the input"
    assert all(p.keep[sid] for sid in p.keep), "a kept snapshot has no reason"


# -- single rules -----------------------------------------------------------------------------


def test_empty_policy_drops_nothing() -> None:
    snaps = [snap(NOW - timedelta(days=d)) for d in range(30)]
    p = plan(snaps, KeepPolicy(), NOW)
    assert p.drop == ()
    assert set(p.keep) == {s.id for s in snaps}
    assert all("no keep rule" in reasons for reasons in p.keep.values())
    check_partition(p, snaps)


def test_empty_history() -> None:
    p = plan([], KeepPolicy(last=3, daily=7), NOW)
    assert p.drop == () and p.keep == {}


def test_keep_last_keeps_the_newest_n_and_drops_oldest_first() -> None:
    snaps = [snap(NOW - timedelta(hours=h)) for h in range(10)]  # newest first
    p = plan(snaps, KeepPolicy(last=3), NOW)
    assert set(p.keep) == {s.id for s in snaps[:3]}
    assert [s.id for s in p.drop] == [s.id for s in reversed(snaps[3:])]  # oldest first
    assert p.keep[snaps[2].id] == ("last 3",)
    check_partition(p, snaps)


def test_keep_last_larger_than_history_keeps_all() -> None:
    snaps = [snap(NOW - timedelta(days=d)) for d in range(4)]
    assert plan(snaps, KeepPolicy(last=10), NOW).drop == ()


def test_hourly_keeps_newest_of_each_recent_hour() -> None:
    times = ["2024-06-15 09:10", "2024-06-15 09:50", "2024-06-15 10:00", "2024-06-15 10:59",
             "2024-06-15 11:30", "2024-06-15 11:45"]  # fmt: skip
    snaps = [snap(at(t)) for t in times]
    p = plan(snaps, KeepPolicy(hourly=2), NOW)
    assert kept(p, snaps) == ["2024-06-15 10:59", "2024-06-15 11:45"]
    p = plan(snaps, KeepPolicy(hourly=5), NOW)  # only three hours have snapshots
    assert kept(p, snaps) == ["2024-06-15 09:50", "2024-06-15 10:59", "2024-06-15 11:45"]


def test_daily_skips_days_without_snapshots() -> None:
    times = ["2024-06-01 08:00", "2024-06-01 20:00", "2024-06-05 00:00", "2024-06-05 23:59",
             "2024-06-09 12:00", "2024-06-14 01:00", "2024-06-14 02:00"]  # fmt: skip
    snaps = [snap(at(t)) for t in times]
    p = plan(snaps, KeepPolicy(daily=3), NOW)
    # the three most recent days that have a snapshot: 14th, 9th, 5th (not 13th, 12th, ...)
    assert kept(p, snaps) == ["2024-06-05 23:59", "2024-06-09 12:00", "2024-06-14 02:00"]
    assert dropped(p) == ["2024-06-01 08:00", "2024-06-01 20:00", "2024-06-05 00:00", "2024-06-14 01:00"]
    assert p.keep[snaps[3].id] == ("daily 3",)


def test_daily_boundary_is_midnight_utc() -> None:
    snaps = [snap(at("2024-06-13 23:59")), snap(at("2024-06-14 00:00"))]
    p = plan(snaps, KeepPolicy(daily=2), NOW)
    assert len(p.keep) == 2 and p.drop == ()


def test_weekly_uses_iso_weeks_monday_to_sunday() -> None:
    # 2024-03-04 is a Monday (W10), 2024-03-10 the Sunday of W10, 2024-03-11 Monday of W11.
    times = ["2024-03-04 10:00", "2024-03-09 10:00", "2024-03-10 23:59", "2024-03-11 00:00",
             "2024-03-12 00:00"]  # fmt: skip
    snaps = [snap(at(t)) for t in times]
    p = plan(snaps, KeepPolicy(weekly=2), NOW)
    assert kept(p, snaps) == ["2024-03-10 23:59", "2024-03-12 00:00"]
    p = plan(snaps, KeepPolicy(weekly=1), NOW)
    assert kept(p, snaps) == ["2024-03-12 00:00"]


def test_weekly_across_the_new_year() -> None:
    # 2020-12-31 (Thu) and 2021-01-03 (Sun) are both in ISO week 2020-W53; 2021-01-04 is W01.
    times = ["2020-12-20 12:00", "2020-12-31 12:00", "2021-01-03 12:00", "2021-01-04 12:00"]
    snaps = [snap(at(t)) for t in times]
    p = plan(snaps, KeepPolicy(weekly=2), NOW)
    assert kept(p, snaps) == ["2021-01-03 12:00", "2021-01-04 12:00"]
    p = plan(snaps, KeepPolicy(weekly=3), NOW)
    assert kept(p, snaps) == ["2020-12-20 12:00", "2021-01-03 12:00", "2021-01-04 12:00"]


def test_monthly_keeps_last_of_each_month() -> None:
    times = ["2024-01-01 00:00", "2024-01-31 23:59", "2024-02-01 00:00", "2024-02-29 18:00",
             "2024-03-01 00:00", "2024-05-20 00:00"]  # fmt: skip
    snaps = [snap(at(t)) for t in times]
    p = plan(snaps, KeepPolicy(monthly=3), NOW)
    # April has none: the three months are May, March, February
    assert kept(p, snaps) == ["2024-02-29 18:00", "2024-03-01 00:00", "2024-05-20 00:00"]
    p = plan(snaps, KeepPolicy(monthly=12), NOW)
    assert kept(p, snaps) == ["2024-01-31 23:59", "2024-02-29 18:00", "2024-03-01 00:00",
                              "2024-05-20 00:00"]  # fmt: skip


def test_yearly_keeps_last_of_each_year() -> None:
    times = ["2020-06-01 00:00", "2022-01-01 00:00", "2022-12-31 23:59", "2023-01-01 00:00",
             "2023-07-01 00:00"]  # fmt: skip
    snaps = [snap(at(t)) for t in times]
    p = plan(snaps, KeepPolicy(yearly=2), NOW)
    assert kept(p, snaps) == ["2022-12-31 23:59", "2023-07-01 00:00"]
    p = plan(snaps, KeepPolicy(yearly=3), NOW)  # 2021 has none
    assert kept(p, snaps) == ["2020-06-01 00:00", "2022-12-31 23:59", "2023-07-01 00:00"]


def test_keep_within_is_relative_to_now_and_exclusive() -> None:
    ages = [timedelta(hours=1), timedelta(days=6, hours=23), timedelta(days=7), timedelta(days=8)]
    snaps = [snap(NOW - a) for a in ages]
    # the newest is also "newest of its name"; the others are kept by the rule alone
    p = plan(snaps, KeepPolicy(within=timedelta(days=7)), NOW)
    assert {s.id for s in p.drop} == {snaps[2].id, snaps[3].id}
    assert p.keep[snaps[1].id] == ("within",)
    # the same history a week later: only the newest survives, for being the newest
    p = plan(snaps, KeepPolicy(within=timedelta(days=7)), NOW + timedelta(days=7))
    assert set(p.keep) == {snaps[0].id}
    assert p.keep[snaps[0].id] == ("newest of its name",)


# -- combinations, names, protection ------------------------------------------------------------


def test_rules_combine_as_a_union_with_every_reason() -> None:
    snaps = [snap(NOW - timedelta(hours=6 * i)) for i in range(20)]  # 4 a day for 5 days
    p = plan(snaps, KeepPolicy(last=2, daily=3), NOW)
    by_last = {s.id for s in snaps[:2]}
    newest_per_day: dict[object, SnapshotInfo] = {}
    for s in snaps:  # newest first
        newest_per_day.setdefault(s.created.date(), s)
    by_daily = {s.id for s in list(newest_per_day.values())[:3]}
    assert set(p.keep) == by_last | by_daily
    assert len(p.keep) < 5, "the two rules should overlap on the newest snapshot"
    assert set(p.keep[snaps[0].id]) >= {"last 2", "daily 3", "newest of its name"}
    check_partition(p, snaps)


def test_within_and_monthly_together() -> None:
    snaps = [snap(NOW - timedelta(days=d)) for d in range(0, 120, 3)]
    p = plan(snaps, KeepPolicy(monthly=2, within=timedelta(days=10)), NOW)
    recent = {s.id for s in snaps if NOW - s.created < timedelta(days=10)}
    assert recent <= set(p.keep)
    may = [s for s in snaps if s.created.month == 5]
    assert max(may, key=lambda s: s.created).id in p.keep
    assert all(s.created.month in (6, 5) for s in snaps if s.id in p.keep)
    check_partition(p, snaps)


def test_rules_apply_per_name() -> None:
    a = [snap(NOW - timedelta(hours=h), "a") for h in range(0, 10, 2)]
    b = [snap(NOW - timedelta(hours=h), "b") for h in range(1, 30, 2)]
    snaps = sorted(a + b, key=lambda s: s.created)
    p = plan(snaps, KeepPolicy(last=2), NOW)
    assert {s.id for s in snaps if s.id in p.keep} == {a[0].id, a[1].id, b[0].id, b[1].id}
    # daily per name: 'a' spans one day, 'b' two (NOW is noon; b reaches back 29 hours)
    p = plan(snaps, KeepPolicy(daily=5), NOW)
    assert {s.id for s in snaps if s.id in p.keep} == {a[0].id, b[0].id, b[6].id}


def test_newest_of_each_name_is_always_kept() -> None:
    old = [snap(NOW - timedelta(days=400 + d), "old-vm") for d in range(3)]
    new = [snap(NOW - timedelta(hours=h), "new-vm") for h in range(3)]
    snaps = old + new
    p = plan(snaps, KeepPolicy(within=timedelta(days=1)), NOW)
    assert old[0].id in p.keep  # 400 days old, but the newest of 'old-vm'
    assert p.keep[old[0].id] == ("newest of its name",)
    assert {s.id for s in p.drop} == {old[1].id, old[2].id}


def test_pinned_snapshots_are_always_kept() -> None:
    snaps = [snap(NOW - timedelta(days=d)) for d in range(10)]
    pinned = {snaps[9].id, snaps[5].id}
    p = plan(snaps, KeepPolicy(last=1), NOW, pinned)
    assert set(p.keep) == {snaps[0].id, *pinned}
    assert p.keep[snaps[9].id] == ("pinned",)
    assert len(p.drop) == 7
    check_partition(p, snaps)


def test_pins_of_unknown_snapshots_are_ignored() -> None:
    snaps = [snap(NOW - timedelta(days=d)) for d in range(3)]
    p = plan(snaps, KeepPolicy(last=1), NOW, {SnapshotId(b"\x01" * 32)})
    assert len(p.keep) == 1 and len(p.drop) == 2
    assert b"\x01" * 32 not in p.keep


def test_ties_in_time_are_broken_by_id_consistently() -> None:
    same = [snap(NOW, tag=str(i)) for i in range(4)]
    p = plan(same, KeepPolicy(last=1), NOW)
    newest = max(same, key=lambda s: (s.created, s.hex))
    assert set(p.keep) == {newest.id}
    assert protected(same, frozenset())[newest.id] == ["newest of its name"]


COUNT_RULES: dict[str, Callable[[int], KeepPolicy]] = {
    "last": lambda n: KeepPolicy(last=n),
    "hourly": lambda n: KeepPolicy(hourly=n),
    "daily": lambda n: KeepPolicy(daily=n),
    "weekly": lambda n: KeepPolicy(weekly=n),
    "monthly": lambda n: KeepPolicy(monthly=n),
    "yearly": lambda n: KeepPolicy(yearly=n),
}


def count_policy(rule: str, n: int) -> KeepPolicy:
    """The policy whose one count rule ``rule`` (a field of KeepPolicy) keeps n."""
    return COUNT_RULES[rule](n)


def test_policy_empty_property() -> None:
    assert KeepPolicy().empty
    for field in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        assert not count_policy(field, 1).empty
        assert getattr(count_policy(field, 1), field) == 1
    assert set(COUNT_RULES) == {f.name for f in fields(KeepPolicy)} - {"within"}
    assert not KeepPolicy(within=timedelta(hours=1)).empty


# -- properties ---------------------------------------------------------------------------------

BUCKETS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


def model_keep(
    snaps: list[SnapshotInfo], policy: KeepPolicy, now: datetime, pinned: set[SnapshotId]
) -> set[SnapshotId]:
    """An independent statement of the rules: which ids are kept."""
    keep = {s.id for s in snaps if s.id in pinned}
    names = {s.name for s in snaps}
    rule_free = policy.empty
    for name in names:
        group = sorted((s for s in snaps if s.name == name), key=lambda s: (s.created, s.hex))
        keep.add(group[-1].id)
        if rule_free:
            keep.update(s.id for s in group)
            continue
        keep.update(s.id for s in group[max(0, len(group) - policy.last) :] if policy.last)
        for rule, bucket in BUCKETS.items():
            n = getattr(policy, rule)
            newest_in: dict[tuple[int, ...], SnapshotInfo] = {}
            for s in group:  # oldest first: the last one seen in a bucket is its newest
                newest_in[bucket(s.created)] = s
            recent = sorted(newest_in, reverse=True)[:n]
            keep.update(newest_in[k].id for k in recent)
        if policy.within is not None:
            keep.update(s.id for s in group if now - s.created < policy.within)
    return keep


moments = st.datetimes(
    min_value=datetime(2019, 12, 1), max_value=datetime(2021, 2, 1), timezones=st.just(UTC)
)
histories = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), moments, st.integers(0, 3)),
    max_size=40,
    unique_by=lambda t: (t[0], t[1], t[2]),
).map(lambda rows: [snap(t, name, str(tag)) for name, t, tag in rows])
policies = st.builds(
    KeepPolicy,
    last=st.integers(0, 5),
    hourly=st.integers(0, 4),
    daily=st.integers(0, 4),
    weekly=st.integers(0, 4),
    monthly=st.integers(0, 4),
    yearly=st.integers(0, 3),
    within=st.one_of(st.none(), st.timedeltas(min_value=timedelta(hours=1), max_value=timedelta(days=90))),
)


@settings(max_examples=400)
@given(snaps=histories, policy=policies, now=moments, data=st.data())
def test_plan_properties(
    snaps: list[SnapshotInfo], policy: KeepPolicy, now: datetime, data: st.DataObject
) -> None:
    pinned = set(data.draw(st.sets(st.sampled_from([s.id for s in snaps])) if snaps else st.just(set())))
    p = plan(list(snaps), policy, now, pinned)
    check_partition(p, snaps)
    drop_ids = {s.id for s in p.drop}
    assert not drop_ids & pinned, "a pinned snapshot is dropped"
    for name in {s.name for s in snaps}:
        newest = max((s for s in snaps if s.name == name), key=lambda s: (s.created, s.hex))
        assert newest.id not in drop_ids, f"the newest snapshot of {name!r} is dropped"
    if policy.empty:
        assert not drop_ids
    assert [s.id for s in p.drop] == [s.id for s in sorted(p.drop, key=lambda s: (s.created, s.hex))], (
        "drop is not oldest first"
    )
    assert set(p.keep) == model_keep(snaps, policy, now, pinned)


@settings(max_examples=200)
@given(snaps=histories, policy=policies, now=moments)
def test_more_permissive_policy_never_keeps_less(
    snaps: list[SnapshotInfo], policy: KeepPolicy, now: datetime
) -> None:
    if policy.empty:
        return
    bigger = KeepPolicy(
        policy.last + 1,
        policy.hourly,
        policy.daily + 1,
        policy.weekly,
        policy.monthly + 1,
        policy.yearly,
        policy.within,
    )
    assert set(plan(snaps, policy, now).keep) <= set(plan(snaps, bigger, now).keep)


@pytest.mark.parametrize("rule", ["hourly", "daily", "weekly", "monthly", "yearly"])
@settings(max_examples=100)
@given(snaps=histories, n=st.integers(1, 4))
def test_calendar_rule_keeps_at_most_n_per_name(rule: str, snaps: list[SnapshotInfo], n: int) -> None:
    p = plan(snaps, count_policy(rule, n), NOW)
    for name in {s.name for s in snaps}:
        by_rule = [
            sid
            for sid, why in p.keep.items()
            if f"{rule} {n}" in why and sid in {s.id for s in snaps if s.name == name}
        ]
        buckets = {BUCKETS[rule](s.created) for s in snaps if s.name == name}
        assert len(by_rule) == min(n, len(buckets))


def test_newest_is_by_sequence_then_time() -> None:
    """A snapshot with a sequence is newer than every one without; among those with one the
    higher sequence is newer whatever the clock said (issue 11, point 10)."""
    old = snap(at("2024-06-01 10:00"), tag="old")  # written before sequences existed
    a = replace(snap(at("2024-06-10 10:00"), tag="a"), sequence=1)
    b = replace(snap(at("2024-06-11 10:00"), tag="b"), sequence=2)
    behind = replace(snap(at("2024-01-01 00:00"), tag="behind"), sequence=3)
    snaps = [old, a, b, behind]
    p = plan(snaps, KeepPolicy(last=2), NOW)
    assert set(p.keep) == {b.id, behind.id} and p.drop == (old, a)
    assert protected(snaps, set())[behind.id] == ["newest of its name"]
    assert sorted(snaps, key=lambda s: s.order) == [old, a, b, behind]
