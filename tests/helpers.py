"""Helpers shared by the commit/checkout tests (files, digests, repositories)."""

from __future__ import annotations

import errno
import filecmp
import hashlib
import io
import json
import os
import random
import resource
import shutil
import subprocess
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from snapstore import Repository, checkout
from snapstore.cli.app import main
from snapstore.model import ChunkerParams, ChunkRef, SnapshotId, ZeroRun
from tests.conftest import SNAP, run_snap

BLOCK = 8 << 20
_ZERO_BLOCK = bytes(BLOCK)


def file_digest(path: Path | str) -> str:
    """BLAKE3 of a file's bytes, read in blocks. Blocks that are wholly a hole are hashed as
    the zeros they read as without reading them (POSIX: a hole reads as zeros), so a sparse
    4 GiB file costs what its data costs."""
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            n = min(BLOCK, size - pos)
            if _all_hole(fd, pos, n):
                h.update(memoryview(_ZERO_BLOCK)[:n])
            else:
                got = os.preadv(fd, [view[:n]], pos)
                assert got == n, f"short read at {pos}"
                h.update(view[:n])
            pos += n
    finally:
        os.close(fd)
    return str(h.hexdigest())


def _all_hole(fd: int, pos: int, n: int) -> bool:
    try:
        return os.lseek(fd, pos, os.SEEK_DATA) >= pos + n
    except OSError as exc:
        return exc.errno == errno.ENXIO  # only a hole remains up to EOF


def write_sparse(path: Path, size: int, pieces: list[tuple[int, bytes]], *, sparse: bool = True) -> None:
    """A file of ``size`` bytes: holes except for ``pieces`` (offset, data); with ``sparse``
    False, written zeros instead of the holes."""
    with open(path, "wb") as f:
        if not sparse:
            f.write(bytes(size))
        f.truncate(size)
        for offset, data in pieces:
            f.seek(offset)
            f.write(data)


def text_bytes(n: int, seed: int = 0) -> bytes:
    """Compressible, text-like bytes."""
    rng = random.Random(seed)
    words = [
        bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz ") for _ in range(rng.randrange(2, 12)))
        for _ in range(400)
    ]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b"\n"
    return bytes(out[:n])


def checkout_digest(repo: Repository, ref: str, out: Path, *, name: str | None = None) -> str:
    checkout(repo, repo.resolve(ref, name=name), str(out), force=True)
    return file_digest(out)


def chunk_sizes(repo: Repository, snapshot_id: SnapshotId) -> list[int]:
    return [r.raw_size for r in repo.iter_records(snapshot_id) if isinstance(r, ChunkRef)]


def zero_run_bytes(repo: Repository, snapshot_id: SnapshotId) -> int:
    return sum(r.length for r in repo.iter_records(snapshot_id) if isinstance(r, ZeroRun))


def init_repo(path: Path, chunker: ChunkerParams | None = None, pack_target_size: int = 1 << 20) -> Path:
    Repository.init(path, chunker=chunker, pack_target_size=pack_target_size).close()
    return path


def temp_leftovers(directory: Path) -> list[str]:
    """Files a checkout or commit may have left behind in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if ".snap-tmp-" in p.name or ".tmp-" in p.name)


def start_holding_lock(args: list[str], repo: Path) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``snap ARGS -r REPO``; return it once it holds the write lock (and when).

    The holder writes its pid into ``locks/write`` right after taking the lock, so the time
    returned is when its work began; kill times derived from it land mid-run on a fast or a
    slow machine alike. A command that is over before its pid was seen is returned at once
    (``poll()`` then tells)."""
    env = {k: v for k, v in os.environ.items() if k != "SNAP_REPO"}
    proc = subprocess.Popen(
        [*SNAP, *args, "-r", str(repo)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    needle = f'"pid": {proc.pid},'.encode()
    lock = repo / "locks" / "write"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if needle in lock.read_bytes():
                return proc, time.monotonic()
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return proc, time.monotonic()
        time.sleep(0.0003)
    proc.kill()
    raise AssertionError(f"snap {args[0]} never took the lock")


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli(*args: str | Path) -> CliResult:
    """Run ``snap ARGS`` in this process (fast); exit code, stdout and stderr. An exception
    that is not a snapstore error escapes, as it would print a traceback."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return CliResult(code, out.getvalue(), err.getvalue())


def one_error_line(err: str) -> str:
    """The documented error shape: one stderr line 'snap: error: ...', no traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {lines}"
    assert lines[0].startswith("snap: error: "), lines[0]
    return lines[0]


def file_sha(path: Path) -> str:
    """sha256 of a file's bytes, read a MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def checks_out(repo: Path, snapshot_id: str, original: Path, out_dir: Path) -> bool:
    """Whether ``snap checkout`` (a real process) gives back ``original`` byte for byte."""
    out = out_dir / f"co-{snapshot_id[:12]}"
    done = run_snap("checkout", snapshot_id, "-o", str(out), "-f", "-r", str(repo))
    assert done.returncode == 0, f"checkout {snapshot_id[:12]}: {done.stderr.decode()}"
    same = filecmp.cmp(out, original, shallow=False)
    out.unlink()
    return same


def copy_repository(src: Path, dst: Path) -> Path:
    """A copy of a repository. The 16 MiB ``reserve`` file is hard-linked, not copied: it is
    only ever unlinked and recreated, never written in place."""

    def copy(a: str, b: str) -> None:
        if Path(a).name == "reserve":
            os.link(a, b)
        else:
            shutil.copy2(a, b)

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, copy_function=copy)
    return dst


def content_sha(repo: Repository, snapshot_id: SnapshotId) -> str:
    """sha256 of a snapshot's content, read chunk by chunk (each checked against its id, the
    manifest against the snapshot id): what checkout reads, without writing a file."""
    h = hashlib.sha256()
    for record in repo.iter_records(snapshot_id):
        if isinstance(record, ChunkRef):
            h.update(repo.get_chunk(record.chunk_id))
        elif isinstance(record, ZeroRun):
            h.update(bytes(record.length))
    return h.hexdigest()


def flip(path: Path, offset: int, xor: int = 0x01) -> None:
    """XOR one byte of a file in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        assert len(byte) == 1, f"{path} has no byte at {offset}"
        f.seek(offset)
        f.write(bytes([byte[0] ^ xor]))


def snap_limited(
    *args: str | Path,
    timeout: float,
    rlimits: dict[int, int] | None = None,
    umask: int | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """The real ``snap`` command under resource limits (``resource.RLIMIT_*`` -> value) and
    a timeout (a hang raises TimeoutExpired), without the caller's SNAP_REPO."""

    def limits() -> None:
        for which, value in (rlimits or {}).items():
            resource.setrlimit(which, (value, value))
        if umask is not None:
            os.umask(umask)

    env = {k: v for k, v in os.environ.items() if k != "SNAP_REPO"}
    return subprocess.run(
        [*SNAP, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=timeout,
        preexec_fn=limits,
        check=False,
    )
