"""Remote repositories over SSH (issue 14): the backend conformance suite on the remote
backend (over pipes, and over a real sshd on a loopback port), CLI round trips over
ssh://, errors as one line with a documented exit code, a restricted key, and the ssh
client killed at ten moments of a commit and of a gc (more drops: test_remote_drops.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import snapstore
from snapstore import Mode, Repository
from snapstore.backends import Backend
from snapstore.remote import wire
from snapstore.remote.address import parse_location
from snapstore.remote.client import RemoteBackend
from tests.backend_conformance import BackendConformance, random_bytes
from tests.conftest import run_snap
from tests.sshd import FAKE_RSH, REMOTE_SNAP, SSHD, SshServer
from tests.sshd_fixtures import COUNTING_RSH

pytestmark = pytest.mark.usefixtures("own_cache")

needs_sshd = pytest.mark.skipif(SSHD is None, reason="sshd is not installed (Debian: openssh-server)")


def connect(url: str, rsh: str) -> RemoteBackend:
    address = parse_location(url)
    assert address is not None
    return RemoteBackend.connect(address, rsh=rsh, remote_snap=REMOTE_SNAP, create=True, timeout=120)


class TestConformance(BackendConformance):
    """The remote backend over a real sshd, and with ssh replaced by a local pipe
    (tests/fake_rsh.py: the same protocol without sshd)."""

    @pytest.fixture(params=["pipe", "ssh"])
    def backend(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
        if request.param == "pipe":
            url, rsh = f"ssh://localhost{tmp_path / 'store'}", FAKE_RSH
        else:
            server: SshServer = request.getfixturevalue("sshd")  # (skips without sshd)
            url, rsh = server.url(tmp_path / "store"), server.rsh()
        with connect(url, rsh) as backend:
            yield backend


def test_the_server_holds_its_locks_for_the_session(tmp_path: Path) -> None:
    """A lock is the server's flock: a second session is refused while the first holds it,
    and it is gone with the first session (never stale)."""
    url = f"ssh://localhost{tmp_path / 'store'}"
    first, second = connect(url, FAKE_RSH), connect(url, FAKE_RSH)
    assert first.capabilities.flock
    held = first.lock("locks/write", exclusive=True)
    held.__enter__()
    with pytest.raises(Exception, match="another holder"):
        second.lock("locks/write", exclusive=False).__enter__()
    first.close()  # the session ends without unlocking
    with second.lock("locks/write", exclusive=True):
        pass
    second.close()


def test_a_second_writer_is_locked_out_with_exit_6(tmp_path: Path) -> None:
    env = {"SNAP_RSH": FAKE_RSH, "SNAP_REMOTE_SNAP": REMOTE_SNAP}
    url = f"ssh://localhost{tmp_path / 'repo'}"
    assert run_snap("init", url, env=env).returncode == 0
    src = image(tmp_path / "v1.img", 1)
    holder = connect(url, FAKE_RSH)
    with holder.lock("locks/write", exclusive=True):  # another writer's session
        res = run_snap("commit", str(src), "-r", url, env=env)
        one_error_line(res, 6, "is locked")
    res = run_snap("commit", str(src), "-r", url, env=env)
    assert res.returncode == 0, res.stderr
    holder.close()


# -- the command line over a real sshd -------------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image(path: Path, version: int) -> Path:
    """8 MiB in 64 KiB blocks; each version rewrites a few blocks of the previous one."""
    data = bytearray(random_bytes(8 << 20, seed=1))
    for v in range(2, version + 1):
        for block in (3 * v, 40 + 7 * v, 100 + v):
            data[block << 16 : (block + 1) << 16] = random_bytes(1 << 16, seed=100 * v + block)
    path.write_bytes(data)
    return path


@needs_sshd
def test_cli_round_trip_over_ssh(tmp_path: Path, sshd: SshServer) -> None:
    env = sshd.env()
    url = sshd.url(tmp_path / "repo")
    assert run_snap("init", url, env=env).returncode == 0
    ids = []
    for version in (1, 2, 3):
        src = image(tmp_path / f"v{version}.img", version)
        # -r before the command, as borg and restic users type it
        res = run_snap("-r", url, "commit", str(src), "--name", "vm.img", env=env)
        assert res.returncode == 0, res.stderr
        ids.append(res.stdout.decode().strip())
    log = run_snap("log", "--json", "-r", url, env=env)
    assert log.returncode == 0, log.stderr
    assert [s["id"] for s in json.loads(log.stdout)] == ids
    for version, snapshot in enumerate(ids, 1):
        out = tmp_path / f"out{version}"
        res = run_snap("checkout", snapshot, "-o", str(out), "-r", url, env=env)
        assert res.returncode == 0, res.stderr
        assert sha(out) == sha(tmp_path / f"v{version}.img")
    res = run_snap("verify", "--read-data", "-r", url, env=env)
    assert res.returncode == 0, res.stderr
    assert run_snap("rm", ids[0], "-r", url, env=env).returncode == 0
    res = run_snap("gc", "-r", url, env=env)
    assert res.returncode == 0, res.stderr
    res = run_snap("verify", "--read-data", "-r", url, env=env)
    assert res.returncode == 0, res.stderr
    stats = run_snap("stats", "--json", "-r", url, env=env)
    assert json.loads(stats.stdout)["snapshot_count"] == 2
    # The same repository from the scp-style address, through SNAP_REPO
    scp = f"{sshd.user}@127.0.0.1:{tmp_path / 'repo'}"
    res = run_snap("checkout", ids[2], "-o", str(tmp_path / "again"), env={**env, "SNAP_REPO": scp})
    assert res.returncode == 0, res.stderr
    assert sha(tmp_path / "again") == sha(tmp_path / "v3.img")


@needs_sshd
def test_an_incremental_commit_sends_little_more_than_its_new_chunks(tmp_path: Path, sshd: SshServer) -> None:
    """Done when (issue 14): the bytes the client sends for an incremental commit are under
    1.2x the compressed size of its new chunks plus 1% of the image, counted on the wire."""
    counts = tmp_path / "counts"
    counting = f"{COUNTING_RSH} {counts} {sshd.rsh()}"
    env = {**sshd.env(), "SNAP_RSH": counting}
    url = sshd.url(tmp_path / "repo")
    assert run_snap("init", url, env=env).returncode == 0
    text = bytearray(base64.b64encode(random_bytes(24 << 20, seed=3)))  # 32 MiB, compressible
    src = tmp_path / "vm.img"
    sent = []
    for version in (1, 2, 3):
        for block in range(version * 11, 512, 97):  # a few 64 KiB blocks change each time
            text[block << 16 : (block << 16) + 1000] = random_bytes(1000, seed=version * 1000 + block)
        src.write_bytes(text)
        res = run_snap("commit", str(src), "--json", "-r", url, env=env)
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        sent.append((int(counts.read_text().split()[0]), doc["new_stored_bytes"]))
    print(f"bytes sent (wire, new chunks stored): {sent}")
    first, *incremental = sent
    assert first[0] < 1.05 * first[1] + (256 << 10)
    for wire_bytes, new_stored in incremental:
        assert 0 < new_stored < 0.5 * len(text)
        assert wire_bytes < 1.2 * new_stored + 0.01 * len(text), (wire_bytes, new_stored)
    res = run_snap("checkout", "latest", "-o", str(tmp_path / "out"), "-r", url, env=env)
    assert res.returncode == 0, res.stderr
    assert sha(tmp_path / "out") == sha(src)
    received = int(counts.read_text().split()[1])
    assert received < 1.05 * sum(n for _, n in sent) + (1 << 20)  # a checkout reads each chunk once


def test_every_command_works_on_a_remote_repository(tmp_path: Path) -> None:
    """Over pipes (no sshd needed): the commands beyond the round trip, with their output."""
    env = {"SNAP_RSH": FAKE_RSH, "SNAP_REMOTE_SNAP": REMOTE_SNAP}
    url = f"ssh://localhost{tmp_path / 'repo'}"

    def snap(*args: str) -> str:
        res = run_snap("-r", url, *args, env=env)
        assert res.returncode == 0, (args, res.stderr)
        return res.stdout.decode()

    snap("init")
    v1, v2 = image(tmp_path / "v1.img", 1), image(tmp_path / "v2.img", 2)
    a = snap("commit", str(v1), "--name", "vm.img", "--tag", "nightly").strip()
    b = snap("commit", str(v2), "--name", "vm.img").strip()
    assert json.loads(snap("show", "latest", "--json"))["id"] == b
    ranges = json.loads(snap("diff", a, b, "--json"))
    assert ranges and "ranges" in ranges
    snap("pin", a)
    snap("prune", "--keep-last", "1")  # the pinned one stays
    assert [s["id"] for s in json.loads(snap("log", "--json"))] == [a, b]
    snap("unpin", a)
    snap("config", "set", "quota", "1G")
    assert "1.0 GiB" in snap("config", "get", "quota")
    assert [s["id"] for s in json.loads(snap("log", "--tag", "nightly", "--json"))] == [a]
    out = tmp_path / "rollback.img"
    out.write_bytes(v1.read_bytes())
    snap("checkout", b, "-o", str(out), "--in-place")
    assert sha(out) == sha(v2)
    snap("repair")
    snap("prune", "--keep-last", "1")
    assert [s["id"] for s in json.loads(snap("log", "--json"))] == [b]
    snap("gc")
    assert json.loads(snap("verify", "--read-data", "--json"))["ok"] is True
    # a directory: commit, ls, checkout of the tree
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "v1.img").write_bytes(v1.read_bytes())
    (tree / "note").write_text("hello")
    (tree / "link").symlink_to("note")
    t = snap("commit", str(tree)).strip()
    assert snap("ls", t).splitlines() == ["link -> note", "note", "sub", "sub/v1.img"]
    snap("checkout", t, "-o", str(tmp_path / "restored"))
    assert (tmp_path / "restored" / "note").read_text() == "hello"
    assert os.readlink(tmp_path / "restored" / "link") == "note"
    assert sha(tmp_path / "restored" / "sub" / "v1.img") == sha(v1)


# -- errors: one line, a documented exit code ---------------------------------------------------


def one_error_line(res: subprocess.CompletedProcess[bytes], code: int, *needles: str) -> str:
    err = res.stderr.decode()
    assert res.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snap: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def test_an_unreachable_host_is_exit_13(tmp_path: Path) -> None:
    env = {"SNAP_RSH": "ssh -F /dev/null -o BatchMode=yes -o ConnectTimeout=5 -p 1"}
    res = run_snap("log", "-r", "ssh://127.0.0.1/srv/repo", env=env)
    one_error_line(res, 13, "ssh://127.0.0.1/srv/repo", "ssh exited with status 255", "Connection refused")


def test_ssh_exiting_is_exit_13(tmp_path: Path) -> None:
    res = run_snap("log", "-r", "nas:repo", env={"SNAP_RSH": "false"})
    one_error_line(res, 13, "ssh://nas/~/repo")


def test_a_remote_command_that_is_not_snap_is_exit_13(tmp_path: Path) -> None:
    env = {"SNAP_RSH": FAKE_RSH, "SNAP_REMOTE_SNAP": "echo hello; true"}
    res = run_snap("log", "-r", f"localhost:{tmp_path}", env=env)
    one_error_line(res, 13, "is not 'snap serve'", "hello")


def test_another_protocol_version_is_exit_13(tmp_path: Path) -> None:
    server = tmp_path / "old_server.py"
    greeting = wire.encode_frame({"server": "snapstore", "version": "0", "protocols": [99]})
    server.write_text(
        "import sys\n"
        f"sys.stdout.buffer.write({wire.MAGIC + greeting!r})\n"
        "sys.stdout.flush()\nsys.stdin.read()\n"
    )
    env = {"SNAP_RSH": FAKE_RSH, "SNAP_REMOTE_SNAP": f"{sys.executable} {server} #"}
    res = run_snap("log", "-r", f"localhost:{tmp_path}", env=env)
    one_error_line(res, 13, "protocol version(s) [99]", "speaks 1")


def test_a_server_that_stops_answering_times_out_with_exit_13(tmp_path: Path) -> None:
    server = tmp_path / "mute_server.py"
    greeting = wire.encode_frame({"server": "snapstore", "version": "0", "protocols": [1]})
    server.write_text(
        "import sys, time\n"
        f"sys.stdout.buffer.write({wire.MAGIC + greeting!r})\n"
        "sys.stdout.flush()\ntime.sleep(600)\n"
    )
    env = {
        "SNAP_RSH": FAKE_RSH,
        "SNAP_REMOTE_SNAP": f"exec {sys.executable} {server} #",
        "SNAP_REMOTE_TIMEOUT": "1s",
    }
    res = run_snap("log", "-r", f"localhost:{tmp_path}", env=env)
    one_error_line(res, 13, "no reply for 1 s")


def test_a_missing_remote_repository_is_exit_3(tmp_path: Path) -> None:
    env = {"SNAP_RSH": FAKE_RSH, "SNAP_REMOTE_SNAP": REMOTE_SNAP}
    res = run_snap("log", "-r", f"ssh://localhost{tmp_path / 'none'}", env=env)
    one_error_line(res, 3, "no snapstore repository")


def test_a_malformed_address_is_exit_2(tmp_path: Path) -> None:
    res = run_snap("log", "-r", "ssh://-oProxyCommand=x/r")
    one_error_line(res, 2, "invalid host")


# -- a restricted key ------------------------------------------------------------------------------


@needs_sshd
def test_a_restricted_key_stays_in_its_path_and_cannot_remove(tmp_path: Path, sshd: SshServer) -> None:
    env, open_env = sshd.env(sshd.restricted_key), sshd.env()
    inside = sshd.url(sshd.restricted_to / f"repo-{os.getpid()}-{time.monotonic_ns()}")
    outside_dir = tmp_path / "outside"
    assert run_snap("init", str(outside_dir)).returncode == 0
    before = sorted(p.name for p in outside_dir.rglob("*"))
    src = image(tmp_path / "v1.img", 1)
    # outside the path: refused before anything is read or written
    for args in (["init", sshd.url(tmp_path / "new")], ["log", "-r", sshd.url(outside_dir)]):
        one_error_line(run_snap(*args, env=env), 14, "outside the paths this server serves")
    res = run_snap("commit", str(src), "-r", sshd.url(outside_dir), env=env)
    one_error_line(res, 14, "outside the paths")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in outside_dir.rglob("*")) == before
    # inside: init, commit, read; no removal, no gc, no prune
    assert run_snap("init", inside, env=env).returncode == 0
    first = run_snap("commit", str(src), "-r", inside, env=env)
    assert first.returncode == 0, first.stderr
    snapshot = first.stdout.decode().strip()
    second = run_snap("commit", str(image(tmp_path / "v2.img", 2)), "-r", inside, env=env)
    assert second.returncode == 0, second.stderr
    one_error_line(run_snap("rm", snapshot, "-r", inside, env=env), 14, "append-only")
    one_error_line(run_snap("gc", "-r", inside, env=env), 14, f"{inside} is served append-only")
    one_error_line(run_snap("prune", "--keep-last", "1", "-r", inside, env=env), 14, "append-only")
    # everything is still there, as the unrestricted key sees it
    res = run_snap("verify", "--read-data", "-r", inside, env=open_env)
    assert res.returncode == 0, res.stderr
    log = json.loads(run_snap("log", "--json", "-r", inside, env=open_env).stdout)
    assert len(log) == 2
    out = tmp_path / "out"
    assert run_snap("checkout", snapshot, "-o", str(out), "-r", inside, env=env).returncode == 0
    assert sha(out) == sha(src)


# -- drops -----------------------------------------------------------------------------------------


def check_every_snapshot(url: str, rsh: str, originals: dict[str, Path], tmp_path: Path) -> None:
    """verify --read-data passes, the snapshots are exactly ``originals`` and each checks out
    byte for byte (in this process: one connection)."""
    address = parse_location(url)
    assert address is not None
    backend = RemoteBackend.connect(address, rsh=rsh, remote_snap=REMOTE_SNAP)
    with Repository.open_backend(backend, Mode.CHECK, owns_backend=True) as r:
        assert snapstore.verify(r, read_data=True).ok
        assert sorted(s.id.hex() for s in r.list_snapshots()) == sorted(originals)
        for snapshot, original in originals.items():
            out = tmp_path / "check.img"
            snapstore.checkout(r, r.resolve(snapshot), str(out), force=True)
            assert sha(out) == sha(original), snapshot


@needs_sshd
@pytest.mark.slow
def test_drops_at_ten_moments_of_a_commit_and_of_a_gc_lose_nothing(tmp_path: Path, sshd: SshServer) -> None:
    """Done when (issue 14): the link dropped (ssh killed) at 10 moments of a commit and of a
    gc loses no earlier snapshot; each rerun completes."""
    counts = tmp_path / "counts"
    env = sshd.env()
    url = sshd.url(tmp_path / "repo")
    assert run_snap("init", url, env=env).returncode == 0
    originals: dict[str, Path] = {}
    for version in (1, 2):
        src = image(tmp_path / f"v{version}.img", version)
        res = run_snap("commit", str(src), "-r", url, env=env)
        assert res.returncode == 0, res.stderr
        originals[res.stdout.decode().strip()] = src

    def dropped(command: list[str], after: int) -> int:
        rsh = f"{COUNTING_RSH} {counts} --kill-after {after} {sshd.rsh()}"
        res = run_snap(*command, "-r", url, env={**env, "SNAP_RSH": rsh})
        err = res.stderr.decode()
        assert res.returncode in (0, 13) and "Traceback" not in err, err
        return res.returncode

    # commits of 12 MiB of new data each, dropped after 0.05% to 95% of what they send
    big = tmp_path / "big.img"
    for k, moment in enumerate((0.0005, 0.01, 0.05, 0.15, 0.3, 0.45, 0.6, 0.75, 0.85, 0.95)):
        big.write_bytes(random_bytes(12 << 20, seed=500 + k))
        assert dropped(["commit", str(big)], int(moment * (12 << 20))) == 13
        check_every_snapshot(url, sshd.rsh(), originals, tmp_path)
    res = run_snap("commit", str(big), "-r", url, env=env)  # the last one again
    assert res.returncode == 0, res.stderr
    originals[res.stdout.decode().strip()] = big

    # gc after a removal, dropped at 10 moments of what an undisturbed gc moves
    def removable(k: int) -> str:
        src = tmp_path / f"gone{k}.img"
        src.write_bytes(random_bytes(2 << 20, seed=50 + k))
        res = run_snap("commit", str(src), "-r", url, env=env)
        assert res.returncode == 0, res.stderr
        snapshot = res.stdout.decode().strip()
        assert run_snap("rm", snapshot, "-r", url, env=env).returncode == 0
        return snapshot

    removable(0)
    rsh = f"{COUNTING_RSH} {counts} {sshd.rsh()}"
    assert run_snap("gc", "-r", url, env={**env, "SNAP_RSH": rsh}).returncode == 0
    gc_total = sum(int(n) for n in counts.read_text().split())
    outcomes = []
    for k in range(1, 11):
        removable(k)
        outcomes.append(dropped(["gc"], max(1, gc_total * k // 11)))
        check_every_snapshot(url, sshd.rsh(), originals, tmp_path)
    assert 13 in outcomes, outcomes  # the drops came while gc ran
    res = run_snap("gc", "-r", url, env=env)
    assert res.returncode == 0, res.stderr
    check_every_snapshot(url, sshd.rsh(), originals, tmp_path)
    stats = json.loads(run_snap("stats", "--json", "-r", url, env=env).stdout)
    assert stats["garbage_bytes"] == 0 and stats["snapshot_count"] == len(originals)
