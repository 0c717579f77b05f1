"""A repository written by snap 0.1.0 (format 1), frozen in tests/data: every later snap must
check its snapshots out byte for byte, verify it, rebuild its index and commit into it.
How it was made: tests/data/make_format1.py."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import blake3
import pytest

from tests.conftest import run_snap

DATA = Path(__file__).parent / "data"
EXPECTED: dict[str, dict[str, str]] = json.loads((DATA / "format1-expected.json").read_text())


@pytest.fixture
def frozen(tmp_path: Path) -> Path:
    with tarfile.open(DATA / "format1-repo.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "repo"


def snap_ok(*args: str) -> bytes:
    done = run_snap(*args)
    assert done.returncode == 0, (args, done.stderr.decode())
    return done.stdout


def checks_out_byte_for_byte(repo: Path, out_dir: Path) -> None:
    for sid, info in EXPECTED.items():
        out = out_dir / f"{sid[:12]}.out"
        out.unlink(missing_ok=True)
        snap_ok("checkout", sid[:12], "-r", str(repo), "-o", str(out))
        assert blake3.blake3(out.read_bytes()).hexdigest() == info["blake3"], sid


def test_frozen_format1_snapshots_check_out_byte_for_byte_and_verify(frozen: Path, tmp_path: Path) -> None:
    listed = json.loads(snap_ok("log", "-r", str(frozen), "--json"))
    assert sorted(s["id"] for s in listed) == sorted(EXPECTED)
    checks_out_byte_for_byte(frozen, tmp_path)
    snap_ok("verify", "-r", str(frozen), "--read-data")


def test_frozen_format1_repository_accepts_a_new_commit(frozen: Path, tmp_path: Path) -> None:
    day1 = next(sid for sid, info in EXPECTED.items() if info["name"] == "vm.img")
    base = tmp_path / "vm.img"
    snap_ok("checkout", day1, "-r", str(frozen), "-o", str(base))
    data = bytearray(base.read_bytes())
    data[500_000:500_100] = b"x" * 100
    base.write_bytes(data)
    packs_before = set((frozen / "packs").rglob("*.pack"))
    new = snap_ok("commit", str(base), "-r", str(frozen), "--name", "vm.img").decode().strip()
    assert json.loads((frozen / "config").read_text())["format_version"] == 1  # no silent upgrade
    (new_pack,) = set((frozen / "packs").rglob("*.pack")) - packs_before
    assert new_pack.read_bytes()[:12] == b"SNAPPACK\x01\x00\x00\x00"  # a format-1 pack, no trailer
    assert new_pack.read_bytes()[-64:-56] != b"SNAPTABL"
    out = tmp_path / "new.out"
    snap_ok("checkout", new, "-r", str(frozen), "-o", str(out))
    assert out.read_bytes() == data
    checks_out_byte_for_byte(frozen, tmp_path)
    snap_ok("verify", "-r", str(frozen), "--read-data")


def test_frozen_format1_index_is_rebuilt_from_its_packs(frozen: Path, tmp_path: Path) -> None:
    shutil.rmtree(frozen / "index")
    snap_ok("repair", "-r", str(frozen))
    checks_out_byte_for_byte(frozen, tmp_path)
    snap_ok("gc", "-r", str(frozen))  # the pinned first day and the others keep every chunk
    checks_out_byte_for_byte(frozen, tmp_path)
