"""Smoke test of the benchmark (bench/bench.py): a tiny image, every installed tool, warm cache,
two runs of every phase."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("restic", "borg", "rdiff-backup")


def bench(*args: str | Path, work: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run bench/bench.py with ``args`` in ``work``; its output and its --json report ({} if none)."""
    report = work / "results.json"
    argv = [sys.executable, str(ROOT / "bench" / "bench.py"), *map(str, args)]
    done = subprocess.run(
        [*argv, "--work", str(work / "w"), "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done, json.loads(report.read_text()) if report.exists() else {}


@pytest.mark.slow
def test_benchmark_runs_and_verifies_every_checkout(tmp_path: Path) -> None:
    tools = ["snap", *(peer for peer in PEERS if shutil.which(peer))]
    report = tmp_path / "results.json"
    args = [
        "--size",
        "48M",
        "--warm",
        "--profile",
        "--runs",
        "2",
        "--workload",
        "synthetic",
        "--tools",
        ",".join(tools),
        "--work",
        str(tmp_path / "work"),
    ]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), *args, "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "== results" in done.stdout
    assert "checkout v1" in done.stdout
    assert "FAIL" not in output
    assert "== machine limits" in done.stdout and "== profile" in done.stdout
    assert "== in-place checkout" in done.stdout
    results = json.loads(report.read_text())["results"]
    assert len(results) == 6 * len(tools) + 1  # and snap's in-place checkout (the peers have none)
    assert all(r["status"] == "ok" and r["mb_per_s"] > 0 for r in results)
    # Each phase ran twice, commits from a restored copy of the repository (which every
    # tool accepted), and the median of the two is reported.
    assert all(len(r["all_seconds"]) == 2 for r in results)
    assert all(r["seconds"] == pytest.approx(sum(r["all_seconds"]) / 2) for r in results)
    profile = json.loads(report.read_text())["profile"]
    profiled = [r["phase"] for r in results if r["tool"] == "snap" and r["phase"] != "in-place v1"]
    assert [p["phase"] for p in profile["phases"]] == profiled
    assert all(0 < p["floor_seconds"] < 60 for p in profile["phases"])


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the real-data workload mounts a loop device (root)")
def test_real_data_workload_is_a_changing_file_system_that_snap_restores(tmp_path: Path) -> None:
    done, doc = bench(
        "--size", "64M", "--warm", "--runs", "1", "--workload", "real", "--tools", "snap", work=tmp_path
    )
    if "cannot be built here" in done.stderr:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== workload: real" in done.stdout and "FAIL" not in done.stdout
    (workload,) = doc["workloads"]
    assert workload["kind"] == "real"
    images = workload["images"]
    assert list(images) == ["v1", "v2", "v3", "shifted"]
    assert len({image["blake3"] for image in images.values()}) == 4  # every version changed
    assert sum(workload["composition"].values()) > 16 * 1024 * 1024  # real files, not holes
    with open(tmp_path / "w" / "images" / "real-v1.img", "rb") as f:
        f.seek(1024 + 0x38)
        assert f.read(2) == b"\x53\xef"  # an ext4 superblock
    results = doc["results"]
    assert len(results) == 7 and all(r["status"] == "ok" and r["workload"] == "real" for r in results)


def test_users_own_images_are_committed_in_order_and_checked_out(tmp_path: Path) -> None:
    rng = random.Random(7)
    first = rng.randbytes(3 << 20)
    images = [tmp_path / "monday.img", tmp_path / "tuesday.img"]
    images[0].write_bytes(first)
    images[1].write_bytes(first[:1000000] + rng.randbytes(4096) + first[1004096:])
    done, doc = bench("--image", *images, "--tools", "snap", "--warm", "--runs", "1", work=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    results = doc["results"]
    phases = ["commit v1", "commit v2", "checkout v1", "checkout v2", "in-place v1"]
    assert [r["phase"] for r in results] == phases
    assert all(r["status"] == "ok" and r["workload"] == "user" for r in results)
    # v1 over a copy of v2 (4 KiB differ): verified, and only the two blocks they straddle
    # written (the page cache's write_bytes may count a whole large folio for them)
    by = {r["phase"]: r for r in results}
    assert 0 < by["in-place v1"]["told_written_bytes"] <= 2 * 4096
    assert by["in-place v1"]["written_bytes"] >= by["in-place v1"]["told_written_bytes"]
    assert "== in-place checkout" in done.stdout
    # snap's start-up, each command timed in new interpreters (bench/startup.py)
    startup = {m["command"]: m for m in doc["startup"]}
    assert set(startup) == {"snap --version", "snap log"}
    assert all(0 < m["best_ms"] <= m["median_ms"] and m["runs"] >= 5 for m in startup.values())
    assert "== start-up" in done.stdout
