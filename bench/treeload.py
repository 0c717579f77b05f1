"""The tree benchmark's workload: a directory of real files from this machine with every
special entry kind, and the day of changes made to it in place.

Day 1 is a seeded selection of whole subtrees of the Python installation running the
benchmark, /usr/share and /usr/lib (sources, bytecode, shared libraries, documentation,
locale data: tens of thousands of files, some large), copied with their modes and times,
symlinks kept as symlinks; plus ``special/``: a sparse file, a three-way hard-link group,
symlinks (relative, absolute, to a directory, dangling), a FIFO, xattrs where the file system
allows them, and as root a character device, a setuid file owned by another uid and an empty
sticky directory. Day 2 changes the same directory in place (same inodes, as a day of use
does): files appended to and rewritten in their middle, files added (one new directory among
them), files removed, two mode changes, a renamed directory and a block written into the
sparse file. The selection and every change depend only on the seed and the machine's files.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from workload import log_text

KiB = 1024
MiB = 1024 * KiB
MAX_FILE = 64 * MiB
SPECIAL = "special"


def source_roots() -> list[tuple[str, str]]:
    """(name in the tree, directory on this machine), in the order they are looked at."""
    return [("python", sys.base_prefix), ("usr-share", "/usr/share"), ("usr-lib", "/usr/lib")]


@dataclass
class Found:
    """What was seen of the machine's directories: each directory's files and subdirectories."""

    files: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # dir -> (name, size; -1: symlink)
    subdirs: dict[str, list[str]] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)  # bytes below each directory
    seen_bytes: int = 0


def scan(roots: list[str], enough: int) -> Found:
    """Regular files (at most MAX_FILE) and symlinks below ``roots``, depth first in name
    order, until ``enough`` bytes were seen."""
    found = Found()
    for root in roots:
        if os.path.isdir(root) and found.seen_bytes < enough:
            _scan(root, found, enough)
    for directory, files in found.files.items():
        size = sum(max(0, s) for _, s in files)
        at = directory
        while at in found.files:
            found.total[at] = found.total.get(at, 0) + size
            parent = os.path.dirname(at)
            if parent == at or at in roots:
                break
            at = parent
    return found


def _scan(directory: str, found: Found, enough: int) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    files, subdirs = [], []
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            subdirs.append(e.path)
        elif stat.S_ISLNK(st.st_mode):
            files.append((e.name, -1))
        elif stat.S_ISREG(st.st_mode) and st.st_size <= MAX_FILE and os.access(e.path, os.R_OK):
            files.append((e.name, st.st_size))
            found.seen_bytes += st.st_size
    found.files[directory], found.subdirs[directory] = files, subdirs
    for sub in subdirs:
        if found.seen_bytes >= enough:
            break
        _scan(sub, found, enough)


def units(found: Found, directory: str, largest: int) -> list[list[str]]:
    """The pieces the selection takes whole: a subtree of at most ``largest`` bytes, or a
    larger directory's own files (its subdirectories split the same way). Each is a list of
    file paths."""
    if found.total.get(directory, 0) <= largest:
        return [_below(found, directory)]
    own = [os.path.join(directory, name) for name, _ in found.files.get(directory, [])]
    pieces = [own] if own else []
    for sub in found.subdirs.get(directory, []):
        if sub in found.files:
            pieces += units(found, sub, largest)
    return pieces


def _below(found: Found, directory: str) -> list[str]:
    paths = [os.path.join(directory, name) for name, _ in found.files.get(directory, [])]
    for sub in found.subdirs.get(directory, []):
        if sub in found.files:
            paths += _below(found, sub)
    return paths


def build_tree(tree: Path, size: int, seed: int) -> str:
    """Make day 1 at ``tree`` (which must not exist); returns what it holds."""
    rng = random.Random(f"{seed}/tree/select")
    special_bytes = min(MAX_FILE, max(4 * MiB, size // 16))
    budget = max(MiB, size - special_bytes)
    roots = source_roots()
    found = scan([path for _, path in roots], max(2 * budget, 64 * MiB))
    pieces = [p for _, root in roots for p in units(found, root, max(256 * KiB, budget // 16))]
    rng.shuffle(pieces)
    sizes = {os.path.join(d, n): s for d, files in found.files.items() for n, s in files}
    taken, total = [], 0
    for piece in pieces:
        piece_bytes = sum(max(0, sizes[p]) for p in piece)
        if total >= budget:
            break
        if piece_bytes and total + piece_bytes <= budget + budget // 16:
            taken += piece
            total += piece_bytes
    tree.mkdir(parents=True)
    copied = sum(_copy(path, tree / _inside(path, roots)) for path in sorted(taken))
    specials = make_specials(tree / SPECIAL, special_bytes, rng)
    return f"day 1: {copied} files and symlinks from {', '.join(r for _, r in roots)}; {specials}"


def _inside(path: str, roots: list[tuple[str, str]]) -> str:
    for name, root in roots:
        if path.startswith(root.rstrip("/") + "/"):
            return os.path.join(name, os.path.relpath(path, root))
    raise ValueError(path)


def _copy(src: str, dst: Path) -> int:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst, follow_symlinks=False)
    except OSError:  # vanished or unreadable: left out
        return 0
    return 1


def make_specials(root: Path, sparse_size: int, rng: random.Random) -> str:
    """Every special entry kind below ``root``; returns which ones were made."""
    made = []
    root.mkdir()
    sparse = root / "disk.img"  # holes around three data regions
    with open(sparse, "wb") as f:
        f.truncate(sparse_size)
        for at, data in (
            (0, rng.randbytes(MiB // 2)),
            (sparse_size // 3, log_text(MiB // 2, rng)),
            (sparse_size - MiB // 4, rng.randbytes(MiB // 4)),
        ):
            f.seek(at)
            f.write(data)
    made.append(f"a {sparse_size // MiB} MiB sparse file")
    links = root / "hardlinks"
    (links / "sub").mkdir(parents=True)
    (links / "a").write_bytes(log_text(256 * KiB, rng))
    os.link(links / "a", links / "b")
    os.link(links / "a", links / "sub" / "c")
    made.append("a three-way hard-link group")
    (root / "links").mkdir()
    for name, target in (
        ("to-file", "../hardlinks/a"),
        ("to-dir", "../hardlinks"),
        ("dangling", "gone/away"),
    ):
        os.symlink(target, root / "links" / name)
    os.symlink("/etc/hostname", root / "links" / "absolute")
    made.append("symlinks (relative, to a directory, dangling, absolute)")
    os.mkfifo(root / "fifo")
    made.append("a FIFO")
    tagged = root / "tagged.txt"
    tagged.write_text("a file with extended attributes\n")
    try:
        os.setxattr(tagged, "user.comment", b"nightly backup")
        os.setxattr(tagged, "user.blob", bytes(range(256)))
        os.setxattr(root / "hardlinks", "user.dir", b"\x00\x01binary\xff")
        made.append("xattrs (user.*, binary, on a directory too)")
    except OSError as exc:
        made.append(f"no xattrs ({exc.strerror})")
    if os.geteuid() == 0:
        os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        tool = root / "setuid-tool"
        tool.write_bytes(b"#!/bin/sh\necho hello\n")
        os.chown(tool, 1000, 1000)
        os.chmod(tool, 0o4755)
        (root / "sticky").mkdir()
        os.chmod(root / "sticky", 0o1777)
        made.append("a character device, a setuid file of uid 1000, an empty sticky directory")
    return ", ".join(made)


# A day of changes -----------------------------------------------------------------------


def day_of_changes(tree: Path, seed: int) -> str:
    """Change day 1 at ``tree`` in place into day 2; returns what was done."""
    rng = random.Random(f"{seed}/tree/day2")
    files = sorted(
        p
        for p in tree.rglob("*")
        if SPECIAL not in p.relative_to(tree).parts[:1] and not p.is_symlink() and p.is_file()
    )
    files = [p for p in files if p.stat().st_nlink == 1]
    picked = rng.sample(files, min(len(files), 66))
    appended, rewritten, removed, modes = picked[:20], picked[20:40], picked[40:60], picked[60:62]
    for path in appended:
        with open(path, "ab") as f:
            f.write(log_text(rng.randrange(1, 64) * KiB, rng))
    for path in rewritten:
        size = path.stat().st_size
        length = min(size, rng.choice((4, 16, 64)) * KiB)
        with open(path, "r+b") as f:
            f.seek(rng.randrange(0, size - length + 1))
            f.write(rng.randbytes(length))
    for path in removed:
        path.unlink()
    for path in modes:
        path.chmod(stat.S_IMODE(path.stat().st_mode) ^ 0o111)
    directories = sorted({p.parent for p in files if p not in picked and p.parent.exists()})
    added = 0
    for i in range(18):
        added += _new_file(rng.choice(directories) / f"new-{i}.dat", rng)
    fresh = rng.choice(directories) / "added-today"
    fresh.mkdir()
    for i in range(6):
        added += _new_file(fresh / f"report-{i}.log", rng)
    with open(tree / SPECIAL / "disk.img", "r+b") as f:
        f.seek(2 * MiB)
        f.write(rng.randbytes(64 * KiB))
    movable = [d for d in directories if d != tree and _leaf_of(d, 3, 200)]
    moved = rng.choice(movable) if movable else None
    if moved is not None:
        moved.rename(moved.with_name(moved.name + "-2"))
    return (
        f"day 2: {len(appended)} files appended to, {len(rewritten)} rewritten in their middle, "
        f"{len(removed)} removed, {len(modes)} mode changes, 24 files added ({added // KiB} KiB, "
        f"6 in a new directory), 64 KiB written into the sparse file, "
        + (f"{moved.relative_to(tree)} renamed" if moved else "no directory to rename")
    )


def _leaf_of(directory: Path, least: int, most: int) -> bool:
    """Whether ``directory`` holds least..most entries, none of them a directory."""
    children = list(directory.iterdir())
    return least <= len(children) <= most and not any(c.is_dir() and not c.is_symlink() for c in children)


def _new_file(path: Path, rng: random.Random) -> int:
    size = int(2 ** rng.uniform(10, 20))  # 1 KiB .. 1 MiB
    data = log_text(size, rng) if rng.random() < 0.5 else rng.randbytes(size)
    path.write_bytes(data)
    return size
