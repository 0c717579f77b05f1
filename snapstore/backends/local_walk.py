"""Walking a local backend's directories: its names in sorted order, and its temp files.

Directories are opened relative to their parent by :func:`fsio.open_dir` (a link planted as
a directory is not walked into: it is listed as a name, which get then refuses), each with a
descriptor of its own, read whole, then walked depth first.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

from snapstore.backends.base import check_name
from snapstore.errors import CorruptError, ObjectNameError, translate_os_error
from snapstore.storage import fsio


def names(dfd: int, path: str, prefix: str, root: Path) -> Iterator[str]:
    """The names below the directory open as ``dfd`` (named ``path``, ``""`` or ending in a
    slash) that start with ``prefix``, in string order; directories that cannot hold such
    a name are not opened."""
    for key, is_dir in _sorted_entries(dfd, path, root):
        full = path + key
        if not is_dir:
            if full.startswith(prefix):
                yield full
        elif full.startswith(prefix) or prefix.startswith(full):
            try:
                sub = fsio.open_dir(key[:-1], what=f"directory {root / full}", dir_fd=dfd)
            except FileNotFoundError:
                continue  # removed meanwhile
            except OSError as exc:
                raise translate_os_error(exc, str(root / full)) from exc
            try:
                yield from names(sub, full, prefix, root)
            finally:
                os.close(sub)


def temp_files(dfd: int, mark: str, *, skip: frozenset[str] = frozenset()) -> Iterator[tuple[int, str]]:
    """``(directory descriptor, entry)`` of every hidden file whose name holds ``mark``,
    except below the directories ``skip`` names (of the one open as ``dfd``)."""
    with os.scandir(dfd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for entry, is_dir in entries:
        if not is_dir:
            if entry.startswith(".") and mark in entry:
                yield dfd, entry
            continue
        if entry in skip:
            continue
        try:
            sub = fsio.open_dir(entry, what="directory", dir_fd=dfd)
        except (FileNotFoundError, CorruptError):
            continue
        try:
            yield from temp_files(sub, mark)
        finally:
            os.close(sub)


def _sorted_entries(dfd: int, path: str, root: Path) -> list[tuple[str, bool]]:
    """The entries of a directory that are names or can hold names, a directory's with a
    slash appended, sorted: walking them depth first yields names in string order."""
    try:
        with os.scandir(dfd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        raise translate_os_error(exc, str(root / path)) from exc
    keys = []
    for entry, is_dir in entries:
        try:
            check_name(path + entry)
        except ObjectNameError:
            continue  # hidden (temp files), or no name of this backend
        keys.append((entry + "/" if is_dir else entry, is_dir))
    keys.sort()
    return keys
