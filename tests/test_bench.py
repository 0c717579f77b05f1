"""Smoke test of the benchmark (bench/bench.py): a tiny image, every installed tool, warm cache,
two runs of every phase."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("restic", "borg", "rdiff-backup")


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
    results = json.loads(report.read_text())["results"]
    assert len(results) == 6 * len(tools)
    assert all(r["status"] == "ok" and r["mb_per_s"] > 0 for r in results)
    # Each phase ran twice, commits from a restored copy of the repository (which every
    # tool accepted), and the median of the two is reported.
    assert all(len(r["all_seconds"]) == 2 for r in results)
    assert all(r["seconds"] == pytest.approx(sum(r["all_seconds"]) / 2) for r in results)
    profile = json.loads(report.read_text())["profile"]
    assert [p["phase"] for p in profile["phases"]] == [r["phase"] for r in results if r["tool"] == "snap"]
    assert all(0 < p["floor_seconds"] < 60 for p in profile["phases"])
