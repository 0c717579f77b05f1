"""The conventions a restic or borg user expects (issue 18, point 7): global options before
and after the command, --version (answered without importing the CLI framework), -q, log
filters and order, --lock-wait, SNAP_REPO."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import snapstore
from snapstore.errors import LockedError, UsageError
from tests.conftest import SNAP, run_snap


@pytest.fixture
def three(tmp_path: Path, repo_path: Path) -> list[str]:
    ids = []
    for i in range(3):
        src = tmp_path / "vm.img"
        src.write_bytes(os.urandom(64 * 1024))
        done = run_snap("commit", str(src), "-r", str(repo_path), "-m", f"day {i}")
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.decode().strip())
    return ids


def _log_ids(*args: str, env: dict[str, str] | None = None) -> list[str]:
    done = run_snap(*args, env=env)
    assert done.returncode == 0, done.stderr
    return [line.split()[0] for line in done.stdout.decode().splitlines()[1:]]


def test_repo_before_and_after_the_command(repo_path: Path, three: list[str], tmp_path: Path) -> None:
    short = [i[:12] for i in three]
    assert _log_ids("-r", str(repo_path), "log") == short
    assert _log_ids("log", "-r", str(repo_path)) == short
    assert _log_ids("log", env={"SNAP_REPO": str(repo_path)}) == short
    # the command's own -r, then the global one, then SNAP_REPO
    other = tmp_path / "none"
    assert _log_ids("-r", str(other), "log", "-r", str(repo_path)) == short
    assert _log_ids("-r", str(repo_path), "log", env={"SNAP_REPO": str(other)}) == short


def test_version_is_answered_before_anything_is_imported() -> None:
    for flag in ("--version", "-V"):
        done = subprocess.run([*SNAP, flag], capture_output=True, text=True, check=False)
        assert done.returncode == 0 and done.stdout == f"snap {snapstore.__version__}\n"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *SNAP[1:], "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    bare = subprocess.run(  # what the interpreter imports anyway (site, .pth files)
        [sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, check=False
    )
    imported -= {line.split("|")[-1].strip() for line in bare.stderr.splitlines() if "|" in line}
    assert "snapstore" in imported
    assert not imported & {"typer", "click", "rich", "typing", "snapstore.repo", "snapstore.cli.app"}


def test_quiet(tmp_path: Path, repo_path: Path) -> None:
    src = tmp_path / "vm.img"
    src.write_bytes(os.urandom(64 * 1024))
    loud = run_snap("commit", str(src), "-r", str(repo_path))
    assert loud.stderr  # the summary line
    src.write_bytes(os.urandom(64 * 1024))
    done = run_snap("-q", "commit", str(src), "-r", str(repo_path))
    assert done.returncode == 0 and done.stderr == b""
    assert len(done.stdout.split()) == 1  # the id, still


def test_log_last_since_reverse(repo_path: Path, three: list[str]) -> None:
    short = [i[:12] for i in three]
    r = ["-r", str(repo_path)]
    assert _log_ids("log", "--last", "2", *r) == short[1:]
    assert _log_ids("log", "--reverse", *r) == short[::-1]
    assert _log_ids("log", "--last", "2", "--reverse", *r) == short[:0:-1]
    assert _log_ids("log", "--since", "1h", *r) == short
    assert _log_ids("log", "--since", "2000-01-01", *r) == short
    none = run_snap("log", "--since", "2999-01-01", *r)
    assert none.returncode == 0 and none.stdout == b""
    bad = run_snap("log", "--since", "yesterday", *r)
    assert bad.returncode == UsageError.exit_code


def test_lock_wait(repo_path: Path, three: list[str]) -> None:
    fd = os.open(repo_path / "locks" / "data", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a gc holds it
    try:
        assert run_snap("-r", str(repo_path), "log").returncode == LockedError.exit_code
        release = threading.Timer(1.0, fcntl.flock, (fd, fcntl.LOCK_UN))  # the gc ends
        release.start()
        done = run_snap("--lock-wait", "2m", "-r", str(repo_path), "log")
        release.join()
        assert done.returncode == 0, done.stderr
    finally:
        os.close(fd)
