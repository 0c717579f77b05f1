"""A commit or a gc on a repository over the local backend, in a process of its own for
tests/test_backend_crash.py to kill (``python -m tests.backend_crash_worker OBJECTS CACHE
commit IMAGE MESSAGE`` or ``... gc``)."""

from __future__ import annotations

import sys
from pathlib import Path

import snapstore
from snapstore import Mode
from snapstore.backends import LocalBackend
from snapstore.repo import Repository


def main(objects: str, cache: str, op: str, *args: str) -> None:
    with LocalBackend(Path(objects)) as backend:
        mode = Mode.WRITE if op == "commit" else Mode.EXCLUSIVE
        with Repository.open_backend(backend, mode, cache_dir=Path(cache)) as repo:
            if op == "commit":
                snapstore.commit_file(repo, Path(args[0]), name="disk.img", message=args[1])
            else:
                snapstore.gc(repo, repack_threshold=1.0)


if __name__ == "__main__":
    main(*sys.argv[1:])
