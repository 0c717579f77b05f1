"""verify compares each pack's trailer with the index: a trailer (valid hash, records in
order) that omits a record the index points at, which would lose that chunk at the next index
rebuild, is reported; repair writes it again from a scan of the pack before rebuilding."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from snapstore import Mode, Repository
from snapstore.format import FORMAT_VERSION
from snapstore.format import pack as pack_fmt
from snapstore.model import PackId
from snapstore.ops.repair import repair
from snapstore.storage.packstore import PackStore
from tests.conftest import SMALL_CHUNKER, run_snap
from tests.helpers import copy_repository, flip, init_repo


def snap_ok(*args: str) -> str:
    done = run_snap(*args)
    assert done.returncode == 0, (args, done.stdout.decode(), done.stderr.decode())
    return done.stdout.decode().strip()


def drop_from_trailer(pack: Path, entries: list[pack_fmt.TableEntry], drop: int) -> None:
    """Write the pack's trailer again without entry ``drop``, with a valid hash."""
    table_offset = pack.stat().st_size - len(entries) * pack_fmt.TABLE_ENTRY_SIZE - pack_fmt.FOOTER_SIZE
    kept = [e for i, e in enumerate(entries) if i != drop]
    with open(pack, "r+b") as f:
        f.truncate(table_offset)
        f.seek(table_offset)
        f.write(pack_fmt.encode_trailer(pack_fmt.encode_table(kept), table_offset))


def test_verify_reports_a_trailer_missing_an_indexed_record_and_repair_rewrites_it(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", SMALL_CHUNKER, pack_target_size=1 << 20)
    image = tmp_path / "vm.img"
    data = random.Random(3).randbytes(3_000_000)
    image.write_bytes(data)
    sid = snap_ok("commit", str(image), "-r", str(repo), "--name", "vm.img")
    store = PackStore(repo / "packs", 0o600, FORMAT_VERSION)
    pack_id = next(iter(store.iter_pack_ids()))
    entries = store.trailer(pack_id)
    assert entries is not None and len(entries) >= 3
    missing = entries[len(entries) // 2]
    drop_from_trailer(store.path(pack_id), entries, len(entries) // 2)
    assert [e.chunk_id for e in store.trailer(pack_id) or []] == [
        e.chunk_id for e in entries if e is not missing
    ]

    done = run_snap("verify", "--json", "-r", str(repo))
    assert done.returncode == 5, done.stderr.decode()
    report = json.loads(done.stdout)
    (problem,) = report["problems"]
    assert problem["kind"] == "pack"
    expected = f"pack {pack_id.hex()}: its trailer does not list chunk {missing.chunk_id.hex()[:16]}"
    assert expected in problem["detail"]
    assert f"offset {missing.offset}" in problem["detail"]
    assert problem["snapshots"] == [sid]

    # Why it matters: an index rebuilt from that trailer alone loses the chunk.
    lost = copy_repository(repo, tmp_path / "lost")
    shutil.rmtree(lost / "index")
    assert run_snap("repair", "-r", str(lost)).returncode == 5

    # repair, with the index there to compare with, writes the trailer again first.
    done = run_snap("repair", "--json", "-r", str(repo))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert json.loads(done.stdout)["rewritten_pack_trailers"] == [pack_id.hex()]
    assert store.trailer(pack_id) == entries
    snap_ok("verify", "--read-data", "-r", str(repo))
    shutil.rmtree(repo / "index")  # the trailers alone now rebuild every chunk
    snap_ok("repair", "-r", str(repo))
    out = tmp_path / "out.img"
    snap_ok("checkout", sid, "-o", str(out), "-r", str(repo))
    assert out.read_bytes() == data


def test_repair_checks_each_pack_header_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rebuild checks every pack header; repair rewrites the damaged ones it found
    without checking every header a second time."""
    repo = init_repo(tmp_path / "repo", SMALL_CHUNKER, pack_target_size=1 << 20)
    image = tmp_path / "vm.img"
    image.write_bytes(random.Random(4).randbytes(3_000_000))
    snap_ok("commit", str(image), "-r", str(repo))
    store = PackStore(repo / "packs", 0o600, FORMAT_VERSION)
    pack_ids = sorted(store.iter_pack_ids())
    assert len(pack_ids) >= 3
    flip(store.path(pack_ids[1]), 0, 0xFF)  # a damaged pack header
    checked: Counter[bytes] = Counter()
    real = PackStore.check_header

    def counting(self: PackStore, pack_id: PackId) -> None:
        checked[pack_id] += 1
        real(self, pack_id)

    monkeypatch.setattr(PackStore, "check_header", counting)
    with Repository.open(repo, Mode.EXCLUSIVE, rebuild_index=True) as r:
        report = repair(r)
    assert report.rewritten_pack_headers == (pack_ids[1],)
    assert checked == dict.fromkeys(pack_ids, 1)
    monkeypatch.undo()
    snap_ok("verify", "--read-data", "-r", str(repo))
