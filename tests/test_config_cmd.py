"""Settings are checked when they are set, with the bounds the reader enforces (issue 18,
point 2): a quota the reader would refuse is never written, and a config that holds one anyway
(written by an older snap or by hand) is repaired with ``snap config``, as verify says."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapstore.errors import CorruptError, RepositoryError, UsageError
from snapstore.format import FORMAT_VERSION
from snapstore.format import config as cfg
from snapstore.model import Config
from tests.conftest import run_snap

BASE = Config(FORMAT_VERSION, "ab" * 16, "2024-01-01T00:00:00Z")


@given(st.integers(min_value=-(1 << 70), max_value=1 << 70))
def test_what_is_written_is_read_back(quota: int) -> None:
    """encode refuses every quota decode would refuse (and 0, which fails every commit)."""
    try:
        data = cfg.encode(replace(BASE, quota_bytes=quota))
    except UsageError:
        assert not 1 <= quota <= cfg.MAX_QUOTA
        return
    assert cfg.decode(data).quota_bytes == quota


@pytest.mark.parametrize("value", ["5E", "99999999999999999999T", "0"])
def test_quota_out_of_range_refused_when_set(repo_path: Path, value: str) -> None:
    done = run_snap("config", "set", "quota", value, "--repo", str(repo_path))
    assert done.returncode == UsageError.exit_code, done.stderr
    assert b"out of range" in done.stderr
    assert run_snap("log", "--repo", str(repo_path)).returncode == 0
    got = run_snap("config", "get", "quota", "--repo", str(repo_path))
    assert got.stdout.strip() == b"none"


def _write_bad_quota(repo_path: Path) -> None:
    """A config holding a quota past the reader's bound, with a valid checksum."""
    path = repo_path / "config"
    doc = json.loads(path.read_bytes())
    del doc["checksum"]
    doc["quota_bytes"] = 5 << 60
    doc["checksum"] = cfg._checksum(doc)
    path.write_bytes(cfg._canonical(doc))
    with pytest.raises(CorruptError):
        cfg.decode(path.read_bytes())


@pytest.mark.parametrize("repair", [["unset", "quota"], ["set", "quota", "20G"]])
def test_bad_quota_repaired_with_config(repo_path: Path, repair: list[str]) -> None:
    _write_bad_quota(repo_path)
    verify = run_snap("verify", "--repo", str(repo_path))
    assert verify.returncode == RepositoryError.exit_code
    assert b"snap config unset quota" in verify.stderr  # verify says how
    done = run_snap("config", *repair, "--repo", str(repo_path))
    assert done.returncode == 0, done.stderr
    assert run_snap("verify", "--repo", str(repo_path)).returncode == 0
    got = run_snap("config", "get", "quota", "--repo", str(repo_path))
    assert got.stdout.strip() == (b"none" if repair[0] == "unset" else b"20.0 GiB")
