"""The benchmark's real-data workload: a raw ext4 image filled with real files from this
machine, and later versions made by what a guest does to its file system.

v1 is a sparse file formatted ext4 and mounted through a loop device (root only), filled with
a seeded selection of the machine's own files: executables and libraries, text (sources,
documentation, scripts) and already compressed archives (.deb, .gz, .xz, .zip, images), up to
``data_fraction`` of the size (at most MAX_DATA: a large image is mostly empty space). Each
later version is a copy of the one before, mounted and changed the way a day of use changes a
guest: log files appended to, large files rewritten in their middle (a database page, a VM's
swap), some files deleted, new files written, and a package upgrade that replaces every file
of a few directories by a new version (mostly the old bytes, with scattered edits and
insertions, written beside and renamed over as dpkg does). Deleted blocks keep their old
bytes, as on a disk without discard. "shifted" is v3 with a few bytes inserted near the start,
as for the synthetic workload.

The files differ from machine to machine; the selection and every change depend only on the
seed and the machine's files, so the same machine gives the same workload.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from workload import VERSIONS, Workload, describe, log_text, sparse_copy, write_shifted

KiB = 1024
MiB = 1024 * KiB
SOURCE_ROOTS = (
    "/usr/bin",
    "/usr/lib",
    "/usr/share",
    "/usr/include",
    "/var/cache/apt/archives",
    "/root/.pyenv/versions",
    "/opt",
)
MIN_FILE, MAX_FILE = 512, 48 * MiB
MAX_CANDIDATES = 400_000  # files looked at, at most (bounds the walk on a large machine)
MAX_DATA = 4 * 1024 * MiB  # a larger image is mostly sparse (its files spread over the disk)
DAILY_FRACTION = 0.02  # of the data, changed by each later version
COMPRESSED = (".deb", ".gz", ".xz", ".bz2", ".zst", ".zip", ".whl", ".jar", ".png", ".jpg", ".woff2")
TEXT = (".py", ".h", ".c", ".txt", ".md", ".html", ".js", ".css", ".json", ".xml", ".sh", ".pl", ".rst")


class RealDataUnavailable(Exception):
    """The real-data workload cannot be built here (not root, no loop device, no mkfs)."""


@dataclass(frozen=True)
class Source:
    path: str
    size: int


def available() -> str | None:
    """Why the real-data workload cannot be built on this machine, or None."""
    if os.geteuid() != 0:
        return "it mounts a loop device, which needs root"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def build_real_workload(
    directory: Path, size: int, seed: int, data_fraction: float = 0.55, versions: tuple[str, ...] = VERSIONS
) -> Workload:
    """Write the images of ``versions`` (a prefix of VERSIONS) into ``directory``."""
    problem = available()
    if problem:
        raise RealDataUnavailable(problem)
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"real-{name}.img" for name in versions}
    rng = random.Random(f"{seed}/real/select")
    pool = candidates()
    rng.shuffle(pool)
    budget = min(int(size * data_fraction), MAX_DATA)
    chosen = take(pool, budget)
    taken = set(chosen)
    spare = [s for s in pool if s not in taken]
    work = Workload(kind="real")
    work.composition = composition(chosen)
    _make_filesystem(paths["v1"], size)
    with mounted(paths["v1"]) as root:
        populate(root, chosen)
    notes = [f"v1: {len(chosen)} files from this machine ({_mib(sum(s.size for s in chosen))} MiB)"]
    for prev, name in itertools.pairwise(versions):
        if name == "shifted":
            write_shifted(paths[prev], paths[name], seed)  # print_workload describes it
            continue
        sparse_copy(paths[prev], paths[name])
        with mounted(paths[name]) as root:
            summary = daily_change(root, spare, random.Random(f"{seed}/real/{name}"), budget)
        notes.append(f"{name}: {summary}")
    work.notes = notes
    work.images = {name: describe(name, path) for name, path in paths.items()}
    work.seconds = time.perf_counter() - started
    return work


# Choosing the files ---------------------------------------------------------------------


def candidates() -> list[Source]:
    """Regular files under SOURCE_ROOTS of MIN_FILE..MAX_FILE bytes, in path order."""
    found: list[Source] = []
    for root in SOURCE_ROOTS:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if st.st_mode & 0o170000 == 0o100000 and MIN_FILE <= st.st_size <= MAX_FILE:
                    found.append(Source(path, st.st_size))
                if len(found) >= MAX_CANDIDATES:
                    return found
    return found


def take(pool: list[Source], budget: int) -> list[Source]:
    """Files from the front of ``pool`` until ``budget`` bytes (readable ones only)."""
    chosen: list[Source] = []
    total = 0
    for source in pool:
        if total >= budget:
            break
        if source.size > budget - total + MiB or not os.access(source.path, os.R_OK):
            continue
        chosen.append(source)
        total += source.size
    return chosen


def category(path: str) -> str:
    name = path.lower()
    if name.endswith(COMPRESSED):
        return "compressed"
    if name.endswith(TEXT) or "/doc/" in name or "/man/" in name:
        return "text"
    if name.endswith((".so", ".a", ".o")) or ".so." in name or "/bin/" in name:
        return "binary"
    return "other"


def composition(files: list[Source]) -> dict[str, int]:
    totals = {"binary": 0, "text": 0, "compressed": 0, "other": 0}
    for source in files:
        totals[category(source.path)] += source.size
    return totals


# The file system ------------------------------------------------------------------------


def _make_filesystem(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    # Inode tables initialised now, so that no background thread writes them after mounting.
    _run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-L", "bench", str(path)])


@contextlib.contextmanager
def mounted(image: Path) -> Iterator[Path]:
    mountpoint = Path(tempfile.mkdtemp(prefix="snap-bench-mnt-"))
    try:
        _run(["mount", "-o", "loop,noatime", str(image), str(mountpoint)])
        try:
            yield mountpoint
        finally:
            _run(["umount", str(mountpoint)])
    finally:
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RealDataUnavailable(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")


def target(root: Path, source: Source) -> Path:
    return root / source.path.lstrip("/")


def populate(root: Path, files: list[Source]) -> None:
    for source in files:
        dst = target(root, source)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # a file that vanished or cannot be read is skipped
            shutil.copyfile(source.path, dst)
    logs = root / "var" / "log"
    logs.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(("syslog", "auth.log", "nginx-access.log", "postgresql.log")):
        (logs / name).write_bytes(log_text(2 * MiB, random.Random(f"real/log/{index}")))


# A day of use ---------------------------------------------------------------------------


def daily_change(root: Path, spare: list[Source], rng: random.Random, data_bytes: int) -> str:
    """Change the mounted file system as a day of use would; returns what was done."""
    budget = int(data_bytes * DAILY_FRACTION)
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    files.sort()
    appended = _append_logs(root, rng, budget // 8)
    rewritten = _rewrite_middles(files, rng, budget // 8)
    deleted = _delete(files, rng, budget // 8)
    created = _create(root, spare, rng, budget // 4)
    upgraded = _upgrade(files, rng, budget // 4)
    os.sync()
    return (
        f"{_mib(appended)} MiB appended to logs, {_mib(rewritten)} MiB rewritten inside large files, "
        f"{_mib(deleted)} MiB deleted, {_mib(created)} MiB of new files, "
        f"{_mib(upgraded)} MiB of files replaced by a package upgrade"
    )


def _append_logs(root: Path, rng: random.Random, budget: int) -> int:
    logs = [*sorted((root / "var" / "log").glob("*.log")), root / "var" / "log" / "syslog"]
    done = 0
    for log in logs:
        chunk = log_text(budget // len(logs), random.Random(rng.random()))
        with open(log, "ab") as f:
            f.write(chunk)
        done += len(chunk)
    return done


def _rewrite_middles(files: list[Path], rng: random.Random, budget: int) -> int:
    """4..64 KiB rewritten in place inside large files (a database page, a swap file)."""
    large = [p for p in files if p.stat().st_size >= 4 * MiB]
    done = 0
    while large and done < budget:
        path = rng.choice(large)
        size = path.stat().st_size
        length = min(rng.choice((4, 8, 16, 64)) * KiB, size)
        offset = rng.randrange(0, size - length + 1) // 4096 * 4096
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(rng.randbytes(length // 2) + bytes(length - length // 2))
        done += length
    return done


def _delete(files: list[Path], rng: random.Random, budget: int) -> int:
    done = 0
    for path in rng.sample(files, min(len(files), 2000)):
        if done >= budget:
            break
        if path.exists() and "var/log" not in str(path):
            done += path.stat().st_size
            path.unlink()
    return done


def _create(root: Path, spare: list[Source], rng: random.Random, budget: int) -> int:
    done = 0
    for source in rng.sample(spare, min(len(spare), 5000)):
        if done >= budget:
            break
        dst = target(root, source)
        if dst.exists() or source.size > budget - done + MiB:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(source.path, dst)
        except OSError:
            continue
        done += source.size
    return done


def _upgrade(files: list[Path], rng: random.Random, budget: int) -> int:
    """Replace every file of a few directories by a new version: the old bytes with scattered
    edits and small insertions, written to a new file and renamed over the old one."""
    directories = sorted({p.parent for p in files if p.exists()})
    done = 0
    while directories and done < budget:
        directory = rng.choice(directories)
        directories.remove(directory)
        for path in sorted(directory.iterdir()):
            if not path.is_file() or path.is_symlink() or path.stat().st_size > budget - done + MiB:
                continue
            data = bytearray(path.read_bytes())
            for _ in range(1 + len(data) // (256 * KiB)):
                at = rng.randrange(len(data) + 1)
                if rng.random() < 0.5:
                    data[at:at] = rng.randbytes(rng.randrange(1, 64))
                else:
                    data[at : at + 16] = rng.randbytes(16)
            new = path.with_name(path.name + ".dpkg-new")
            new.write_bytes(data)
            new.rename(path)
            done += len(data)
    return done


def _mib(n: int) -> str:
    return f"{n / MiB:.1f}"
