"""Crash safety of counting in batches (issue 11, point 4): a real ``snap rm`` of a snapshot of
more than three batches' worth of distinct chunks is killed with SIGKILL at several moments
while it subtracts their references. After each kill the removal is all or nothing for the
user (the snapshot is listed, or it is gone), the next writer's recovery finishes the job,
``verify --read-data`` finds every count right, and the other snapshot checks out identical.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from snapstore import recovery
from tests.conftest import SNAP, run_snap
from tests.helpers import copy_repository, file_digest

pytestmark = pytest.mark.slow

MiB = 1 << 20
CHUNKER = "fastcdc:128:256:1024:0"  # ~4000 chunks per MiB: a small file makes many batches
SIZE = 48 * MiB
KILL_POINTS = 4


def _snap(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    done = run_snap(*map(str, args))
    assert done.returncode == 0, done.stderr.decode()
    return done


def _ids(repo: Path) -> list[str]:
    return [s["id"] for s in json.loads(_snap("log", "--json", "-r", repo).stdout)]


def test_rm_killed_while_counting_is_all_or_nothing(tmp_path: Path) -> None:
    rng = random.Random(5)
    image = tmp_path / "disk.img"
    image.write_bytes(rng.randbytes(SIZE))
    base = tmp_path / "base"
    _snap("init", "--chunker", CHUNKER, base)
    _snap("commit", image, "-r", base, "-m", "v1")
    with open(image, "r+b") as f:  # v2 shares most chunks with v1: rm of v1 subtracts from them
        for _ in range(40):
            f.seek(rng.randrange(SIZE - 65536))
            f.write(rng.randbytes(65536))
    _snap("commit", image, "-r", base, "-m", "v2")
    v2_digest = file_digest(image)
    v1, v2 = _ids(base)
    stats = json.loads(_snap("stats", "--json", "-r", base).stdout)
    assert stats["chunks"] > 3 * recovery.BATCH, "the removal must take several batches"

    # How long an uninterrupted removal takes, to spread the kills over it.
    started = time.perf_counter()
    _snap("rm", v1, "-r", copy_repository(base, tmp_path / "timing"))
    took = time.perf_counter() - started

    states = set()
    for point in range(KILL_POINTS):
        repo = copy_repository(base, tmp_path / f"kill-{point}")
        proc = subprocess.Popen([*SNAP, "rm", v1, "-r", str(repo)], stderr=subprocess.PIPE)
        time.sleep(took * (0.15 + 0.8 * point / KILL_POINTS))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        listed = _ids(repo)  # a reader sees the snapshot whole or not at all
        assert v2 in listed and set(listed) <= {v1, v2}
        states.add(v1 in listed)
        _snap("gc", "-r", repo)  # a writer: its recovery finishes the removal, then gc frees
        assert _ids(repo) == [v2] or _ids(repo) == [v1, v2]
        report = json.loads(run_snap("verify", "--read-data", "--json", "-r", str(repo)).stdout)
        assert report["problems"] == [], report["problems"]
        out = tmp_path / "out.img"
        _snap("checkout", v2, "-o", out, "-r", repo, "--force")
        assert file_digest(out) == v2_digest
        if v1 in _ids(repo):  # killed before it was unpublished: the rerun removes it
            _snap("rm", v1, "-r", repo)
            assert _ids(repo) == [v2]
    assert False in states, "no kill landed after the snapshot was unpublished"
