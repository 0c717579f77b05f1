#!/usr/bin/env python3
"""A nightly backup job written against snapstore's Python API.

Commits each image into a repository (created on the first night), keeps the repository
within a quota, prunes by keep rules, frees the space, verifies a sample of the data, and
restores the newest snapshot of the first image to check it byte for byte.

Usage: python3 examples/nightly.py [REPO IMAGE...]
  Without arguments a small demo image and repository are made in a temporary directory,
  removed at the end. Exit status: 0 when everything went well, 1 otherwise.
"""

from __future__ import annotations

import filecmp
import os
import sys
import tempfile
from pathlib import Path

import snapstore
from snapstore import KeepPolicy, Mode, SnapstoreError

KEEP = KeepPolicy(last=3, daily=7, weekly=4)  # the CLI's --keep-last 3 --keep-daily 7 ...


def nightly(repo_path: Path, images: list[Path], restore_dir: Path) -> int:
    with snapstore.open_repository(repo_path, Mode.WRITE, create=True) as repo:
        for image in images:
            # Honours the repository quota, as 'snap commit' does (QuotaError if it cannot).
            result = snapstore.commit_file(repo, image, message="nightly")
            print(
                f"{image.name}: snapshot {result.snapshot.hex[:12]}, "
                f"{result.new_chunks} new of {result.chunks} chunks"
            )
            for dropped in result.pruned:
                print(f"  quota: dropped {dropped.hex[:12]}")
    with snapstore.open_repository(repo_path, Mode.EXCLUSIVE) as repo:
        pruned = snapstore.prune(repo, KEEP)  # also applies the configured quota; runs gc
        print(f"prune: dropped {len(pruned.plan.drop)} snapshots, freed {pruned.gc.freed_bytes} bytes")
        freed = snapstore.gc(repo)
        print(f"gc: freed {freed.freed_bytes} more bytes")
    with snapstore.open_repository(repo_path, Mode.CHECK) as repo:
        report = snapstore.verify(repo, sample=25.0)  # percent of the chunks read back
        for problem in report.problems:
            print(f"verify: {problem.kind}: {problem.detail}", file=sys.stderr)
        if not report.ok:
            return 1
        print(f"verify: {report.snapshots} snapshots, {report.chunks_read} chunks read back, no problems")
    with snapstore.open_repository(repo_path) as repo:
        newest = repo.resolve("latest", name=images[0].name)
        out = restore_dir / f"{images[0].name}.restored"
        snapstore.checkout(repo, newest, str(out), force=True)
        same = filecmp.cmp(out, images[0], shallow=False)
        out.unlink()
    print(f"restore of {images[0].name}: {'identical' if same else 'DIFFERENT'}")
    return 0 if same else 1


def demo_image(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB, 2 MiB of data
        f.write(os.urandom(1 << 20))
        f.seek(40 << 20)
        f.write(os.urandom(1 << 20))
    return path


def main(argv: list[str]) -> int:
    try:
        if argv:
            repo, *images = (Path(a) for a in argv)
            with tempfile.TemporaryDirectory() as work:
                return nightly(repo, images, Path(work))
        with tempfile.TemporaryDirectory(prefix="snap-nightly.") as work:
            image = demo_image(Path(work) / "vm.img")
            code = nightly(Path(work) / "repo", [image], Path(work))
            # a second night, after the guest changed a block
            with open(image, "r+b") as f:
                f.seek(4096)
                f.write(os.urandom(65536))
            return code or nightly(Path(work) / "repo", [image], Path(work))
    except SnapstoreError as exc:
        print(f"nightly: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
