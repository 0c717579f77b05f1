"""The chunk table's pages are checked when a command first needs them, not when the index is
opened: listing costs the same whatever the chunk count, and a damaged chunk table is still
refused before LMDB reads it."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import lmdb

from snapstore.storage import lmdb_file
from tests.conftest import SMALL_CHUNKER, run_snap
from tests.helpers import init_repo


def _pages(index: Path, *, whole: bool) -> set[int]:
    env = lmdb.open(str(index), readonly=True, lock=False, max_dbs=8, subdir=True)
    try:
        with env.begin() as txn:
            skip = frozenset() if whole else frozenset({b"chunks"})
            return lmdb_file.check_tree(index, txn.id(), "", skip=skip, free=whole)
    finally:
        env.close()


def test_listing_skips_the_chunk_table_and_its_damage_is_found_when_needed(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", chunker=SMALL_CHUNKER)
    src = tmp_path / "disk.img"
    src.write_bytes(os.urandom(16 << 20))  # 16 MiB of small chunks: a chunk table of many pages
    assert run_snap("commit", str(src), "-r", str(repo)).returncode == 0
    index = repo / "index"
    light, whole = _pages(index, whole=False), _pages(index, whole=True)
    chunk_pages = sorted(whole - light)
    assert len(chunk_pages) > 3 and light < whole
    with open(index / lmdb_file.DATA_FILE, "r+b") as f:  # a chunk-table page's header: wrong page number
        f.seek(chunk_pages[-1] * mmap.PAGESIZE)
        f.write((123456789).to_bytes(8, "little"))
    listed = run_snap("log", "--json", "-r", str(repo))
    assert listed.returncode == 0, listed.stderr
    res = run_snap("checkout", "latest", "-o", str(tmp_path / "out.img"), "-r", str(repo))
    assert res.returncode == 4 and b"index" in res.stderr, res.stderr  # refused before LMDB reads it
    assert not (tmp_path / "out.img").exists()
    res = run_snap("verify", "-r", str(repo))
    assert res.returncode == 5 and b"rebuilds the index" in res.stderr, res.stderr  # reported as a problem
