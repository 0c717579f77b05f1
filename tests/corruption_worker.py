"""Runs the corruption suite's flips in a child process (``python -m tests.corruption_worker
SPEC RESULTS``), so that the parent can put it under a memory limit and a timeout.

For each flip of the spec: XOR one byte of a repository file, run ``snap verify --read-data``
and ``snap checkout`` of every snapshot in this process (through the CLI's ``main``), undo
the flip, and append one JSON line of results. An exception that escapes ``main`` (it would
print a traceback) is recorded as such. For the index, whether the flip changed what the
index holds ("live") is decided by comparing a dump of every table with the original.
"""

from __future__ import annotations

import hashlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

import lmdb

from snapstore.errors import CorruptError
from snapstore.storage import lmdb_file
from tests.helpers import cli

_DBS = (b"chunks", b"counted", b"garbage", b"meta", b"lost")


def dump_index(index_dir: Path) -> object:
    """Every key and value of every table, or the error that reading them raised. Read
    with snapstore's own defences (meta pages and every page checked first): LMDB alone dies
    of SIGBUS on some flips."""
    try:
        lmdb_file.check(index_dir, "")
        env = lmdb.open(str(index_dir), max_dbs=len(_DBS), readonly=True, lock=False, subdir=True)
    except (lmdb.Error, CorruptError) as exc:
        return f"open: {exc}"
    try:
        with env.begin() as txn:
            lmdb_file.check_tree(index_dir, txn.id(), "")
        tables = {}
        with env.begin(buffers=True) as txn:
            for name in _DBS:
                try:
                    db = env.open_db(name, txn=txn, create=False)
                    tables[name.decode()] = [(_short(k), _short(v)) for k, v in txn.cursor(db=db)]
                except lmdb.Error as exc:
                    tables[name.decode()] = [("error", str(exc))]
        return tables
    except (lmdb.Error, CorruptError) as exc:
        return f"read: {exc}"
    finally:
        env.close()


def _short(buffer: Any) -> str:
    return bytes(buffer).hex() if len(buffer) <= 128 else f"<{len(buffer)} bytes>"


def run(*args: str) -> dict[str, Any]:
    try:
        res = cli(*args)
    except BaseException:  # an escaped exception: the real command would print a traceback
        return {"code": None, "err": [], "exc": traceback.format_exc(limit=6)}
    return {"code": res.code, "err": res.err.strip().splitlines(), "out": res.out, "exc": None}


def main(spec_path: str, results_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    repo = Path(spec["repo"])
    out = Path(spec["scratch"]) / "checkout.out"
    expected: dict[str, str] = spec["snapshots"]
    # The memory limit must bite: a 1 GiB allocation fails.
    try:
        big = bytearray(1 << 30)
        del big
        limited = False
    except MemoryError:
        limited = True
    original_dump = dump_index(repo / "index") if any(f["kind"] == "index" for f in spec["flips"]) else None
    with open(results_path, "w") as results:
        results.write(json.dumps({"memory_limited": limited}) + "\n")
        for i, flip in enumerate(spec["flips"]):
            path = Path(flip["path"])
            with open(path, "r+b") as f:
                f.seek(flip["offset"])
                before = f.read(1)
                f.seek(flip["offset"])
                f.write(bytes([before[0] ^ flip["xor"]]))
            result: dict[str, Any] = {"i": i, **flip}
            try:
                if flip["kind"] == "index":
                    result["live"] = dump_index(repo / "index") != original_dump
                verify = run("verify", "--read-data", "--json", "-r", str(repo))
                if verify["code"] not in (None, 0, 4) and verify["out"]:
                    doc = json.loads(verify["out"])
                    verify["kinds"] = sorted({p["kind"] for p in doc["problems"]})
                    verify["affected"] = doc["affected_snapshots"]
                verify.pop("out", None)
                result["verify"] = verify
                checkouts = {}
                for sid, digest in expected.items():
                    co = run("checkout", sid, "-o", str(out), "--force", "-r", str(repo))
                    co.pop("out", None)
                    if co["code"] == 0:
                        co["identical"] = hashlib.sha256(out.read_bytes()).hexdigest() == digest
                    out.unlink(missing_ok=True)
                    checkouts[sid] = co
                result["checkouts"] = checkouts
            finally:
                with open(path, "r+b") as f:
                    f.seek(flip["offset"])
                    f.write(before)
            results.write(json.dumps(result) + "\n")
            results.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
