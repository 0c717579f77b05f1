"""Smoke test of the benchmark's remote mode (bench/remote.py): a tiny synthetic image, snap
alone, over ssh to a real sshd on localhost; the peers run in the real benchmark only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sshd import SSHD

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(SSHD is None, reason="OpenSSH's sshd is not installed (openssh-server)")


def test_remote_mode_counts_the_wire_and_checks_out_byte_for_byte(tmp_path: Path) -> None:
    report = tmp_path / "remote.json"
    argv = [sys.executable, str(ROOT / "bench" / "remote.py"), "--workload", "synthetic", "--size", "16M"]
    argv += [
        "--versions",
        "2",
        "--tools",
        "snap",
        "--warm",
        "--work",
        str(tmp_path / "w"),
        "--json",
        str(report),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== over ssh" in done.stdout and "FAIL" not in done.stdout
    doc = json.loads(report.read_text())
    rows = {r["phase"]: r for r in doc["results"]}
    assert list(rows) == ["commit v1", "commit v2", "checkout v1", "checkout v2"]
    assert all(r["tool"] == "snap" and r["status"] == "ok" for r in rows.values())  # checkouts verified
    assert all(r["connections"] == 1 and r["max_rss_kib"] > 0 for r in rows.values())
    # Each commit sent at least its new chunks, compressed; each checkout received its data.
    for phase in ("commit v1", "commit v2"):
        assert rows[phase]["sent"] >= rows[phase]["new_stored_bytes"] > 0
        assert rows[phase]["received"] < rows[phase]["sent"]
    for phase in ("checkout v1", "checkout v2"):
        assert rows[phase]["received"] > rows[phase]["sent"]
    assert rows["commit v2"]["sent"] < rows["commit v1"]["sent"]  # only what v1 lacked
    (bound,) = [t for t in doc["targets"] if t["check"] == "sent vs new chunks"]
    assert bound["phase"] == "commit v2" and bound["value"] == rows["commit v2"]["sent"]
