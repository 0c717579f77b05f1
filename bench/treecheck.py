"""What a restored tree must equal: every entry's type, mode, owner, mtime, size, content
digest, link target, device numbers, xattrs and hard-link group, recorded from the source
(a manifest) and compared with a restore field by field.
"""

from __future__ import annotations

import os
import pickle
import stat
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

import blake3

READ = 1 << 20


@dataclass(frozen=True)
class Entry:
    kind: str  # file, dir, symlink, fifo, chardev, blockdev, socket
    mode: int  # permission bits with setuid/setgid/sticky (S_IMODE)
    uid: int
    gid: int
    mtime_ns: int
    size: int  # regular files; 0 otherwise
    digest: str  # BLAKE3 of a regular file's content
    target: bytes  # a symlink's
    rdev: tuple[int, int]  # a device's (major, minor)
    xattrs: tuple[tuple[str, bytes], ...]
    links: tuple[bytes, ...]  # every path of its hard-link group (nlink > 1), sorted; () otherwise
    allocated: int  # st_blocks * 512 (informative: holes are not compared)


Manifest = dict[bytes, Entry]  # path relative to the root (b"" for the root itself) -> entry

_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFSOCK: "socket",
}
COMPARED = tuple(f.name for f in fields(Entry) if f.name != "allocated")


def capture(root: Path) -> Manifest:
    """The manifest of the tree at ``root`` (which is read in full: every file is hashed)."""
    found: Manifest = {}
    groups: dict[tuple[int, int], list[bytes]] = {}
    inodes: dict[bytes, tuple[int, int]] = {}
    base = os.fsencode(root)
    for rel, st in _walk(base, b""):
        path = os.path.join(base, rel) if rel else base
        kind = _KINDS[stat.S_IFMT(st.st_mode)]
        if kind == "file" and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            groups.setdefault(key, []).append(rel)
            inodes[rel] = key
        found[rel] = Entry(
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime_ns=st.st_mtime_ns,
            size=st.st_size if kind == "file" else 0,
            digest=_digest(path) if kind == "file" else "",
            target=os.readlink(path) if kind == "symlink" else b"",
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("chardev", "blockdev") else (0, 0),
            xattrs=_xattrs(path),
            links=(),
            allocated=st.st_blocks * 512,
        )
    for rel, key in inodes.items():
        names = groups[key]
        if len(names) > 1:
            found[rel] = replace(found[rel], links=tuple(sorted(names)))
    return found


def _walk(base: bytes, rel: bytes) -> Iterator[tuple[bytes, os.stat_result]]:
    path = os.path.join(base, rel) if rel else base
    st = os.lstat(path)
    yield rel, st
    if stat.S_ISDIR(st.st_mode):
        for name in sorted(os.listdir(path)):
            yield from _walk(base, os.path.join(rel, name) if rel else name)


def _digest(path: bytes) -> str:
    h = blake3.blake3()
    with open(path, "rb") as f:
        while block := f.read(READ):
            h.update(block)
    return h.hexdigest()


def _xattrs(path: bytes) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    found = []
    for name in sorted(names):
        try:
            found.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(found)


def compare(expected: Manifest, actual: Manifest, limit: int = 5) -> list[str]:
    """What differs between two manifests, at most ``limit`` lines (and a count of the rest)."""
    problems: list[str] = []
    for rel in sorted(expected.keys() | actual.keys()):
        shown = rel.decode("utf-8", "backslashreplace") or "."
        want, got = expected.get(rel), actual.get(rel)
        if want is None:
            problems.append(f"{shown}: not in the source")
        elif got is None:
            problems.append(f"{shown}: missing")
        else:
            wrong = [name for name in COMPARED if getattr(want, name) != getattr(got, name)]
            if wrong:
                detail = ", ".join(f"{n} {getattr(want, n)!r} != {getattr(got, n)!r}" for n in wrong[:2])
                problems.append(f"{shown}: {detail}")
    if len(problems) > limit:
        return [*problems[:limit], f"... and {len(problems) - limit} more"]
    return problems


def totals(manifest: Manifest) -> tuple[int, int]:
    """Logical bytes (each hard-link group once) and entries (the root not counted)."""
    seen: set[tuple[bytes, ...]] = set()
    size = 0
    for entry in manifest.values():
        if entry.kind != "file" or (entry.links and entry.links in seen):
            continue
        if entry.links:
            seen.add(entry.links)
        size += entry.size
    return size, len(manifest) - 1


def save(manifest: Manifest, path: Path) -> None:
    path.write_bytes(pickle.dumps(manifest))


def load(path: Path) -> Manifest:
    loaded: Manifest = pickle.loads(path.read_bytes())
    return loaded


def verify(root: Path, manifest_path: Path) -> list[str]:
    """A restore at ``root`` against the manifest saved at ``manifest_path``: what differs."""
    if not root.is_dir():
        return [f"{root}: no restored tree there"]
    return compare(load(manifest_path), capture(root))
