"""snap mount: the snapshots as a real FUSE file system (libfuse 3 through mfusepy)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapstore.ops.mount import Tree, escape
from tests.conftest import SNAP
from tests.helpers import init_repo, text_bytes, write_sparse


def _fuse_usable() -> bool:
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError):
        return False
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


needs_fuse = pytest.mark.skipif(not _fuse_usable(), reason="no FUSE here (mfusepy, /dev/fuse, fusermount3)")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """Two names, three snapshots: vm.img twice, notes once."""
    tmp = tmp_path_factory.mktemp("mount")
    repo = init_repo(tmp / "repo")
    contents: dict[str, bytes] = {}
    vm = tmp / "vm.img"
    for day in range(2):
        write_sparse(vm, 6 << 20, [(day * 4096, text_bytes(1_500_000, day)), (5 << 20, os.urandom(100_000))])
        res = subprocess.run(
            [*SNAP, "commit", str(vm), "-r", str(repo), "--json"], capture_output=True, timeout=300
        )
        assert res.returncode == 0, res.stderr
        contents[_id(res.stdout)] = vm.read_bytes()
    notes = tmp / "notes"
    notes.write_bytes(text_bytes(5000, 9))
    res = subprocess.run(
        [*SNAP, "commit", str(notes), "-r", str(repo), "--json"], capture_output=True, timeout=300
    )
    contents[_id(res.stdout)] = notes.read_bytes()
    return repo, contents


def _id(stdout: bytes) -> str:
    import json

    return str(json.loads(stdout)["id"])[:12]


@pytest.fixture
def mounted(
    history: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    repo, _ = history
    point = tmp_path / "mnt"
    point.mkdir()
    proc = subprocess.Popen([*SNAP, "mount", str(point), "-r", str(repo)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not os.path.ismount(point):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "not mounted"
        time.sleep(0.05)
    yield point, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False)
            proc.kill()


@needs_fuse
def test_every_snapshot_is_listed_and_reads_back_byte_for_byte(
    history: tuple[Path, dict[str, bytes]], mounted: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    _, contents = history
    point, _ = mounted
    assert sorted(os.listdir(point / "ids")) == sorted(contents)
    assert sorted(os.listdir(point / "names")) == ["notes", "vm.img"]
    assert len(os.listdir(point / "names" / "vm.img")) == 2
    for short, data in contents.items():
        assert (point / "ids" / short).stat().st_size == len(data)
        assert (point / "ids" / short).read_bytes() == data
    newest_vm = sorted(
        os.listdir(point / "names" / "vm.img"), key=lambda s: (point / "ids" / s).stat().st_mtime
    )[-1]
    assert (point / "latest" / "vm.img").read_bytes() == contents[newest_vm]
    res = subprocess.run(
        ["cmp", str(point / "latest" / "notes"), "-"],
        input=contents[_only(contents, 5000)],
        capture_output=True,
    )
    assert res.returncode == 0


def _only(contents: dict[str, bytes], size: int) -> str:
    return next(k for k, v in contents.items() if len(v) == size)


@needs_fuse
def test_the_mount_is_read_only_and_ctrl_c_unmounts_it(mounted: tuple[Path, subprocess.Popen[bytes]]) -> None:
    point, proc = mounted
    target = point / "latest" / "notes"
    with pytest.raises(OSError) as caught:
        target.open("r+b")
    assert caught.value.errno in (errno.EROFS, errno.EACCES)
    with pytest.raises(OSError):
        (point / "ids" / "new").write_bytes(b"x")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert not os.path.ismount(point)


def test_the_tree_names_every_snapshot_once_per_view() -> None:
    from datetime import UTC, datetime

    from snapstore.model import SnapshotId, SnapshotInfo

    def snap(n: int, name: str) -> SnapshotInfo:
        created = datetime(2026, 1, n, tzinfo=UTC)
        return SnapshotInfo(SnapshotId(bytes([n]) * 32), name, created, "", 10 * n, 1, 1)

    tree = Tree.of([snap(2, "a/b"), snap(1, "a/b"), snap(3, "c%")])
    assert tree.dirs["/names"] == [escape("a/b"), escape("c%")] == ["a%2Fb", "c%25"]
    assert tree.files["/latest/a%2Fb"].size == 20  # the newest of its name
    assert sorted(tree.dirs["/ids"]) == sorted(s.hex()[:12] for s in (bytes([n]) * 32 for n in (1, 2, 3)))
