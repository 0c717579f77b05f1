"""Arguments parsed strictly (issue 18, point 10): a quota of 0 is refused wherever a quota is
given, verify's --read-data and --sample together are refused, and an unknown command is
told once."""

from __future__ import annotations

from pathlib import Path

from snapstore.errors import UsageError
from tests.conftest import run_snap


def test_zero_quota_refused_by_prune(repo_path: Path) -> None:
    done = run_snap("prune", "--quota", "0", "--dry-run", "-r", str(repo_path))
    assert done.returncode == UsageError.exit_code
    assert b"out of range" in done.stderr


def test_fraction_of_a_byte_refused(repo_path: Path) -> None:
    done = run_snap("config", "set", "quota", "1.5", "-r", str(repo_path))
    assert done.returncode == UsageError.exit_code
    assert b"whole number of bytes" in done.stderr


def test_read_data_and_sample_refused_together(repo_path: Path) -> None:
    done = run_snap("verify", "--read-data", "--sample", "5", "-r", str(repo_path))
    assert done.returncode == UsageError.exit_code
    assert done.stderr.count(b"\n") == 1 and b"--sample" in done.stderr


def test_unknown_command_suggested_once() -> None:
    done = run_snap("comit")
    assert done.returncode == UsageError.exit_code
    assert done.stderr.decode().count("Did you mean 'commit'?") == 1
