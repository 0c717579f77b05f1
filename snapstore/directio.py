"""Reading an input file around the page cache: direct I/O and page-cache residency.

Input reading is not repository storage: commit (ops/streams.py) reads its input through
these, and so may any layer; snapstore.storage.fsio re-exports them for older callers.
"""

from __future__ import annotations

import ctypes
import os

# The C library this process already runs on (find_library would spawn ldconfig at start-up).
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int64,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_MAP_FAILED = ctypes.c_void_p(-1).value
PAGE = 4096  # the alignment direct I/O asks for (of offsets, lengths and buffers)


def open_direct(fd: int) -> int:
    """A second descriptor of the file open as ``fd``, reading with direct I/O (around the
    page cache), or -1 where the file system or the platform refuses it."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return -1  # pragma: no cover - Linux has it
    try:
        direct = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | flag)
    except OSError:
        return -1
    a, b = os.fstat(fd), os.fstat(direct)
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):  # pragma: no cover - /proc lied
        os.close(direct)
        return -1
    return direct


def cached(fd: int, offset: int, length: int) -> bool:
    """Whether every page of ``[offset, offset+length)`` (``offset`` page-aligned) is in the
    page cache (mincore on a mapping that is never touched); False when that cannot be told."""
    if length <= 0:
        return True
    addr = _libc.mmap(None, length, 1, 1, fd, offset)  # PROT_READ, MAP_SHARED
    if addr in (None, _MAP_FAILED):
        return False
    try:
        pages = -(-length // PAGE)
        vec = ctypes.create_string_buffer(pages)
        if _libc.mincore(addr, length, vec) != 0:
            return False
        return b"\x00" not in vec.raw  # one byte a page: 1 when resident
    finally:
        _libc.munmap(addr, length)
