"""gc, prune, verify and repair of a remote repository run on the server (issue 14, point 3;
docs/PROTOCOL.md, "run"), over a real sshd: the client's output is the command's own, its
index cache learns what the server changed, locks keep a server-side gc and other holders
apart, an append-only key still cannot free space, and a link dropped mid-gc loses
nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from snapstore.errors import ConnectionLostError
from snapstore.remote.address import parse_location
from snapstore.remote.client import RemoteBackend
from snapstore.remote.maintenance import ForwardedProgress, _replay
from snapstore.storage.lock import Lock
from tests.backend_conformance import random_bytes
from tests.conftest import SNAP, run_snap
from tests.sshd import FAKE_RSH, REMOTE_SNAP, SshServer
from tests.sshd_fixtures import COUNTING_RSH


@pytest.fixture
def env(tmp_path: Path, sshd: SshServer) -> dict[str, str]:
    """The client's cache and the server's in two places of the test's directory (as on two
    machines): the server never updates the client's cache in place."""
    server_cache = shlex.quote(str(tmp_path / "server-cache"))
    return {
        **sshd.env(),
        "XDG_CACHE_HOME": str(tmp_path / "client-cache"),
        "SNAP_REMOTE_SNAP": f"XDG_CACHE_HOME={server_cache} {REMOTE_SNAP}",
    }


@pytest.fixture
def pipe_env(tmp_path: Path) -> dict[str, str]:
    """As ``env``, with ssh replaced by a local pipe (tests/fake_rsh.py: the same protocol,
    without sshd's cost), for the tests about what the commands print and lock."""
    server_cache = shlex.quote(str(tmp_path / "server-cache"))
    return {
        "SNAP_RSH": FAKE_RSH,
        "XDG_CACHE_HOME": str(tmp_path / "client-cache"),
        "SNAP_REMOTE_SNAP": f"XDG_CACHE_HOME={server_cache} {REMOTE_SNAP}",
    }


def pipe_url(path: Path) -> str:
    return f"ssh://localhost{path}"


def data_file(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random_bytes(size, seed=seed))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snap(*args: str, env: dict[str, str], code: int = 0) -> subprocess.CompletedProcess[bytes]:
    done = run_snap(*args, env=env)
    assert done.returncode == code, (args, done.returncode, done.stderr.decode())
    return done


def commit(src: Path, url: str, env: dict[str, str]) -> str:
    done = snap("commit", str(src), "--json", "-r", url, env=env)
    return str(json.loads(done.stdout)["id"])


def counted(counts: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with the link counted into ``counts`` (tests/counting_rsh.py)."""
    return {**env, "SNAP_RSH": f"{COUNTING_RSH} {shlex.quote(str(counts))} {env['SNAP_RSH']}"}


def wire_bytes(counts: Path) -> int:
    sent, received = counts.read_text().split()
    return int(sent) + int(received)


def test_gc_on_the_server_and_the_client_cache_learns_it(
    tmp_path: Path, sshd: SshServer, env: dict[str, str]
) -> None:
    """commit, rm, gc on the server; committing the freed data again sends it again (the
    client's cache does not claim chunks gc freed) and it checks out byte for byte; verify
    --read-data passes, and neither gc nor verify pulls the data across the wire."""
    url = sshd.url(tmp_path / "repo")
    snap("init", url, env=env)
    a, b = data_file(tmp_path / "a.img", 6 << 20, 1), data_file(tmp_path / "b.img", 2 << 20, 2)
    first = commit(a, url, env)
    kept = commit(b, url, env)
    snap("rm", first, "-r", url, env=env)
    counts = tmp_path / "counts"
    generation = (tmp_path / "repo" / "generation").read_bytes()
    gc = snap("gc", "-r", url, env=counted(counts, env))
    changed = (tmp_path / "repo" / "generation").read_bytes()
    assert changed != generation and changed[8] == 0  # a new settled generation: caches are behind
    assert gc.stdout.decode().startswith("freed 6.0 MiB: "), gc.stdout
    assert wire_bytes(counts) < 64 << 10  # the packs stayed on the server
    assert (tmp_path / "server-cache" / "snapstore").is_dir()  # it ran there, with its own cache
    again = snap("commit", str(a), "--json", "-r", url, env=env)
    stats = json.loads(again.stdout)
    assert stats["new_chunks"] == stats["chunks"] > 0, stats  # sent again, none taken as present
    for sid, src in ((str(stats["id"]), a), (kept, b)):
        out = tmp_path / "out.img"
        snap("checkout", sid, "-o", str(out), "-f", "-r", url, env=env)
        assert sha(out) == sha(src)
    verify = snap("verify", "--read-data", "-r", url, env=counted(counts, env))
    assert "2 snapshots" in verify.stderr.decode() and "no problems" in verify.stderr.decode()
    assert wire_bytes(counts) < 64 << 10


def test_output_json_and_exit_codes_are_the_commands_own(tmp_path: Path, pipe_env: dict[str, str]) -> None:
    """prune (rules and quota, --dry-run), verify, repair and gc over the protocol print what the same
    commands print for a local repository of the same snapshots, and exit the same."""
    env, url = pipe_env, pipe_url(tmp_path / "repo")
    local = tmp_path / "local"
    snap("init", url, env=env)
    snap("init", str(local), env=env)
    sources = [data_file(tmp_path / f"v{i}.img", 1 << 20, 10 + i) for i in range(2)]
    for src in sources:
        for where in (url, str(local)):
            snap("commit", str(src), "--name", "vm", "-r", where, env=env)

    def same(*args: str, code: int = 0) -> None:
        there = snap(*args, "-r", url, env=env, code=code)
        here = snap(*args, "-r", str(local), env=env, code=code)
        if "--json" in args:
            assert _shape(json.loads(there.stdout)) == _shape(json.loads(here.stdout)), args
        else:
            assert _words(there.stdout) == _words(here.stdout), args

    same("prune", "--keep-last", "1", "--dry-run")
    same("verify", "--sample", "50", "--seed", "1", "--json")
    same("prune", "--keep-last", "1", "--json")
    same("repair", "--json")
    same("prune", "--quota", "1K", code=7)  # cannot fit: nothing deleted, exit 7 (quota)
    done = snap("log", "--json", "-r", url, env=env)
    assert len(json.loads(done.stdout)) == 1
    # progress drawn on the client from the server's progress frames
    logged = snap("--progress", "log", "verify", "--read-data", "-r", url, env=env)
    assert "verify" in logged.stderr.decode().lower() and "100" in logged.stderr.decode()


def _shape(doc: object) -> object:
    """A document with ids, times and sizes blanked (two repositories differ in those)."""
    if isinstance(doc, dict):
        skip = {"id", "short_id", "created", "hostname", "source", "pack"}
        return {k: (None if k in skip else _shape(v)) for k, v in doc.items() if "bytes" not in k}
    if isinstance(doc, list):
        return [_shape(v) for v in doc]
    return doc


def _words(text: bytes) -> list[str]:
    """The words of a text output but hex ids and times."""
    return [w for w in text.decode().split() if not any(c.isdigit() for c in w)]


def test_locks_keep_a_server_side_gc_and_other_holders_apart(
    tmp_path: Path, pipe_env: dict[str, str]
) -> None:
    """A session holding the data lock (a checkout's, another session) keeps a server-side gc and
    prune out with exit 6, and a verify (a reader too) in; a local snap on the server
    holding the write lock keeps a server-side repair out; once the holders are gone, gc
    runs (the client itself holds nothing its server's gc would conflict with)."""
    env, url = pipe_env, pipe_url(tmp_path / "repo")
    snap("init", url, env=env)
    commit(data_file(tmp_path / "a.img", 1 << 20, 3), url, env)
    address = parse_location(url)
    assert address is not None
    holder = RemoteBackend.connect(address, rsh=env["SNAP_RSH"], remote_snap=REMOTE_SNAP, timeout=60)
    with holder.lock("locks/data", exclusive=False):
        gc = snap("gc", "-r", url, env=env, code=6)
        assert f"repository {url} is locked" in gc.stderr.decode()
        snap("prune", "--keep-last", "1", "-r", url, env=env, code=6)
        snap("verify", "-r", url, env=env)  # readers share the data lock
    holder.close()
    local = Lock(tmp_path / "repo" / "locks" / "write", 0o600)  # a local snap on the server, writing
    local.acquire(exclusive=True, repo=tmp_path / "repo", what="another writer")
    snap("repair", "-r", url, env=env, code=6)
    local.release()
    snap("gc", "-r", url, env=env)


def test_an_append_only_key_still_cannot_free_space(tmp_path: Path, sshd: SshServer) -> None:
    env = {**sshd.env(sshd.restricted_key), "XDG_CACHE_HOME": str(tmp_path / "client-cache")}
    url = sshd.url(sshd.restricted_to / f"m-{os.getpid()}-{time.monotonic_ns()}")
    snap("init", url, env=env)
    sid = commit(data_file(tmp_path / "a.img", 1 << 20, 4), url, env)
    for args in (["gc"], ["prune", "--keep-last", "1"], ["repair"]):
        done = snap(*args, "-r", url, env=env, code=14)
        assert "append-only" in done.stderr.decode()
    snap("gc", "--dry-run", "-r", url, env=env)  # a plan frees nothing
    snap("verify", "--read-data", "-r", url, env=env)
    # outside the key's path: refused before anything runs
    outside = sshd.url(tmp_path / "elsewhere")
    done = snap("verify", "-r", outside, env=env, code=14)
    assert "outside the paths" in done.stderr.decode()
    assert json.loads(snap("log", "--json", "-r", url, env=env).stdout)[0]["id"] == sid


@pytest.mark.slow
def test_a_link_dropped_during_a_server_side_gc_loses_nothing(
    tmp_path: Path, sshd: SshServer, env: dict[str, str]
) -> None:
    """The client (snap and its ssh) killed with SIGKILL at moments spread over a remote gc:
    afterwards (the server's gc finished or stopped) gc runs again, verify --read-data
    passes and every snapshot checks out byte for byte."""
    url = sshd.url(tmp_path / "repo")
    snap("init", url, env=env)
    sources = {}
    for i in range(3):
        src = data_file(tmp_path / f"v{i}.img", 6 << 20, 20 + i)
        sources[commit(src, url, env)] = src
    for n, doomed in enumerate(list(sources)[:2]):
        snap("rm", doomed, "-r", url, env=env)
        del sources[doomed]
        gc = subprocess.Popen(
            [*SNAP, "gc", "-r", url],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # snap and its ssh, killed together: the link drops
        )
        time.sleep(0.6 + 0.6 * n)
        os.killpg(gc.pid, signal.SIGKILL)
        gc.wait()
        for sid, src in sources.items():
            out = tmp_path / "out.img"
            snap("--lock-wait", "2m", "checkout", sid, "-o", str(out), "-f", "-r", url, env=env)
            assert sha(out) == sha(src)
        snap("--lock-wait", "2m", "verify", "--read-data", "-r", url, env=env)
    snap("--lock-wait", "2m", "gc", "-r", url, env=env)
    snap("verify", "--read-data", "-r", url, env=env)


# -- without sshd: an older server, the progress frames ----------------------------------------------

OLD_SERVER = (
    f"{shlex.quote(sys.executable)} -c "
    + shlex.quote(
        "import sys; from snapstore.remote.policy import Policy; "
        "from snapstore.remote.server import serve_stdio; sys.exit(serve_stdio(Policy(), 'old'))"
    )
    + " #"  # (the 'serve --stdio' the client appends)
)


def test_a_server_that_runs_nothing_has_the_client_run_them(tmp_path: Path) -> None:
    """A server of an older snap (its open lists no ``run``): gc and verify run on the client
    over the backend interface, as before."""
    env = {"SNAP_RSH": FAKE_RSH, "SNAP_REMOTE_SNAP": OLD_SERVER, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    url = f"ssh://localhost{tmp_path / 'repo'}"
    snap("init", url, env=env)
    first = commit(data_file(tmp_path / "a.img", 1 << 20, 5), url, env)
    snap("rm", first, "-r", url, env=env)
    gc = snap("gc", "--json", "-r", url, env=env)
    assert json.loads(gc.stdout)["freed_bytes"] > 0
    snap("verify", "--read-data", "-r", url, env=env)


class Recorded:
    """A progress sink that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def start(self, total: int, label: str) -> None:
        self.calls.append(("start", total, label))

    def advance(self, n: int) -> None:
        self.calls.append(("advance", n))

    def skip(self, n: int) -> None:
        self.calls.append(("skip", n))

    def finish(self) -> None:
        self.calls.append(("finish",))


def test_progress_crosses_as_summed_events() -> None:
    frames: list[dict[str, Any]] = []
    forwarded = ForwardedProgress(frames.append, 7)
    forwarded.start(1000, "verify")
    for _ in range(100):
        forwarded.advance(9)
    forwarded.skip(50)
    forwarded.finish()
    forwarded.close()
    assert all(f["id"] == 7 for f in frames)
    shown = Recorded()
    for f in frames:
        _replay(f["progress"], shown)
    assert shown.calls[0] == ("start", 1000, "verify") and shown.calls[-1] == ("finish",)
    assert sum(c[1] for c in shown.calls if c[0] == "advance") == 900
    assert sum(c[1] for c in shown.calls if c[0] == "skip") == 50
    assert len(shown.calls) < 20  # summed between frames, not one event per call

    def broken(frame: dict[str, Any]) -> None:
        raise BrokenPipeError("the client is gone")

    gone = ForwardedProgress(broken, 8, forward=False)
    gone.start(10, "gc")  # (nothing forwarded: no failure yet)
    gone._flush(force=True)  # a heartbeat meets the closed pipe
    with pytest.raises(ConnectionLostError):
        gone.advance(1)  # the command stops at its next report
    gone.close()
