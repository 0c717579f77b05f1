"""Real ``snap`` processes at the same time. Writers exclude each other and fail fast with the
lock message (exit 6) naming the holder; readers run beside a commit; gc and prune wait for
no checkout (exit 6 while one runs). A killed writer's lock is gone at once (the kernel
releases flock) and its record is reported by the next writer. Afterwards everything
verifies and checks out identical.

Each race is run as "start the long command, wait until it holds its lock, stop it there
(SIGSTOP) and try the other one, let it go on and try again and again until it ends": the
outcome of every try is checked, and the first one meets the long command mid-work whatever
the machine's speed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from snapstore import Mode, Repository, commit_file
from tests.conftest import SMALL_CHUNKER, SNAP, run_snap
from tests.helpers import file_sha, one_error_line, start_holding_lock
from tests.test_gc import make_base, rewrite

pytestmark = pytest.mark.slow
MiB = 1 << 20
LOCKED = 6


def big_file(path: Path, mib: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(mib // 8):
            f.write(rng.randbytes(8 * MiB))
    return path


def init(path: Path) -> Path:
    Repository.init(path, pack_target_size=16 << 20).close()
    return path


def verify_ok(repo: Path) -> None:
    done = run_snap("verify", "--read-data", "-r", str(repo))
    assert done.returncode == 0, done.stderr.decode()


def snapshots(repo: Path) -> dict[str, str]:
    done = run_snap("log", "--json", "-r", str(repo))
    assert done.returncode == 0, done.stderr.decode()
    return {s["message"] or s["name"]: s["id"] for s in json.loads(done.stdout)}


def checks_out(repo: Path, sid: str, expected: str, out: Path) -> None:
    done = run_snap("checkout", sid, "-o", str(out), "-f", "-r", str(repo))
    assert done.returncode == 0, done.stderr.decode()
    assert file_sha(out) == expected
    out.unlink()


@contextmanager
def frozen(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """Stop ``proc`` (SIGSTOP) where it is, holding whatever lock it holds; go on after."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


def holds_lock(pid: int, lock: Path) -> bool:
    """Whether process ``pid`` holds a flock on ``lock`` (from /proc/locks)."""
    inode = os.stat(lock).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and str(pid) in fields:
            device_inode = fields[fields.index(str(pid)) + 1]
            if int(device_inode.rsplit(":", 1)[1]) == inode:
                return True
    return False


def race(
    long: subprocess.Popen[bytes], lock: Path, attempt: Callable[[], subprocess.CompletedProcess[bytes]]
) -> list[tuple[str, subprocess.CompletedProcess[bytes]]]:
    """One ``attempt`` while ``long`` is stopped mid-work (so that it surely meets it, on a
    fast machine too), then more while it runs on; each result comes with 'met' (``long``
    still held ``lock`` when the attempt returned) or 'after' (it had let go)."""
    with frozen(long):
        assert holds_lock(long.pid, lock)
        tries = [("met", attempt())]
    while long.poll() is None:
        res = attempt()
        tries.append(("met" if holds_lock(long.pid, lock) else "after", res))
    assert long.wait(timeout=300) == 0, long.stderr.read() if long.stderr else ""
    return tries


def locked_out(tries: list[tuple[str, subprocess.CompletedProcess[bytes]]], *needles: str) -> None:
    """Every try either failed with the lock message (one line, naming ``needles``) or ran
    after the long command ended."""
    for outcome, res in tries:
        if res.returncode == 0:
            assert outcome == "after", "it ran while the other command held the lock"
            continue
        assert res.returncode == LOCKED, res.stderr.decode()
        line = one_error_line(res.stderr.decode())
        assert all(n in line for n in needles), line
    assert tries[0][1].returncode == LOCKED


def test_two_commits_to_one_repository(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    big = big_file(tmp_path / "big.img", 160, 1)
    small = tmp_path / "small.img"
    small.write_bytes(random.Random(2).randbytes(MiB))
    long, _ = start_holding_lock(["commit", str(big), "-m", "big"], repo)
    tries = race(long, repo / "locks" / "write", lambda: run_snap("commit", str(small), "-r", str(repo)))
    locked_out(tries, f"locked by pid {long.pid} on {socket.gethostname()}", "commit")
    snaps = snapshots(repo)
    assert "big" in snaps
    verify_ok(repo)
    checks_out(repo, snaps["big"], file_sha(big), tmp_path / "out")


def test_verify_and_commit_exclude_each_other(tmp_path: Path) -> None:
    """verify needs a repository nothing changes under: a commit fails fast beside it, and
    it fails fast beside a commit; a checkout runs beside verify."""
    repo = init(tmp_path / "repo")
    big = big_file(tmp_path / "big.img", 160, 60)
    assert run_snap("commit", str(big), "-m", "big", "-r", str(repo)).returncode == 0
    long, _ = start_holding_lock(["commit", str(big), "-m", "again"], repo)
    tries = race(long, repo / "locks" / "write", lambda: run_snap("verify", "-r", str(repo)))
    locked_out(tries, f"locked by pid {long.pid}", "commit")
    small = tmp_path / "small.img"
    small.write_bytes(b"small" * 1000)
    verifier, _ = start_holding_lock(["verify", "--read-data"], repo)
    with frozen(verifier):
        line = clean_error_line(run_snap("commit", str(small), "-r", str(repo)))
        assert f"locked by pid {verifier.pid}" in line and "verify" in line, line
        done = run_snap("checkout", snapshots(repo)["big"], "-o", str(tmp_path / "out"), "-r", str(repo))
        assert done.returncode == 0, done.stderr.decode()
    assert verifier.wait(timeout=120) == 0
    assert file_sha(tmp_path / "out") == file_sha(big)


def clean_error_line(res: subprocess.CompletedProcess[bytes]) -> str:
    assert res.returncode == LOCKED, res.stderr.decode()
    return one_error_line(res.stderr.decode())


def test_two_commits_to_two_repositories(tmp_path: Path) -> None:
    repos = [init(tmp_path / f"repo{i}") for i in range(2)]
    files = [big_file(tmp_path / f"big{i}.img", 128, 10 + i) for i in range(2)]
    procs = [
        subprocess.Popen(
            [*SNAP, "commit", str(f), "-r", str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for f, r in zip(files, repos, strict=True)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    for repo, f in zip(repos, files, strict=True):
        verify_ok(repo)
        (sid,) = snapshots(repo).values()
        checks_out(repo, sid, file_sha(f), tmp_path / "out")


def test_checkout_during_a_commit(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    old = big_file(tmp_path / "old.img", 64, 20)
    assert run_snap("commit", str(old), "-m", "old", "-r", str(repo)).returncode == 0
    old_id = snapshots(repo)["old"]
    big = big_file(tmp_path / "big.img", 160, 21)
    out = tmp_path / "out"
    long, _ = start_holding_lock(["commit", str(big), "-m", "big"], repo)
    checkout = ["checkout", old_id, "-o", str(out), "-f", "-r", str(repo)]
    tries = race(long, repo / "locks" / "write", lambda: run_snap(*checkout))
    for _, res in tries:
        assert res.returncode == 0, res.stderr.decode()
    assert file_sha(out) == file_sha(old)
    assert "met" in [o for o, _ in tries], "no checkout met the commit running"
    verify_ok(repo)
    checks_out(repo, snapshots(repo)["big"], file_sha(big), out)


@pytest.fixture
def garbage_repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Small chunks and packs; versions that each rewrite scattered pieces, all but the last
    removed: gc punches hundreds of ranges out of live packs (one fsync each)."""
    repo = tmp_path / "repo"
    Repository.init(repo, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    data = make_base(30, 32 * MiB)
    src = tmp_path / "src"
    kept = {}
    with Repository.open(repo, Mode.WRITE) as r:
        for i in range(8):
            rewrite(data, 300 + i, 150, 4096)
            src.write_bytes(data)
            s = commit_file(r, src, name="disk").snapshot
            if i < 7:
                r.remove_snapshot(s.id)
            else:
                kept[s.hex] = hashlib.sha256(data).hexdigest()
    return repo, kept


def test_commit_during_gc(tmp_path: Path, garbage_repo: tuple[Path, dict[str, str]]) -> None:
    repo, kept = garbage_repo
    small = tmp_path / "small.img"
    small.write_bytes(random.Random(31).randbytes(MiB))
    long, _ = start_holding_lock(["gc"], repo)
    tries = race(long, repo / "locks" / "write", lambda: run_snap("commit", str(small), "-r", str(repo)))
    locked_out(tries, f"locked by pid {long.pid}", "gc")
    verify_ok(repo)
    for sid, digest in kept.items():
        checks_out(repo, sid, digest, tmp_path / "out")


def test_gc_while_a_checkout_runs(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    big = big_file(tmp_path / "big.img", 160, 40)
    doomed = big_file(tmp_path / "doomed.img", 16, 41)
    for f, m in ((big, "big"), (doomed, "doomed")):
        assert run_snap("commit", str(f), "-m", m, "-r", str(repo)).returncode == 0
    snaps = snapshots(repo)
    assert run_snap("rm", snaps["doomed"], "-r", str(repo)).returncode == 0
    out = tmp_path / "out.img"
    reader = subprocess.Popen(
        [*SNAP, "checkout", snaps["big"], "-o", str(out), "-r", str(repo)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(f".out.img.snap-tmp-{reader.pid}-*")):  # it holds the data lock
        assert reader.poll() is None and time.monotonic() < deadline, "the checkout never started"
        time.sleep(0.001)
    tries = race(reader, repo / "locks" / "data", lambda: run_snap("gc", "-r", str(repo)))
    locked_out(tries, "running checkout")
    assert file_sha(out) == file_sha(big)
    assert run_snap("gc", "-r", str(repo)).returncode == 0
    verify_ok(repo)


# -- locks of killed processes ----------------------------------------------------------------------------


def test_a_killed_writers_lock_is_gone_at_once_and_reported(tmp_path: Path) -> None:
    repo = init(tmp_path / "repo")
    big = big_file(tmp_path / "big.img", 160, 50)
    victim, _ = start_holding_lock(["commit", str(big)], repo)
    assert victim.poll() is None, "the commit ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    record = json.loads((repo / "locks" / "write").read_bytes())
    assert record["pid"] == victim.pid  # what a killed writer leaves
    small = tmp_path / "small.img"
    small.write_bytes(b"after the kill" * 1000)
    done = run_snap("commit", str(small), "-r", str(repo))  # once: no waiting, no retry
    assert done.returncode == 0, done.stderr.decode()
    note = done.stderr.decode().splitlines()[0]
    assert note.startswith("snap: note: the last writer") and f"pid {victim.pid}" in note, note
    assert "no longer running" in note and "did not finish" in note
    assert (repo / "locks" / "write").read_bytes() == b"{}"
    verify_ok(repo)
    done = run_snap("commit", str(small), "-r", str(repo))
    assert done.returncode == 0 and "snap: note" not in done.stderr.decode(), "reported twice"


def test_a_record_naming_a_dead_process_is_not_shown_as_the_holder(tmp_path: Path) -> None:
    """The lock is held (flock) by a live process that has not written its record yet; the
    record still names a dead one: the message does not blame the dead process."""
    repo = init(tmp_path / "repo")
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = repo / "locks" / "write"
    lock.write_bytes(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "snap gc"}).encode()
    )
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        small = tmp_path / "small.img"
        small.write_bytes(b"x" * 1000)
        done = run_snap("commit", str(small), "-r", str(repo))
        assert done.returncode == LOCKED
        line = one_error_line(done.stderr.decode())
        assert f"pid {dead.pid}" not in line and "locked by another writer" in line, line
    finally:
        os.close(fd)


def test_a_record_from_another_host_is_reported_not_waited_for(tmp_path: Path) -> None:
    """On a shared filesystem the recorded writer may be another machine's; with the lock
    itself free, the next writer goes ahead and names it."""
    repo = init(tmp_path / "repo")
    record = {"pid": 4242, "host": "other-host.example", "command": "snap prune"}
    (repo / "locks" / "write").write_bytes(json.dumps(record).encode())
    small = tmp_path / "small.img"
    small.write_bytes(b"y" * 1000)
    done = run_snap("commit", str(small), "-r", str(repo))
    assert done.returncode == 0, done.stderr.decode()
    assert "pid 4242 on other-host.example (snap prune)" in done.stderr.decode()
