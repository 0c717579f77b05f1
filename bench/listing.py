"""Listing cost against history size: N snapshots of a file of many chunks.

    python bench/listing.py --work DIR [--size 2G] [--chunk 4K] [--snapshots 400] [--every 50]

Commits the file N times, each a little changed (0.1% of its chunks rewritten), and at every
``--every``-th snapshot times `snap log --json`, `snap stats --json` and `snap prune --quota X
--dry-run --json` (X: the repository's size less half the oldest snapshot's exclusive size,
so that the plan drops one snapshot) and the commit itself. 2 GiB in 4 KiB chunks is the
chunk count of a 500 GiB image in 1 MiB chunks (512k). Prints one row per checkpoint;
--json for a machine-readable record.
A repository left in DIR from an earlier run is continued, not rebuilt.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--size", default="2G")
    ap.add_argument("--chunk", default="4K")
    ap.add_argument("--snapshots", type=int, default=400)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--json", action="store_true")
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
    print(f"{'snapshots':>9} {'commit s':>9} {'log s':>7} {'stats s':>8} {'prune s':>8}", flush=True)
    for n in range(have + 1, args.snapshots + 1):
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
