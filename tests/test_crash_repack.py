"""Crash safety of ``snap gc --repack``: killed anywhere, no kept snapshot loses a byte,
verify passes as the kill left it, an index rebuilt from the packs then (each moved chunk in
two packs) is right, and the next gc removes the leftovers (an orphan new pack, or an old
pack whose records all moved).

As in test_crash_space: real ``snap gc --repack`` subprocesses get SIGKILL at moments spread
over their working time, and in process a simulated death (an exception nothing catches, with
no clean-up of the new pack) is raised before each step in turn: every record copied, the
seal of each new pack, every index transaction, every pack removal.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from snapstore import Mode, Repository
from snapstore.ops import gc
from snapstore.storage.packstore import PackWriter
from tests.helpers import copy_repository
from tests.test_crash_space import (
    Base,
    Killed,
    Scenario,
    assert_finished,
    assert_intact,
    build_history,
    points_counts,
    rm_in_process,
    run_kill_points,
    snap,
    snap_ok,
    verified,
)

pytestmark = pytest.mark.slow
MiB = 1 << 20
REPACK = ["gc", "--repack-threshold", "1"]  # every pack with a dead record is repacked
ORDER: list[str] = []  # the steps of the last run under die_before


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """6 versions of 8 MiB, 150 rewritten pieces each, in 1 MiB packs."""
    root = tmp_path_factory.mktemp("repack-base")
    return build_history(
        root / "base", seed=11, size=8 * MiB, versions=6, pieces=150, scratch_at=(1,), scratch=MiB
    )


def test_sigkill_gc_repack(base: Base, tmp_path: Path, report_count: Any) -> None:
    removed = [*base.disk[:3], base.scratch[0]]
    sc = Scenario(
        "gc --repack",
        prepare=lambda repo: rm_in_process(repo, removed),
        command=REPACK,
        keep=base.disk[3:],
        gone=removed,
        rerun=lambda repo: snap_ok(*REPACK, "-r", str(repo)),
    )
    report_count("crash", "gc --repack (SIGKILL)", **points_counts(run_kill_points(base, sc, 16, tmp_path)))


@contextmanager
def die_before(repo: Repository, step: int | None) -> Iterator[Counter[str]]:
    """Count the steps a repack takes; raise Killed just before step number ``step``. After
    the death a new pack is left as it is (a killed process cleans nothing up)."""
    seen: Counter[str] = Counter()
    order: list[str] = []  # the steps' names, in order (seen["order"] is not a count)
    dead = [False]

    def wrap(real: Callable[..., Any], name: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen["total"] += 1
            seen[name] += 1
            order.append(name)
            if step is not None and seen["total"] == step:
                dead[0] = True
                raise Killed(f"before {name} (step {step})")
            return real(*args, **kwargs)

        return wrapper

    def abort(writer: PackWriter) -> None:
        if not dead[0]:
            real_abort(writer)

    repo._index.write = wrap(repo._index.write, "write")  # type: ignore[method-assign]
    repo._packs.delete = wrap(repo._packs.delete, "delete")  # type: ignore[method-assign]
    real_append, real_seal, real_abort = PackWriter.append, PackWriter.seal, PackWriter.abort
    PackWriter.append = wrap(real_append, "append")  # type: ignore[method-assign]
    PackWriter.seal = wrap(real_seal, "seal")  # type: ignore[method-assign]
    PackWriter.abort = abort  # type: ignore[method-assign,assignment]
    try:
        yield seen
    finally:
        ORDER[:] = order
        PackWriter.append, PackWriter.seal, PackWriter.abort = (  # type: ignore[method-assign]
            real_append,
            real_seal,
            real_abort,
        )


def repack(r: Repository) -> object:
    return gc.collect(r, repack_threshold=1.0)


def test_gc_repack_dies_before_each_step(base: Base, tmp_path: Path) -> None:
    removed = [*base.disk[:3], base.scratch[0]]
    expected = {sid: base.digests[sid] for sid in base.disk[3:]}
    ref = copy_repository(base.path, tmp_path / "ref")
    rm_in_process(ref, removed)
    with Repository.open(ref, Mode.EXCLUSIVE) as r, die_before(r, None) as seen:
        plan = repack(r)
    assert seen["seal"] >= 4 and seen["delete"] >= 4, f"too few packs repacked to test: {dict(seen)}"
    steps = seen["total"]

    # Before 4 of each kind of step, spread from the first to the last (seal, index
    # transaction, removal), and before 6 of the copies: every kind of death at the start,
    # in the middle and at the end of a run, in a CI-sized number of runs.
    def spread(name: str, n: int) -> set[int]:
        at = [i + 1 for i, step in enumerate(ORDER) if step == name]
        return {at[(k * (len(at) - 1)) // (n - 1)] for k in range(n)}

    points = sorted(spread("seal", 4) | spread("write", 4) | spread("delete", 4) | spread("append", 6))
    tally = Counter[str]()
    for step in points:
        when = f"killed before step {step} of {steps}"
        repo = copy_repository(base.path, tmp_path / "work")
        rm_in_process(repo, removed)
        with pytest.raises(Killed) as died, Repository.open(repo, Mode.EXCLUSIVE) as r, die_before(r, step):
            repack(r)
        tally[str(died.value).split(" (")[0]] += 1
        assert_intact(repo, expected, tmp_path, when, full=False)
        verified(repo, when)
        # An index rebuilt from the packs as the kill left them (moved chunks in two packs).
        rebuilt = copy_repository(repo, tmp_path / "rebuilt")
        shutil.rmtree(rebuilt / "index")
        res = snap("repair", "-r", str(rebuilt))
        assert res.returncode == 0, f"{when}: repair: {res.stdout.decode()}{res.stderr.decode()}"
        assert_intact(rebuilt, expected, tmp_path, f"{when}, index rebuilt", full=False)
        verified(rebuilt, f"{when}, index rebuilt")
        snap_ok(*REPACK, "-r", str(rebuilt))
        assert_intact(rebuilt, expected, tmp_path, f"{when}, index rebuilt, gc", full=False)
        assert_finished(rebuilt, f"{when}, index rebuilt, gc")
        # The next gc removes the leftovers.
        snap_ok(*REPACK, "-r", str(repo))
        assert_intact(repo, expected, tmp_path, f"{when}, after the rerun", full=False)
        assert_finished(repo, f"{when}, after the rerun")
    assert tally["before seal"] >= 4 and tally["before delete"] >= 4 and tally["before write"] >= 4, tally
    del plan
