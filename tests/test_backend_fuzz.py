"""Fuzzing the operations on the in-memory backend (issue 12, "Done when" 1): hypothesis runs
random sequences of commit, rm, gc (as planned, or repacking every pack with a dead record),
prune (keep rules), pin, unpin, repair (the index cache deleted, or rebuilt in place), and
commit, rm, gc or prune whose Nth backend call fails (EIO, ENOSPC, torn, crash) followed by a
restart, on a repository over the memory backend or the put-only one, against a model of
which snapshots exist and what each holds. After every step verify --read-data finds nothing, the
snapshots listed are the model's, and each reads back with its content's sha256.

The contents are versions of two small images (random, text and zero stretches) edited at
random places, so that snapshots share chunks and gc, repacking and prune have work.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import snapstore
from snapstore import KeepPolicy, Mode
from snapstore.backends import Fault, FaultyBackend
from snapstore.errors import SnapstoreError
from snapstore.model import SnapshotId
from snapstore.ops.repair import repair
from tests.backend_repos import MemRepo, new_repo, sha
from tests.helpers import content_sha, text_bytes

_rng = random.Random(12)
IMAGES = [
    _rng.randbytes(120_000) + text_bytes(120_000, seed=12) + bytes(60_000),
    text_bytes(80_000, seed=13) + _rng.randbytes(100_000),
]


class Operations(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="snap-fuzz-"))
        self.repo: MemRepo | None = None
        self.model: dict[SnapshotId, str] = {}  # snapshot -> sha256 of its content
        self.names: dict[SnapshotId, str] = {}
        self.order: dict[SnapshotId, tuple[bool, int, datetime, str]] = {}  # SnapshotInfo.order
        self.pinned: set[SnapshotId] = set()
        self.now = datetime.now(UTC)

    @property
    def r(self) -> MemRepo:
        assert self.repo is not None
        return self.repo

    @initialize(kind=st.sampled_from(["memory", "put-only"]))
    def start(self, kind: str) -> None:
        self.repo = new_repo(kind, self.tmp)

    def teardown(self) -> None:
        if self.repo is not None:
            self.repo.backend.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(
        image=st.integers(0, len(IMAGES) - 1),
        name=st.sampled_from(["a", "b"]),
        edits=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 40_000), st.integers(0, 2)), max_size=3),
        grow=st.integers(0, 50_000),
    )
    def commit(self, image: int, name: str, edits: list[tuple[float, int, int]], grow: int) -> None:
        data = bytearray(IMAGES[image])
        rng = random.Random(f"{image}{edits}{grow}")
        for where, length, what in edits:
            at = int(where * (len(data) - 1))
            data[at : at + length] = (rng.randbytes(length), bytes(length), text_bytes(length, seed=at))[what]
        data += rng.randbytes(grow)
        self.now += timedelta(hours=1)
        sid = self.r.commit(bytes(data), name, self.tmp / "src")
        self.model[sid] = sha(bytes(data))
        self.names[sid] = name
        with self.r.open() as r:
            self.order[sid] = r.load_info(sid).order

    @precondition(lambda self: self.model)
    @rule(pick=st.integers(0, 100))
    def rm(self, pick: int) -> None:
        sid = sorted(self.model)[pick % len(self.model)]
        with self.r.open(Mode.WRITE) as r:
            r.remove_snapshot(sid)
        del self.model[sid]
        self.pinned.discard(sid)

    @rule(repack=st.booleans())
    def gc(self, repack: bool) -> None:
        with self.r.open(Mode.EXCLUSIVE) as r:
            snapstore.gc(r, repack_threshold=1.0 if repack else None)
            assert snapstore.gc(r).plan.dead_chunks == (), "a second gc found more to free"

    @rule(last=st.integers(1, 3))
    def prune(self, last: int) -> None:
        with self.r.open(Mode.EXCLUSIVE) as r:
            order = [s.id for s in r.list_snapshots()]
            result = snapstore.prune(r, KeepPolicy(last=last), now=datetime.now(UTC) + timedelta(days=1))
        dropped = {s.id for s in result.plan.drop}
        assert not dropped & self.pinned, "prune dropped a pinned snapshot"
        for name in {self.names[s] for s in self.model}:
            of_name = [s for s in order if self.names[s] == name]
            assert not set(of_name[-last:]) & dropped, f"prune dropped one of the last {last} of {name}"
            assert set(of_name[:-last]) - self.pinned <= dropped, "prune kept one no rule keeps"
        for sid in dropped:
            del self.model[sid]

    @precondition(lambda self: self.model)
    @rule(pick=st.integers(0, 100), pin=st.booleans())
    def pin(self, pick: int, pin: bool) -> None:
        sid = sorted(self.model)[pick % len(self.model)]
        with self.r.open(Mode.WRITE) as r:
            (r.pin if pin else r.unpin)(sid)
        (self.pinned.add if pin else self.pinned.discard)(sid)

    @rule(drop_index=st.booleans(), read_data=st.booleans())
    def repair(self, drop_index: bool, read_data: bool) -> None:
        if drop_index:
            shutil.rmtree(self.r.cache / "index")
        with self.r.open(Mode.EXCLUSIVE, rebuild_index=True) as r:
            report = repair(r, read_data=read_data)
        assert report.damaged_snapshots == () and report.dropped_corrupt == 0, report

    @rule(
        op=st.sampled_from(["commit", "rm", "gc", "prune"]),
        nth=st.integers(1, 150),
        kind=st.sampled_from(["eio", "enospc", "torn", "crash"]),
        pick=st.integers(0, 100),
    )
    def under_a_fault(self, op: str, nth: int, kind: str, pick: int) -> None:
        """An operation whose Nth backend call fails, then a restart (the dead process's lock
        objects deleted, the next writer's recovery): the snapshots are the model's, less
        what the operation was removing, plus what it was committing."""
        faulty = FaultyBackend(self.r.backend, [Fault("*", nth, kind)])  # type: ignore[arg-type]
        order = sorted(self.model, key=lambda s: self.order[s])
        target = order[pick % len(order)] if order else None
        may_go: set[SnapshotId] = set()
        data = IMAGES[pick % len(IMAGES)] + random.Random(pick).randbytes(pick * 300)
        try:
            if op == "commit":
                src = self.tmp / "src"
                src.write_bytes(data)
                with self.r.open(Mode.WRITE, faulty) as r:
                    snapstore.commit_file(r, src, name="a")
            elif op == "rm" and target is not None:
                may_go = {target}
                with self.r.open(Mode.WRITE, faulty) as r:
                    r.remove_snapshot(target)
            elif op == "gc":
                with self.r.open(Mode.EXCLUSIVE, faulty) as r:
                    snapstore.gc(r)
            elif op == "prune":
                for name in {self.names[s] for s in order}:
                    may_go |= set([s for s in order if self.names[s] == name][:-1]) - self.pinned
                with self.r.open(Mode.EXCLUSIVE, faulty) as r:
                    snapstore.prune(r, KeepPolicy(last=1), now=datetime.now(UTC) + timedelta(days=1))
        except SnapstoreError as exc:
            assert faulty.injected and exc.exit_code == (8 if kind == "enospc" else 11), exc
        self.r.restart()
        with self.r.open(Mode.WRITE) as r:  # recovery
            listed = {s.id: s for s in r.list_snapshots()}
        gone = set(self.model) - set(listed)
        assert gone <= may_go, f"{op} under {kind} at call {nth} lost {gone - may_go}"
        for sid in gone:
            del self.model[sid]
            self.pinned.discard(sid)
        for sid in set(listed) - set(self.model):
            assert op == "commit", f"{op} made a snapshot"
            self.model[sid] = sha(data)
            self.names[sid] = "a"
            self.order[sid] = listed[sid].order

    @invariant()
    def matches_the_model(self) -> None:
        if self.repo is None:
            return
        with self.r.open(Mode.CHECK) as r:
            report = snapstore.verify(r, read_data=True)
            assert report.ok, [(p.kind, p.detail) for p in report.problems]
            assert {s.id for s in r.list_snapshots()} == set(self.model)
            assert r.pinned() & set(self.model) == self.pinned  # a removal killed may leave its pin
            for sid, digest in self.model.items():
                assert content_sha(r, sid) == digest, sid.hex()[:12]
        assert self.r.leftovers() == []


@settings(
    max_examples=30, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
class FewOperations(Operations):
    pass


@settings(
    max_examples=80, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
class ManyOperations(Operations):
    pass


TestOperationsAgainstAModel = FewOperations.TestCase
TestManyOperationsAgainstAModel = pytest.mark.slow(ManyOperations.TestCase)
