"""Format 2 packs end with a trailer listing their records (docs/FORMAT.md, "pack trailer"):
the index is rebuilt from pack tails, gc keeps every trailer true, and a pack whose trailer is
missing or damaged is scanned as before."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from snapstore.format import FORMAT_VERSION
from snapstore.format import pack as pack_fmt
from snapstore.model import PackId
from snapstore.storage.packstore import PackStore
from tests.conftest import SMALL_CHUNKER, SNAP, run_snap
from tests.helpers import flip, init_repo, text_bytes


def snap_ok(*args: str) -> str:
    done = run_snap(*args)
    assert done.returncode == 0, (args, done.stderr.decode())
    return done.stdout.decode().strip()


def packs_of(repo: Path) -> tuple[PackStore, list[PackId]]:
    store = PackStore(repo / "packs", 0o600, FORMAT_VERSION)
    return store, list(store.iter_pack_ids())


def by_trailer_and_by_scan(store: PackStore, pack_id: PackId) -> tuple[list[object], list[object]]:
    return list(store.records(pack_id)), list(store.scan(pack_id))


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """Three days of an image in a repository of small packs; the middle one removed and
    collected, so that gc punched and cut packs."""
    repo = init_repo(tmp_path / "repo", SMALL_CHUNKER, pack_target_size=1 << 20)
    rng = random.Random(7)
    day = bytearray(text_bytes(1_500_000, seed=1) + rng.randbytes(1_500_000))
    kept: dict[str, bytes] = {}
    ids = []
    for n in range(3):
        day[n * 400_000 : n * 400_000 + 300_000] = rng.randbytes(300_000)
        image = tmp_path / "vm.img"
        image.write_bytes(day)
        sid = snap_ok("commit", str(image), "-r", str(repo), "--name", "vm.img")
        ids.append(sid)
        kept[sid] = bytes(day)
    snap_ok("rm", ids[1], "-r", str(repo))
    del kept[ids[1]]
    snap_ok("gc", "-r", str(repo))
    return repo, kept


def test_every_pack_ends_with_a_trailer_that_lists_what_a_scan_finds(
    history: tuple[Path, dict[str, bytes]],
) -> None:
    repo, _ = history
    store, pack_ids = packs_of(repo)
    assert len(pack_ids) >= 3
    for pack_id in pack_ids:
        path = store.path(pack_id)
        data = path.read_bytes()
        footer = pack_fmt.decode_footer(data[-pack_fmt.FOOTER_SIZE :], len(data))
        assert footer is not None, f"{path.name} has no trailer"
        trailer, scanned = by_trailer_and_by_scan(store, pack_id)
        assert trailer == scanned  # punched records are gone from both
        assert trailer, "gc removes packs without live records"


def test_index_rebuilt_from_trailers_after_gc_checks_out_and_verifies(
    history: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    repo, kept = history
    shutil.rmtree(repo / "index")
    snap_ok("repair", "-r", str(repo))
    snap_ok("verify", "-r", str(repo), "--read-data")
    for sid, data in kept.items():
        out = tmp_path / f"{sid[:8]}.out"
        snap_ok("checkout", sid, "-r", str(repo), "-o", str(out))
        assert out.read_bytes() == data


@pytest.mark.parametrize("damage", ["torn footer", "flipped table", "flipped footer", "no trailer"])
def test_a_pack_without_a_whole_trailer_is_scanned(
    history: tuple[Path, dict[str, bytes]], damage: str
) -> None:
    repo, _ = history
    store, pack_ids = packs_of(repo)
    pack_id = pack_ids[0]
    path = store.path(pack_id)
    data = path.read_bytes()
    _, table_offset, _ = pack_fmt.decode_footer(data[-pack_fmt.FOOTER_SIZE :], len(data)) or (0, 0, b"")
    expected = list(store.scan(pack_id))
    if damage == "torn footer":
        os.truncate(path, len(data) - 1)
    elif damage == "flipped table":
        flip(path, table_offset + 5)
    elif damage == "flipped footer":
        flip(path, len(data) - 3)
    else:
        os.truncate(path, table_offset)
    assert list(store.records(pack_id)) == expected


def test_a_table_that_lies_about_where_records_are_is_refused() -> None:
    entry = pack_fmt.encode_table_entry(b"\1" * 32, 100, 1, 10, 5)
    table = entry + pack_fmt.encode_table_entry(b"\2" * 32, 120, 1, 10, 5)  # overlaps the first
    digest = pack_fmt.decode_footer(pack_fmt.encode_trailer(table, 300)[-64:], 300 + len(table) + 64)
    assert digest is not None
    with pytest.raises(Exception, match="out of place"):
        pack_fmt.decode_table(table, digest[2], 300, "pack")
    assert pack_fmt.decode_footer(pack_fmt.encode_trailer(table, 300)[-64:], 301 + len(table) + 64) is None


def test_repair_reads_each_pack_tail_only(tmp_path: Path) -> None:
    """An index rebuilt from 48 MiB of random data in 8 MiB packs (the default chunker): at
    most 3 reads per pack and under 2% of the pack bytes (a scan reads one record header per
    chunk)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (.ci/run installs it)")
    repo = init_repo(tmp_path / "repo", pack_target_size=8 << 20)
    image = tmp_path / "random.img"
    image.write_bytes(os.urandom(48 << 20))
    snap_ok("commit", str(image), "-r", str(repo))
    pack_bytes = sum(p.stat().st_size for p in (repo / "packs").rglob("*.pack"))
    shutil.rmtree(repo / "index")
    log = tmp_path / "strace.log"
    done = subprocess.run(
        ["strace", "-f", "-y", "-e", "trace=read,pread64,readv,preadv,preadv2", "-o", str(log), *SNAP,
         "repair", "-r", str(repo)],
        capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    calls: Counter[str] = Counter()
    read = 0
    for line in log.read_text().splitlines():
        match = re.search(r"\(\d+<([^>]*\.pack)>.*= (\d+)$", line)
        if match:
            calls[match.group(1)] += 1
            read += int(match.group(2))
    assert len(calls) == len(list((repo / "packs").rglob("*.pack"))) >= 6
    assert max(calls.values()) <= 3, calls
    assert read < 0.02 * pack_bytes, (read, pack_bytes)
