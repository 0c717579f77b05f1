"""The scattered-writes chain (issue 15): a daily history of an image of which each day
rewrites 1% of the allocated 4 KiB blocks at scattered places (half new bytes, half copies
of other blocks), or, with ``--clustered``, the same number of blocks in runs of 64. Compares
the repository size after every day and the restore time of the oldest and newest day of
snap (full chunks), snap --delta, rdiff-backup, restic and borg (those installed).

    python bench/chain.py --source IMAGE --size 256M --days 12 --work /tmp/chain
    python bench/bench.py --chain scattered --size 1G   # the same, day 0 built by bench.py

Day 0 is ``--size`` bytes of ``--source`` from ``--offset`` (a real disk image), its zero
blocks left as holes. Nothing here is asserted: the figures go into the report.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

BLOCK = 4096
IMAGE = "vm.img"


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def make_days(source: Path, offset: int, size: int, days: int, out: Path, clustered: bool) -> list[Path]:
    rng = random.Random(15)
    with open(source, "rb") as f:
        f.seek(offset)
        img = bytearray(f.read(size))
    zero = bytes(BLOCK)
    allocated = [b for b in range(size // BLOCK) if img[b * BLOCK : (b + 1) * BLOCK] != zero]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for day in range(days + 1):
        if day:
            count = max(1, len(allocated) // 100)
            if clustered:
                starts = rng.sample(allocated, max(1, count // 64))
                targets = [s + i for s in starts for i in range(64) if s + i < size // BLOCK][:count]
            else:
                targets = rng.sample(allocated, count)
            for i, b in enumerate(targets):
                if i % 2:
                    img[b * BLOCK : (b + 1) * BLOCK] = rng.randbytes(BLOCK)
                else:
                    c = rng.choice(allocated)
                    img[b * BLOCK : (b + 1) * BLOCK] = img[c * BLOCK : (c + 1) * BLOCK]
        path = out / f"day{day:02d}.img"
        with open(path, "wb") as f:  # zero blocks as holes
            for b in range(size // BLOCK):
                block = img[b * BLOCK : (b + 1) * BLOCK]
                if block != zero:
                    f.seek(b * BLOCK)
                    f.write(block)
            f.truncate(size)
        paths.append(path)
    print(f"{len(allocated)} allocated blocks ({len(allocated) * BLOCK >> 20} MiB) of {size >> 20} MiB")
    return paths


def du(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, check=False)
    if done.returncode:
        raise SystemExit(f"{argv[:3]}: {done.stderr.decode()[-2000:]}")
    return done.stdout.decode(), time.perf_counter() - start


SNAP = [sys.executable, "-m", "snapstore"]


def chain(tool: str, days: list[Path], work: Path) -> dict[str, object]:
    repo, stage, cache = work / f"{tool}-repo", work / f"{tool}-stage", work / f"{tool}-cache"
    for d in (repo, stage, cache):
        shutil.rmtree(d, ignore_errors=True)
    stage.mkdir(parents=True)
    env = {
        "RESTIC_PASSWORD": "x",
        "RESTIC_CACHE_DIR": str(cache),
        "BORG_BASE_DIR": str(cache),
        "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
    }
    if tool.startswith("snap"):
        run([*SNAP, "init", str(repo), *(["--delta"] if tool == "snap-delta" else [])], work)
    elif tool == "restic":
        run(["restic", "-r", str(repo), "init"], work, env)
    elif tool == "borg":
        run(["borg", "init", "-e", "none", str(repo)], work, env)
    refs, sizes, commit_s = [], [], []
    for n, day in enumerate(days):
        shutil.copyfile(day, stage / IMAGE)  # (snap, restic, borg read holes as zeros alike)
        when = 1_764_720_000 + n * 86400
        if tool.startswith("snap"):
            out, secs = run([*SNAP, "commit", IMAGE, "-r", str(repo), "--json"], stage)
            refs.append(str(json.loads(out)["id"]))
        elif tool == "restic":
            out, secs = run(["restic", "-r", str(repo), "backup", "--json", IMAGE], stage, env)
            refs.append(next(json.loads(x)["snapshot_id"] for x in out.splitlines() if "snapshot_id" in x))
        elif tool == "borg":
            out, secs = run(["borg", "create", "--compression", "zstd,3", f"{repo}::d{n}", IMAGE], stage, env)
            refs.append(f"d{n}")
        else:
            argv = ["rdiff-backup", "--current-time", str(when), "backup", str(stage), str(repo)]
            out, secs = run(argv, work)
            refs.append(str(when))
        sizes.append(du(repo))
        commit_s.append(round(secs, 2))
    restore = {}
    for label, i in (("oldest", 0), ("newest", len(days) - 1)):
        target = work / f"{tool}-restore"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        if tool.startswith("snap"):
            _, secs = run([*SNAP, "checkout", refs[i], "-r", str(repo), "-o", str(target / IMAGE)], work)
        elif tool == "restic":
            _, secs = run(["restic", "-r", str(repo), "restore", refs[i], "--target", str(target)], work, env)
        elif tool == "borg":
            _, secs = run(["borg", "extract", "--sparse", f"{repo}::{refs[i]}"], target, env)
        else:
            _, secs = run(["rdiff-backup", "restore", "--at", refs[i], str(repo), str(target / "r")], work)
        got = target / IMAGE if (target / IMAGE).exists() else target / "r" / IMAGE
        same = subprocess.run(["cmp", "-s", str(got), str(days[i])], check=False).returncode == 0
        restore[label] = {"seconds": round(secs, 2), "identical": same}
        shutil.rmtree(target)
    return {"tool": tool, "repo_bytes": sizes, "commit_seconds": commit_s, "restore": restore}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--offset", type=size_arg, default=0)
    parser.add_argument("--size", type=size_arg, default=256 << 20)
    parser.add_argument("--days", type=int, default=12)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--clustered", action="store_true")
    parser.add_argument("--tools", default="snap,snap-delta,rdiff-backup,restic,borg")
    args = parser.parse_args(argv)
    days = make_days(args.source, args.offset, args.size, args.days, args.work / "days", args.clustered)
    results = []
    for tool in args.tools.split(","):
        if not tool.startswith("snap") and shutil.which(tool) is None:
            continue
        result = chain(tool, days, args.work)
        results.append(result)
        sizes = result["repo_bytes"]
        assert isinstance(sizes, list)
        print(f"{tool:13} {sizes[-1] / (1 << 20):8.1f} MiB after {args.days} days; {json.dumps(result)}")
        sys.stdout.flush()
    (args.work / "chain.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
