"""A commit's memory is bounded by design whatever the chunk size: its block pool is sized in
bytes (ops/pipeline.py, block_count), so a ``fixed:64M`` chunker gets 3 blocks, not 8 of 128
MiB. Peak RSS of a real ``snap commit`` is read from the kernel (wait4): a bound on memory,
not on time."""

from __future__ import annotations

import filecmp
import random
import subprocess
import sys
from pathlib import Path

import pytest

from snapstore.ops.pipeline import BLOCKS, POOL_BYTES, block_count
from tests.conftest import SNAP, run_snap

MiB = 1 << 20
# docs/CLI.md: with chunks over 4 MiB, about 3.5 x the largest chunk (plus the interpreter)
# where the data is contiguous. The old pool of 8 blocks of 2 x 64 MiB peaked at 540 MiB here.
FIXED_64M_BOUND = 360 * MiB


# Started from a small launcher, not from pytest: Linux carries the high-water RSS of the
# memory a process had before its exec into its own ru_maxrss, and a pytest worker (whose memory
# a vforked child shares until it execs) may hold hundreds of MiB.
_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024)
"""


def peak_rss(args: list[str]) -> tuple[int, int, bytes]:
    """(exit status, peak RSS in bytes, stderr) of ``snap ARGS`` run to its end."""
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *SNAP, *args], capture_output=True, timeout=600, check=True
    )
    code, rss = (int(x) for x in done.stdout.split())
    return code, rss, done.stderr


def test_block_pool_is_sized_in_bytes() -> None:
    assert block_count(4 * MiB + 8 * MiB) == BLOCKS  # the default chunker: unchanged
    assert block_count(64 * MiB + 64 * MiB) == 3
    for max_size in (64 * 1024, MiB, 4 * MiB, 16 * MiB, 64 * MiB):
        size = max_size + max(8 * MiB, max_size)
        assert block_count(size) * size <= max(POOL_BYTES, 3 * size)


@pytest.mark.slow
def test_fixed_64m_commit_peak_rss(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    done = run_snap("init", str(repo), "--chunker", "fixed:64M")
    assert done.returncode == 0, done.stderr
    src = tmp_path / "big.img"
    rng = random.Random(64)
    with open(src, "wb") as f:  # 10 distinct 64 MiB chunks: more than the old pool's 8 blocks
        for _ in range(10):
            f.write(rng.randbytes(64 * MiB))
    code, rss, err = peak_rss(["commit", str(src), "--repo", str(repo), "-j", "2"])
    assert code == 0, err
    assert rss < FIXED_64M_BOUND, f"peak RSS {rss / MiB:.0f} MiB"
    out = tmp_path / "out.img"
    done = run_snap("checkout", "latest", "-o", str(out), "--repo", str(repo))
    assert done.returncode == 0, done.stderr
    assert filecmp.cmp(out, src, shallow=False)
