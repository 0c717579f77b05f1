"""Commits from streams (issue 16, point 1): stdin, a command's stdout, a binary file object,
and a loop device given as FILE. A stream gets the chunk list a file of the same bytes gets;
a failed command makes no snapshot and leaves nothing gc cannot free."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapstore.model import ChunkRef, ZeroRun
from snapstore.ops.commit import commit_stream
from snapstore.repo import Mode, Repository
from tests.conftest import SNAP, have, run_snap

MiB = 1024 * 1024


def records(repo: Path, snapshot: str) -> list[tuple[str, int]]:
    """A snapshot's chunk list: (chunk id hex or 'zeros', length) in order."""
    with Repository.open(repo, Mode.READ) as r:
        s = r.resolve(snapshot)
        out = []
        for rec in r.iter_records(s.id):
            if isinstance(rec, ChunkRef):
                out.append((rec.chunk_id.hex(), rec.raw_size))
            elif isinstance(rec, ZeroRun):
                out.append(("zeros", rec.length))
        return out


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    assert run_snap("init", str(path), "--chunker", "fastcdc:16K:64K:256K").returncode == 0
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """7 MiB of noise around a 3 MiB hole and 2 MiB of written zeros: zero runs both ways."""
    path = tmp_path / "vm.img"
    with path.open("wb") as f:
        f.write(os.urandom(3 * MiB))
        f.seek(6 * MiB)  # a hole
        f.write(os.urandom(2 * MiB) + bytes(2 * MiB) + os.urandom(2 * MiB + 12800))
    return path


def commit(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    done = run_snap("-r", str(repo), "commit", *args, input=stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


def stats(repo: Path) -> dict[str, int]:
    done = run_snap("stats", "-r", str(repo), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_dd_into_stdin_gives_the_chunk_list_of_the_file(repo: Path, image: Path) -> None:
    from_file = commit(repo, str(image), "--name", "vm.img")
    dd = subprocess.Popen(["dd", f"if={image}", "bs=1M", "status=none"], stdout=subprocess.PIPE)
    piped = subprocess.run(
        [*SNAP, "commit", "-", "--name", "vm.img", "-r", str(repo), "--json"],
        stdin=dd.stdout,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert dd.wait() == 0
    assert piped.returncode == 0, piped.stderr
    doc = json.loads(piped.stdout)
    assert doc["new_chunks"] == 0  # dedup across both: every chunk was stored by the file's commit
    assert doc["source"] == "stdin" and doc["size"] == image.stat().st_size
    assert records(repo, doc["id"]) == records(repo, from_file)
    zeros = sum(n for kind, n in records(repo, doc["id"]) if kind == "zeros")
    assert zeros >= 5 * MiB  # the hole and the written zeros, found in the stream's bytes
    assert doc["zero_bytes"] == zeros
    out = repo.parent / "out.img"
    assert run_snap("checkout", doc["id"], "-o", str(out), "-r", str(repo)).returncode == 0
    assert out.read_bytes() == image.read_bytes()


@pytest.mark.parametrize("size", [0, 1, 8 * MiB, 8 * MiB + 1])
def test_stream_sizes_at_and_around_the_read_size(repo: Path, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    a = commit(repo, str(tmp_path / "f"), "--name", "f")
    b = commit(repo, "-", "--name", "f", stdin=data)
    assert records(repo, a) == records(repo, b)


def test_a_long_zero_run_in_a_stream_is_a_zero_run(repo: Path) -> None:
    data = os.urandom(MiB) + bytes(40 * MiB) + os.urandom(MiB)
    sid = commit(repo, "-", "--name", "z", stdin=data)
    recs = records(repo, sid)
    assert ("zeros", 40 * MiB) in recs
    assert stats(repo)["raw_bytes"] <= 2 * MiB


def test_python_api_commits_a_binary_stream(tmp_path: Path, image: Path) -> None:
    path = tmp_path / "api-repo"
    Repository.init(path).close()
    with Repository.open(path, Mode.WRITE) as r:
        res = commit_stream(r, io.BytesIO(image.read_bytes()), name="vm.img")
        with image.open("rb") as f:
            again = commit_stream(r, f.fileno(), name="vm.img", source=str(image))
    assert res.snapshot.size == image.stat().st_size
    assert again.new_chunks == 0 and again.snapshot.source == str(image)
    assert records(path, res.snapshot.hex) == records(path, again.snapshot.hex)


def test_from_command_stores_the_commands_stdout(repo: Path, image: Path) -> None:
    sid = commit(repo, "--from-command", "--name", "vm.img", "--", "cat", str(image))
    direct = commit(repo, str(image), "--name", "vm.img")
    assert records(repo, sid) == records(repo, direct)
    doc = json.loads(run_snap("show", sid, "-r", str(repo), "--json").stdout)
    assert doc["source"] == f"command: cat {image}"


@pytest.mark.parametrize(
    ("script", "status"),
    [
        ("head -c 3000000 /dev/urandom; exit 1", "exited with status 1"),
        ("head -c 3000000 /dev/urandom; kill -9 $$", "was killed by SIGKILL"),
    ],
)
def test_a_failed_command_makes_no_snapshot_and_gc_frees_its_chunks(
    repo: Path, script: str, status: str
) -> None:
    done = run_snap("commit", "--from-command", "--name", "dump", "-r", str(repo), "--", "sh", "-c", script)
    assert done.returncode == 12, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and status in lines[0] and "no snapshot was made" in lines[0], lines
    assert json.loads(run_snap("log", "-r", str(repo), "--json").stdout) == []
    before = stats(repo)
    assert before["chunks"] > 0  # stored and indexed for a retry...
    assert run_snap("gc", "-r", str(repo)).returncode == 0
    after = stats(repo)
    assert after["chunks"] == 0 and after["raw_bytes"] == 0  # ...and gc frees them


def test_from_command_that_cannot_start(repo: Path) -> None:
    done = run_snap("commit", "--from-command", "--name", "x", "-r", str(repo), "--", "/nonexistent/cmd")
    assert done.returncode == 10, done.stderr
    assert b"/nonexistent/cmd" in done.stderr


def test_a_stream_needs_a_name(repo: Path) -> None:
    done = run_snap("commit", "-", "-r", str(repo), input=b"abc")
    assert done.returncode == 2 and b"--name" in done.stderr
    done = run_snap("commit", "a", "b", "-r", str(repo))
    assert done.returncode == 2


@pytest.fixture
def loop(tmp_path: Path, image: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or not have("losetup"):
        pytest.skip("needs root and losetup")
    dev = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, check=False, text=True)
    if dev.returncode != 0:
        pytest.skip(f"no loop device: {dev.stderr.strip()}")
    name = dev.stdout.strip()
    try:
        node = tmp_path / "loop-node"
        os.mknod(node, stat.S_IFBLK | 0o600, os.stat(name).st_rdev)
        yield node
    finally:
        subprocess.run(["losetup", "-d", name], check=False)


def test_a_loop_device_is_read_like_a_file(repo: Path, image: Path, loop: Path) -> None:
    from_file = commit(repo, str(image), "--name", "vm.img")
    from_device = commit(repo, str(loop), "--name", "vm.img")
    # a loop device's size is its backing file's, rounded down to 512 bytes
    size = image.stat().st_size // 512 * 512
    with Repository.open(repo, Mode.READ) as r:
        assert r.resolve(from_device).size == size
    assert size == image.stat().st_size  # (the image is made a multiple of 512 bytes)
    assert records(repo, from_device) == records(repo, from_file)
    out = repo.parent / "dev.out"
    assert run_snap("checkout", from_device, "-o", str(out), "-r", str(repo)).returncode == 0
    assert out.read_bytes() == image.read_bytes()[:size]


def test_memory_stays_bounded_whatever_the_stream_length(repo: Path) -> None:
    # 400 MiB through a pipe (a random MiB over and over: little is stored); the commit's peak
    # resident memory is that of a file's commit, not the stream's length
    feed = "import os,sys\nb=os.urandom(1<<20)\nfor _ in range(400): sys.stdout.buffer.write(b)\n"
    report = (
        "import sys\nfrom snapstore.cli.app import main\nrc = main(sys.argv[1:])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "sys.stderr.write('\\nHWM ' + hwm + '\\n')\nsys.exit(rc)\n"
    )
    producer = subprocess.Popen([sys.executable, "-c", feed], stdout=subprocess.PIPE)
    done = subprocess.run(
        [sys.executable, "-c", report, "-r", str(repo), "commit", "-", "--name", "big", "--json"],
        stdin=producer.stdout,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert producer.wait() == 0
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["size"] == 400 * MiB
    peak_kib = int(done.stderr.decode().strip().splitlines()[-1].split()[1])
    assert peak_kib < 300 * 1024, peak_kib
