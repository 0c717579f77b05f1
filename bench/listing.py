"""Listing cost against history size: N snapshots of a file of many chunks.

    python bench/listing.py --work DIR [--size 2G] [--chunk 4K] [--snapshots 400] [--every 50]

Commits the file N times, each a little changed (0.1% of its chunks rewritten), and at every
``--every``-th snapshot times `snap log --json`, `snap stats --json` and `snap prune --quota X
--dry-run --json` (X: the repository's size less half the oldest snapshot's exclusive size,
so that the plan drops one snapshot) and the commit itself. 2 GiB in 4 KiB chunks is the
chunk count of a 500 GiB image in 1 MiB chunks (512k). Prints one row per checkpoint;
--json for a machine-readable record.
A repository left in DIR from an earlier run is continued, not rebuilt.

``--fast`` makes every snapshot after the first through the library instead of `snap commit`:
with the fixed chunker a rewritten chunk changes that chunk's id alone, so the new snapshot's
chunk list is the previous one with the rewritten chunks' new ids: the manifest `snap commit`
would write (but for times), stored, counted and published the same way, without reading and
hashing the whole file each day. Its "add s" column is then that cost, not a commit's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

SNAP = [sys.executable, "-m", "snapstore"]


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def timed(*args: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    done = subprocess.run([*SNAP, *args], capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"snap {' '.join(args)} failed: {done.stderr.decode().strip()}")
    return elapsed, done.stdout


def change(path: Path, rng: random.Random, chunk: int, share: float) -> None:
    """Rewrite ``share`` of the file's chunks in place (a guest writing blocks)."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        for _ in range(max(1, int(size / chunk * share))):
            f.seek(rng.randrange(size // chunk) * chunk)
            f.write(rng.randbytes(chunk))


def add_fast(repo: Path, image: Path, rng: random.Random, chunk: int, share: float) -> float:
    """Rewrite ``share`` of the image's chunks and add the snapshot `snap commit` would make."""
    from datetime import UTC, datetime

    import blake3

    from snapstore.model import ChunkRef, EntryEnd, EntryStart
    from snapstore.repo import Mode, Repository

    size = image.stat().st_size
    new: dict[int, bytes] = {}
    with image.open("r+b") as f:
        for _ in range(max(1, int(size / chunk * share))):
            k = rng.randrange(size // chunk)
            new[k] = rng.randbytes(chunk)
            f.seek(k * chunk)
            f.write(new[k])
    start = time.perf_counter()
    digest = blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(image).digest()
    with Repository.open(repo, Mode.WRITE) as r:
        prev = r.list_snapshots()[-1]
        ids = {k: r.put_chunk(data)[0] for k, data in new.items()}
        builder = r.begin_snapshot()
        k = 0
        for rec in r.iter_records(prev.id):
            if isinstance(rec, EntryStart):
                builder.start_entry(rec.path, rec.mode, rec.mtime_ns)
            elif isinstance(rec, ChunkRef):
                builder.add_chunk(ids.get(k, rec.chunk_id), rec.raw_size)
                k += 1
            elif isinstance(rec, EntryEnd):
                builder.end_entry(rec.size, digest)
        r.publish_snapshot(
            builder,
            name=prev.name,
            created=datetime.now(UTC),
            message="",
            source=str(image),
            sequence=(prev.sequence or 0) + 1,
        )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--size", default="2G")
    ap.add_argument("--chunk", default="4K")
    ap.add_argument("--snapshots", type=int, default=400)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fast", action="store_true", help="snapshots after the first through the library")
    args = ap.parse_args()
    size, chunk = parse_size(args.size), parse_size(args.chunk)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    repo, image = work / "repo", work / "vm.img"
    rng = random.Random(len(list((repo / "snapshots").iterdir())) if repo.exists() else 0)
    if not repo.exists():
        timed("init", "-r", str(repo), "--chunker", f"fixed:{args.chunk}")
    if not image.exists():
        with image.open("wb") as f:
            for _ in range(size // (64 << 20)):
                f.write(os.urandom(64 << 20))
    have = len(list((repo / "snapshots").iterdir()))
    rows = []
    first = "add s" if args.fast else "commit s"
    print(f"{'snapshots':>9} {first:>9} {'log s':>7} {'stats s':>8} {'prune s':>8}", flush=True)
    for n in range(have + 1, args.snapshots + 1):
        if args.fast and n > 1:
            commit_s = add_fast(repo, image, rng, chunk, 0.001)
        else:
            change(image, rng, chunk, 0.001)
            commit_s, _ = timed("commit", str(image), "-r", str(repo), "--name", "vm.img", "--json")
        if n % args.every and n != 1:
            continue
        log_s, _ = timed("log", "-r", str(repo), "--json")
        stats_s, stats = timed("stats", "-r", str(repo), "--json")
        doc = json.loads(stats)
        disk, oldest = doc["disk_bytes"], doc["snapshots"][0]["exclusive_bytes"]
        prune_s = float("nan")  # the one snapshot there is cannot be dropped
        if n > 1:
            prune_s, _ = timed(
                "prune", "-r", str(repo), "--quota", str(disk - max(4096, oldest // 2)), "--dry-run", "--json"
            )
        row = {"snapshots": n, "commit_s": commit_s, "log_s": log_s, "stats_s": stats_s, "prune_s": prune_s}
        rows.append(row)
        print(f"{n:>9} {commit_s:>9.2f} {log_s:>7.2f} {stats_s:>8.2f} {prune_s:>8.2f}", flush=True)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
