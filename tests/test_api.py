"""The Python API does what the CLI promises (issue 18, point 5): commit_file keeps the
repository quota, prune's plan uses the configured quota, auto-init is an explicit option,
and the public API is curated, typed (py.typed) and documented."""

from __future__ import annotations

import inspect
import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

import snapstore
from snapstore import KeepPolicy, Mode, SnapshotInfo
from snapstore.errors import QuotaError, RepositoryNotFoundError
from snapstore.ops import prune as prune_ops
from snapstore.repo import Repository
from tests.conftest import SMALL_CHUNKER

MiB = 1 << 20


def _files(tmp_path: Path, n: int, size: int) -> list[Path]:
    out = []
    for i in range(n):
        path = tmp_path / f"img{i}"
        path.write_bytes(random.Random(i).randbytes(size))  # incompressible, no dedup
        out.append(path)
    return out


def _with_quota(path: Path, quota: int) -> None:
    Repository.init(path, chunker=SMALL_CHUNKER, pack_target_size=MiB).close()
    with Repository.open(path, Mode.WRITE) as r:
        r.save_config(replace(r.config, quota_bytes=quota))


def test_commit_file_keeps_the_quota(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    quota = 34 * MiB  # the 16 MiB reserve file counts too
    _with_quota(repo, quota)
    pruned: list[SnapshotInfo] = []
    for path in _files(tmp_path, 5, 6 * MiB):
        with snapstore.open_repository(repo, Mode.WRITE) as r:
            res = snapstore.commit_file(r, path, name="disk")  # the newest of a name is kept
            pruned += res.pruned
            assert r.disk_usage() <= quota
    assert pruned, "the quota never made a commit prune"
    with snapstore.open_repository(repo) as r:
        left = r.list_snapshots()
    assert left[-1].id == res.snapshot.id and len(left) == 5 - len(pruned)


def test_commit_file_too_big_for_the_quota(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _with_quota(repo, 18 * MiB)
    (big,) = _files(tmp_path, 1, 6 * MiB)
    with snapstore.open_repository(repo, Mode.WRITE) as r:
        with pytest.raises(QuotaError):
            snapstore.commit_file(r, big)
        assert r.list_snapshots() == []


def test_commit_file_quota_can_be_turned_off(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _with_quota(repo, 18 * MiB)
    (big,) = _files(tmp_path, 1, 6 * MiB)
    with snapstore.open_repository(repo, Mode.WRITE) as r:
        res = snapstore.commit_file(r, big, quota=False)
        assert [s.id for s in r.list_snapshots()] == [res.snapshot.id]


def test_prune_plan_uses_the_configured_quota(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    Repository.init(repo, chunker=SMALL_CHUNKER, pack_target_size=MiB).close()
    with snapstore.open_repository(repo, Mode.WRITE) as r:
        for path in _files(tmp_path, 3, 6 * MiB):
            snapstore.commit_file(r, path, name="disk")
        r.save_config(replace(r.config, quota_bytes=28 * MiB))
        plan = prune_ops.plan(r, KeepPolicy(), datetime.now(UTC))
        assert plan.quota_bytes == 28 * MiB and plan.drop
        unlimited = prune_ops.plan(r, KeepPolicy(), datetime.now(UTC), quota_bytes=None)
        assert unlimited.drop == ()


def test_prune_gc_verify_exported(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with snapstore.open_repository(repo, Mode.WRITE, create=True) as r:
        for path in _files(tmp_path, 3, MiB):
            snapstore.commit_file(r, path, name="disk")
    with snapstore.open_repository(repo, Mode.EXCLUSIVE) as r:
        result = snapstore.prune(r, snapstore.KeepPolicy(last=1))
        assert len(result.plan.drop) == 2
        assert snapstore.gc(r).freed_bytes == 0  # prune already collected
    with snapstore.open_repository(repo, Mode.CHECK) as r:
        report = snapstore.verify(r, read_data=True)
        assert report.ok and report.snapshots == 1


def test_auto_init_is_explicit(tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        snapstore.open_repository(tmp_path / "none")
    assert not (tmp_path / "none").exists()
    with snapstore.open_repository(tmp_path / "new", Mode.WRITE, create=True, shared=True) as r:
        assert r.config.shared
    with snapstore.open_repository(tmp_path / "new", create=True) as r:  # exists: just opened
        assert r.list_snapshots() == []


def test_public_api_is_curated_typed_and_documented() -> None:
    assert (Path(snapstore.__file__).parent / "py.typed").is_file()
    for name in ("prune", "gc", "verify", "KeepPolicy", "open_repository", "checkout", "commit_file"):
        assert name in snapstore.__all__
    for name in snapstore.__all__:
        obj = getattr(snapstore, name)
        if callable(obj):
            assert inspect.getdoc(obj), f"snapstore.{name} has no docstring"
    assert "last" in (inspect.getdoc(snapstore.KeepPolicy) or "")
