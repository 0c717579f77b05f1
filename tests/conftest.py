"""Shared fixtures. Hypothesis runs derandomized in CI (CI=true)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from snapstore.model import ChunkerParams
from snapstore.repo import Mode, Repository
from tests.sshd_fixtures import own_cache, sshd  # noqa: F401 (the remote tests' fixtures, registered here)

settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# Small chunks so that tests exercise many chunks and packs on little data.
SMALL_CHUNKER = ChunkerParams("fastcdc", 4096, 16384, 65536)
SNAP = [sys.executable, "-m", "snapstore"]


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    Repository.init(path, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    return path


@pytest.fixture
def repo(repo_path: Path) -> Iterator[Repository]:
    with Repository.open(repo_path, Mode.WRITE) as r:
        yield r


def run_snap(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``snap`` command in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if k != "SNAP_REPO"}
    full_env.update(env or {})
    return subprocess.run(
        [*SNAP, *args], cwd=cwd, env=full_env, input=input, capture_output=True, timeout=600, check=False
    )


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


# -- counts the trust suites report (crash points, faults, corruptions, fuzz examples) ----------------

COUNT_PROPERTY = "trust-count"


@pytest.fixture
def report_count(record_property: Callable[[str, object], None]) -> Callable[..., None]:
    """``report_count(suite, label, **counts)``: printed, with totals, at the end of the run
    (through the report's user properties, so it works under xdist too)."""

    def report(suite: str, label: str, **counts: int) -> None:
        record_property(COUNT_PROPERTY, [suite, label, counts])

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows: list[tuple[str, str, dict[str, int]]] = []
    for key in ("passed", "failed"):
        for rep in terminalreporter.stats.get(key, []):
            for name, value in getattr(rep, "user_properties", []):
                if name == COUNT_PROPERTY:
                    suite, label, counts = value
                    rows.append((str(suite), str(label), dict(counts)))
    if not rows:
        return
    terminalreporter.section("trust suite counts")
    merged: dict[tuple[str, str], Counter[str]] = {}
    for suite, label, counts in rows:  # rows of the same label (parametrized tests) are added up
        merged.setdefault((suite, label), Counter()).update(counts)
    totals: dict[str, Counter[str]] = {}
    for (suite, label), counts in sorted(merged.items()):
        shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
        terminalreporter.write_line(f"{suite:<12} {label:<44} {shown}")
        totals.setdefault(suite, Counter()).update(counts)
    for suite, counter in sorted(totals.items()):
        shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counter.items())
        terminalreporter.write_line(f"{suite:<12} {'TOTAL':<44} {shown}")
