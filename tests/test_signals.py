"""Ctrl-C and SIGTERM (issue 18, point 6): a real checkout, signalled while it writes its
temp output, prints one line, removes the temp file and exits 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import SNAP, run_snap
from tests.helpers import write_sparse

GiB = 1 << 30


@pytest.fixture
def big_snapshot(tmp_path: Path, repo_path: Path) -> str:
    """1 GiB, mostly zeros: cheap to commit, and a --no-sparse checkout writes every byte."""
    src = tmp_path / "vm.img"
    write_sparse(src, GiB, [(0, os.urandom(1 << 20)), (GiB // 2, os.urandom(1 << 20))])
    done = run_snap("commit", str(src), "-r", str(repo_path))
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


@pytest.mark.parametrize(
    ("signum", "code", "line"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_signal_during_checkout(
    tmp_path: Path, repo_path: Path, big_snapshot: str, signum: int, code: int, line: str
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SNAP_REPO"}
    proc = subprocess.Popen(
        [*SNAP, "checkout", big_snapshot, "-o", str(out_dir / "vm.img"), "--no-sparse", "-r", str(repo_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120  # only to catch a hang
    while not any(".snap-tmp-" in p.name for p in out_dir.iterdir()):
        assert proc.poll() is None, "the checkout ended before its temp file was seen"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.decode().splitlines() == [f"snap: {line}"]
    assert list(out_dir.iterdir()) == [], "the temp output was left behind"
