"""How tests/data/format1-repo.tar.gz was made, with snap 0.1.0 (format 1, main at ae414e2).

Run once, never again: the archive is a frozen repository of an older format that every
later snap must read (tests/test_frozen_format1.py). Kept for the record of what is in it:

    python tests/data/make_format1.py OUT_DIR

makes OUT_DIR/format1-repo.tar.gz and OUT_DIR/format1-expected.json.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import blake3

SNAP = [sys.executable, "-m", "snapstore"]


def text(rng: random.Random, size: int) -> bytes:
    words = [b"disk", b"image", b"kernel", b"boot", b"ext4", b"inode", b"journal", b"qemu"]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
    return bytes(out[:size])


def snap(repo: Path, command: str, *args: str) -> str:
    done = subprocess.run([*SNAP, command, "-r", str(repo), *args], check=True, capture_output=True)
    return done.stdout.decode().strip()


def main(out: Path) -> None:
    rng = random.Random(20261203)
    v1 = bytearray(text(rng, 600_000) + bytes(300_000) + rng.randbytes(700_000) + text(rng, 400_000))
    v2 = bytearray(v1)
    v2[100_000:104_000] = rng.randbytes(4000)  # a guest rewrites a block
    v2 += text(rng, 50_000)  # and appends
    v3 = bytearray(v2)
    v3[1_000_000:1_000_000] = rng.randbytes(5000)  # shifted: 5000 bytes inserted
    expected = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "repo"
        snap(repo, "init", "--chunker", "fastcdc:4096:16384:65536:16384")
        sparse = work / "sparse.img"
        with sparse.open("wb") as f:  # a hole of 1 MiB between two pieces of data
            f.write(text(rng, 70_000))
            f.seek(70_000 + (1 << 20))
            f.write(rng.randbytes(30_000))
        ids = []
        for n, data in enumerate((v1, v2, v3), 1):
            path = work / "vm.img"
            path.write_bytes(data)
            sid = snap(repo, "commit", str(path), "--name", "vm.img", "-m", f"day {n}")
            ids.append(sid)
            expected[sid] = {"name": "vm.img", "blake3": blake3.blake3(data).hexdigest()}
        sid = snap(repo, "commit", str(sparse), "--name", "sparse.img")
        expected[sid] = {"name": "sparse.img", "blake3": blake3.blake3(sparse.read_bytes()).hexdigest()}
        snap(repo, "pin", ids[0])
        snap(repo, "rm", ids[1])  # removed and collected: its pack has holes now
        del expected[ids[1]]
        snap(repo, "gc")
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out / "format1-repo.tar.gz", "w:gz") as tar:
            tar.add(repo, arcname="repo")
    (out / "format1-expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
