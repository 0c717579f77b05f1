"""Fault injection: every call that writes to the repository fails in turn.

The os functions the storage layer uses (open for writing, write, pwrite, fsync, ftruncate,
fallocate and hole punching, rename, unlink, mkdir, fchmod) and every LMDB commit are counted
while ``snap commit``, ``rm``, ``gc``, ``prune`` and ``repair`` run in this process; then each command is
run again for every N, with call N failing with ENOSPC and then with EIO.

Each run must end in exit 0 (the failure did not matter: a best-effort step such as the
reserve file or the lock record) or in the documented error of that fault (8 no space, 11
I/O error): one line on stderr, never a traceback. Afterwards, and again after a simulated
crash in which every file whose fsync failed loses what it held since its last good fsync
(Linux drops dirty pages when writeback fails), the repository verifies with --read-data,
every snapshot that existed before (and the new one if the commit succeeded) reads back
byte-identical, and the next writer's recovery leaves nothing behind.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import pytest

from snapstore import Mode, Repository, commit_file
from snapstore.model import ChunkRef, SnapshotId
from snapstore.ops.verify import verify
from snapstore.storage import appender, fsio
from snapstore.storage.index import Index
from tests.backend_repos import scattered
from tests.conftest import SMALL_CHUNKER
from tests.helpers import cli, content_sha, copy_repository, one_error_line, text_bytes

pytestmark = pytest.mark.slow
MiB = 1 << 20
EXIT = {errno.ENOSPC: 8, errno.EIO: 11}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT


class Faults:
    """Counts the calls that write to files under ``root`` and fails call number ``fail_at``
    with ``err``. Also tracks, per file, the size made durable by its last good fsync, and the
    ranges a failed fsync may have lost."""

    def __init__(self, root: Path, fail_at: int | None = None, err: int = errno.EIO) -> None:
        self.root = os.path.realpath(root) + os.sep
        self.fail_at = fail_at
        self.err = err
        self.calls: list[str] = []
        self.injected: str | None = None
        self.fds: dict[int, str] = {}
        self.durable: dict[str, int] = {}
        self.lost: dict[str, tuple[int, int]] = {}

    def mine(self, path: Any, dir_fd: int | None = None) -> str | None:
        """The absolute path if it is under the repository, else None."""
        if isinstance(path, int):
            return None
        p = os.fsdecode(path)
        if dir_fd is not None and not os.path.isabs(p):
            base = self.fds.get(dir_fd)
            if base is None:
                return None
            p = os.path.join(base, p)
        parent = os.path.realpath(os.path.dirname(p) or ".")
        full = os.path.realpath(os.path.join(parent, os.path.basename(p)))
        return full if (full + os.sep).startswith(self.root) else None

    def hit(self, what: str) -> None:
        self.calls.append(what)
        if len(self.calls) == self.fail_at:
            self.injected = what
            raise OSError(self.err, os.strerror(self.err))

    def rel(self, path: str) -> str:
        return path[len(self.root) :] if path.startswith(self.root) else path


@contextmanager
def injected(faults: Faults, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    real = {name: getattr(os, name) for name in (
        "open", "close", "write", "pwrite", "pwritev", "fsync", "ftruncate", "posix_fallocate", "rename",
        "replace", "unlink", "remove", "mkdir", "fchmod",
    )}  # fmt: skip
    real_punch = fsio.punch_hole
    real_index_write = Index.write

    def fd_path(fd: int) -> str | None:
        return faults.fds.get(fd)

    def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        full = faults.mine(path, dir_fd)
        writing = full is not None and flags & _WRITE_FLAGS and not flags & os.O_DIRECTORY
        if writing:
            faults.hit(f"open {faults.rel(full)}")  # type: ignore[arg-type]
        fd = real["open"](path, flags, mode, dir_fd=dir_fd)
        if full is not None:
            faults.fds[fd] = full
            if writing and full not in faults.durable:
                faults.durable[full] = os.fstat(fd).st_size  # what it held before is durable
        return int(fd)

    def close(fd: int) -> None:
        faults.fds.pop(fd, None)
        real["close"](fd)

    def on_fd(name: str) -> Callable[..., Any]:
        def call(fd: int, *args: Any) -> Any:
            path = fd_path(fd)
            if path is not None:
                faults.hit(f"{name} {faults.rel(path)}")
            return real[name](fd, *args)

        return call

    def fsync(fd: int) -> None:
        path = fd_path(fd)
        if path is None:
            return real["fsync"](fd)  # type: ignore[no-any-return]
        size = os.fstat(fd).st_size
        try:
            faults.hit(f"fsync {faults.rel(path)}")
        except OSError:
            if os.path.isfile(path):
                start = faults.durable.get(path, 0)
                faults.lost[path] = (min(start, faults.lost.get(path, (start, 0))[0]), size)
            raise
        real["fsync"](fd)
        faults.durable[path] = size

    def on_path(name: str) -> Callable[..., Any]:
        def call(path: Any, *args: Any, dir_fd: int | None = None, **kwargs: Any) -> Any:
            full = faults.mine(path, dir_fd)
            if full is not None:
                faults.hit(f"{name} {faults.rel(full)}")
            if dir_fd is not None:
                kwargs["dir_fd"] = dir_fd
            return real[name](path, *args, **kwargs)

        return call

    def rename(name: str) -> Callable[..., Any]:
        def call(src: Any, dst: Any, **kwargs: Any) -> Any:
            a, b = faults.mine(src), faults.mine(dst)
            if a is not None or b is not None:
                faults.hit(f"{name} {faults.rel(a or '?')} -> {faults.rel(b or '?')}")
            result = real[name](src, dst, **kwargs)
            if a is not None and b is not None:
                for table in (faults.durable, faults.lost):
                    if a in table:
                        table[b] = table.pop(a)  # type: ignore[assignment]
            return result

        return call

    def punch(fd: int, offset: int, length: int) -> None:
        path = fd_path(fd)
        if path is not None:
            faults.hit(f"punch {faults.rel(path)}")
        real_punch(fd, offset, length)

    @contextmanager
    def index_write(self: Index) -> Iterator[Any]:
        with real_index_write(self) as w:
            yield w
            if faults.mine(self.path) is not None:
                try:
                    faults.hit("lmdb commit")
                except OSError as exc:
                    raise lmdb.Error(f"mdb_txn_commit: {exc.strerror}") from None

    with monkeypatch.context() as m:
        m.setattr(os, "open", open_)
        m.setattr(os, "close", close)
        for name in ("write", "pwrite", "pwritev", "ftruncate", "posix_fallocate", "fchmod"):
            m.setattr(os, name, on_fd(name))
        m.setattr(os, "fsync", fsync)
        for name in ("unlink", "remove", "mkdir"):
            m.setattr(os, name, on_path(name))
        m.setattr(os, "rename", rename("rename"))
        m.setattr(os, "replace", rename("replace"))
        m.setattr(fsio, "punch_hole", punch)
        m.setattr(Index, "write", index_write)
        yield faults


def lose_unsynced(faults: Faults) -> None:
    """The crash after the fault: what a failed fsync covered is gone (read as zeros)."""
    for path, (start, end) in faults.lost.items():
        if not os.path.isfile(path):
            continue
        size = os.path.getsize(path)
        if start < min(end, size):
            with open(path, "r+b") as f:
                f.seek(start)
                f.write(bytes(min(end, size) - start))


# -- the repository every run starts from -------------------------------------------------------------


@dataclass
class Base:
    path: Path
    disk: list[str]  # ids, oldest first
    scratch: str
    digests: dict[str, str] = field(default_factory=dict)
    new_content: bytes = b""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _build(root: Path, *, delta: bool = False) -> Base:
    """``delta``: a repository of deltas (issue 15) whose versions differ by small scattered
    changes: disk[1]'s changed chunks are deltas with bases only disk[0] names (gc, after
    disk[0] is removed, must keep them), the new content's are deltas too."""
    path = root / "base"
    Repository.init(path, chunker=SMALL_CHUNKER, pack_target_size=1 << 20, delta=delta).close()
    rng = random.Random(21)
    v1 = bytearray(rng.randbytes(600_000) + text_bytes(300_000, seed=21) + bytes(200_000))
    src = root / "src"
    b = Base(path, [], "")
    with Repository.open(path, Mode.WRITE) as r:
        for i in range(2):
            if i and delta:
                scattered(v1, rng, tuple(range(10_000, 900_000, 45_000)))
            elif i:
                for off in (50_000, 400_000):
                    v1[off : off + 20_000] = rng.randbytes(20_000)
            src.write_bytes(v1)
            s = commit_file(r, src, name="disk").snapshot
            b.disk.append(s.hex)
            b.digests[s.hex] = sha(bytes(v1))
        scratch = rng.randbytes(400_000)
        src.write_bytes(scratch)
        s = commit_file(r, src, name="scratch").snapshot
        b.scratch = s.hex
        b.digests[s.hex] = sha(scratch)
    if delta:
        scattered(v1, rng, tuple(range(30_000, 900_000, 60_000)))
    else:
        v1[700_000:760_000] = rng.randbytes(60_000)
    b.new_content = bytes(v1) + rng.randbytes(700_000)  # crosses into a new pack
    return b


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return _build(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def delta_base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return _build(tmp_path_factory.mktemp("faults-delta"), delta=True)


@dataclass(frozen=True)
class Operation:
    name: str
    args: Callable[[Path, Path], list[str]]  # (repo, source file) -> snap arguments
    prepare: Callable[[Path, Base], None]  # before the command (not under fault)
    removes: Callable[[Base], set[str]]  # snapshots the command removes


def _rm_two(repo: Path, base: Base) -> None:
    with Repository.open(repo, Mode.WRITE) as r:
        r.remove_snapshot(SnapshotId(bytes.fromhex(base.disk[0])))
        r.remove_snapshot(SnapshotId(bytes.fromhex(base.scratch)))


OPERATIONS = {
    "commit": Operation("commit", lambda r, s: ["commit", str(s), "--name", "disk", "-r", str(r)],
                        lambda r, b: None, lambda b: set()),
    "rm": Operation("rm", lambda r, s: ["rm", "-r", str(r)], lambda r, b: None, lambda b: {b.disk[0]}),
    "gc": Operation("gc", lambda r, s: ["gc", "-r", str(r)], _rm_two, lambda b: {b.disk[0], b.scratch}),
    "prune": Operation("prune", lambda r, s: ["prune", "--keep-last", "1", "-r", str(r)],
                       lambda r, b: None, lambda b: {b.disk[0]}),
    "repair": Operation("repair", lambda r, s: ["repair", "--read-data", "-r", str(r)],
                        lambda r, b: None, lambda b: set()),
}  # fmt: skip


def check_repository(
    repo: Path, base: Base, keep: set[str], new: str | None, when: str, *, index_may_be_missing: bool = False
) -> None:
    """Verifies with --read-data; every kept snapshot (and ``new``) reads back identical.
    ``index_may_be_missing``: a repair that failed between moving the old index aside and the
    new one in leaves none (the next writer rebuilds it; readers use a temporary one)."""
    with Repository.open(repo) as r:
        report = verify(r, read_data=True)
        problems = [(p.kind, p.detail) for p in report.problems]
        if index_may_be_missing and r.index_problem == "the index is missing":
            problems = problems[1:]
        assert not problems, f"{when}: verify found {problems}"
        listed = {s.hex for s in r.list_snapshots()}
        assert keep <= listed, f"{when}: lost snapshots {keep - listed}"
        for sid in keep:
            assert content_sha(r, SnapshotId(bytes.fromhex(sid))) == base.digests[sid], (
                f"{when}: {sid[:12]} differs"
            )
        if new is not None:
            assert new in listed, f"{when}: the commit said it succeeded, its snapshot is missing"
            actual = content_sha(r, SnapshotId(bytes.fromhex(new)))
            assert actual == sha(base.new_content), f"{when}: the new snapshot differs"


def leftovers(repo: Path) -> list[str]:
    """Temp files no writer should leave behind once recovery ran."""
    names = [p.name for p in (repo / "tmp").iterdir()]
    return names + [p.name for p in repo.rglob(".*.tmp-*")]


def run_op(op: Operation, repo: Path, src: Path, base: Base) -> tuple[int, str, str | None]:
    """Run the command in process; (exit code, stderr, new snapshot id when a commit worked)."""
    args = op.args(repo, src)
    if op.name == "rm":
        args.insert(1, base.disk[0])
    res = cli(*args)
    new = res.out.strip() if op.name == "commit" and res.code == 0 else None
    return res.code, res.err, new


@pytest.mark.parametrize("op_name", list(OPERATIONS))
def test_every_write_fails_in_turn(
    op_name: str, base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report_count: Any
) -> None:
    sweep(op_name, base, tmp_path, monkeypatch, report_count)


@pytest.mark.parametrize("op_name", ["commit", "gc"])
def test_every_write_of_a_delta_repository_fails_in_turn(
    op_name: str, delta_base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report_count: Any
) -> None:
    """The sweep on a repository of deltas, every 6th call of the commit (storing deltas)
    and every 3rd of the gc (keeping the bases only deltas need): verify --read-data after
    each run reads every delta through its base."""
    with Repository.open(delta_base.path) as r:
        second = SnapshotId(bytes.fromhex(delta_base.disk[1]))
        named = {rec.chunk_id for rec in r.iter_records(second) if isinstance(rec, ChunkRef)}
        locs = [r.get_location(c) for c in named]
        bases = {loc.base for loc in locs if loc is not None and loc.base is not None}
        assert len(bases - named) >= 5, "disk[1] has deltas against chunks only disk[0] names"
    step = {"commit": 6, "gc": 3}[op_name]
    label = f"{op_name}, delta repository, every {step} calls"
    sweep(op_name, delta_base, tmp_path, monkeypatch, report_count, label=label, step=step)


def sweep(
    op_name: str,
    base: Base,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    report_count: Any,
    label: str | None = None,
    step: int = 1,
) -> None:
    op = OPERATIONS[op_name]
    monkeypatch.setattr(appender, "CHECKPOINT_BYTES", 256 * 1024)  # checkpoints mid-commit too
    src = tmp_path / "disk"
    src.write_bytes(base.new_content)
    keep = set(base.digests) - op.removes(base)
    # Count the calls of an unfailed run.
    ref = copy_repository(base.path, tmp_path / "ref")
    op.prepare(ref, base)
    with injected(Faults(ref), monkeypatch) as counted:
        code, err, new = run_op(op, ref, src, base)
    assert code == 0, err
    check_repository(ref, base, keep, new, f"{op_name} unfailed")
    total = len(counted.calls)
    kinds = Counter(call.split()[0] for call in counted.calls)
    assert total >= 10, counted.calls

    outcomes: Counter[str] = Counter()
    tolerated: Counter[str] = Counter()
    for err_no in (errno.ENOSPC, errno.EIO):
        for n in range(1, total + 1, step):
            repo = copy_repository(base.path, tmp_path / "work")
            op.prepare(repo, base)
            with injected(Faults(repo, n, err_no), monkeypatch) as faults:
                code, err, new = run_op(op, repo, src, base)
            when = f"{op_name}, {errno.errorcode[err_no]} at call {n}/{total} ({faults.injected})"
            if faults.injected is None:
                outcomes["not reached"] += 1
                assert code == 0, f"{when}: {err}"
                continue
            if code == 0:
                outcomes["tolerated"] += 1
                call, target = faults.injected.split(" ")[0], faults.injected.split(" ")[-1]
                tolerated[f"{call} {target.split('/')[0]}"] += 1
            else:
                outcomes["failed cleanly"] += 1
                assert code == EXIT[err_no], f"{when}: exit {code}: {err}"
                one_error_line(err)
            lose_unsynced(faults)
            check_repository(repo, base, keep, new, when, index_may_be_missing=op_name == "repair")
            with Repository.open(repo, Mode.WRITE):
                pass  # the next writer's recovery
            assert leftovers(repo) == [], f"{when}: left {leftovers(repo)}"
            check_repository(repo, base, keep, new, f"{when}, after recovery")
            if op_name in ("gc", "prune"):
                code, err, _ = run_op(op, repo, src, base)
                assert code == 0, f"{when}, rerun: {err}"
                check_repository(repo, base, keep, None, f"{when}, after the rerun")
    injected_total = outcomes["tolerated"] + outcomes["failed cleanly"]
    print(
        f"\n{op_name}: {total} calls ({dict(kinds)}); {injected_total} faults injected: {dict(outcomes)}; "
        f"tolerated at {dict(tolerated)}"
    )
    report_count(
        "faults",
        f"{label or op_name} ({total} calls x ENOSPC, EIO)",
        injected=injected_total,
        failed_cleanly=outcomes["failed cleanly"],
        tolerated=outcomes["tolerated"],
    )
    assert outcomes["failed cleanly"] >= injected_total // 2, "most faults should stop the command"
