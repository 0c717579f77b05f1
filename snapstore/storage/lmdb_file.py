"""LMDB's data file as bytes: what snapstore checks before LMDB reads it.

LMDB trusts its file: a damaged meta page can send it to a page past the end of the file, a
damaged node offset or size inside a page past the page, and py-lmdb touches every page of
a value it returns (a damaged size of 4 GiB is read through). The file is memory-mapped, so
such a read is not an error but SIGBUS, which kills the process. So (docs/FORMAT.md, "index"):

- :func:`check` reads both meta pages before the environment is opened (magic, version,
  page size, the last page and both roots inside the file);
- :func:`check_tree` then walks every page reachable from the meta a read transaction
  sees, while it holds that transaction (so no writer can reuse the pages): page numbers,
  page headers, node offsets, key and value sizes inside their page, overflow pages inside
  the file, free-list counts inside their values. About 0.25 s per million chunks. A walk
  may leave out tables (their records in the main table are still checked) and the free
  list: a reader of the small tables alone (snap log) does not pay for the chunk table.
- writers keep :data:`PAD_BYTES` of zeros (a sparse tail: no disk space) after the last
  page, a margin for what the checks cannot see.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from snapstore.errors import CorruptError, translate_os_error
from snapstore.storage import fsio

DATA_FILE = "data.mdb"
PAD_BYTES = 256 * 1024
_MAGIC = 0xBEEFC0DE
_DATA_VERSION = 1
_P_META = 0x08
_P_INVALID = (1 << 64) - 1
_PAGE_HEADER = struct.Struct("<QHHHH")  # pgno, pad, flags, lower, upper
_DB = "IHHQQQQQ"  # pad (psize in the free db), flags, depth, branch, leaf, overflow, entries, root
_META = struct.Struct("<IIQQ" + _DB + _DB + "QQ")  # magic, version, address, mapsize, 2 dbs, last pg, txnid


def check(index_dir: Path, hint: str) -> int:
    """Raise CorruptError unless both meta pages of the data file are sound; return where
    its pages end (bytes). A missing file is for LMDB to report."""
    path = index_dir / DATA_FILE
    page = mmap.PAGESIZE
    try:
        with os.fdopen(fsio.open_file(path, os.O_RDONLY, what="index"), "rb") as f:
            head = f.read(2 * page)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise translate_os_error(exc, "index") from exc
    end = 0
    for i in range(2):
        problem = _meta_problem(head[i * page : (i + 1) * page], i, size, page)
        if isinstance(problem, str):
            raise CorruptError("index", f"meta page {i}: {problem}", hint=hint)
        end = max(end, problem)
    return end


def _meta_problem(data: bytes, pgno: int, file_size: int, page: int) -> str | int:
    """What is wrong with one meta page, or where the pages it describes end."""
    if len(data) < _PAGE_HEADER.size + _META.size:
        return "truncated"
    number, _, flags, _, _ = _PAGE_HEADER.unpack_from(data)
    if number != pgno or not flags & _P_META:
        return "not a meta page"
    fields = _META.unpack_from(data, _PAGE_HEADER.size)
    magic, version = fields[0], fields[1]
    free_db, main_db = fields[4:12], fields[12:20]
    last_pg = fields[20]
    if magic != _MAGIC or version != _DATA_VERSION:
        return "bad magic or version"
    if free_db[0] != page:
        return f"page size {free_db[0]}, expected {page}"
    if not 2 <= last_pg + 1 <= file_size // page:
        return f"last page {last_pg} is past the end of the file"
    for db in (free_db, main_db):
        root, depth = db[7], db[2]
        if root != _P_INVALID and not (2 <= root <= last_pg and 1 <= depth <= 32):
            return f"root page {root} (depth {depth}) out of range"
    return int((last_pg + 1) * page)


def pad(index_dir: Path) -> None:
    """Make sure :data:`PAD_BYTES` of zeros follow the last page (sparse: no disk space).
    Best effort: after a committed transaction, failing here must not fail the command
    (the next write tries again)."""
    try:
        end = check(index_dir, "")
        if not end:
            return
        fd = fsio.open_file(index_dir / DATA_FILE, os.O_RDONLY, what="index")
        try:
            if os.fstat(fd).st_size < end + PAD_BYTES:
                os.truncate(fsio.pinned(fd), end + PAD_BYTES)  # the file open as fd, no link
        finally:
            os.close(fd)
    except (OSError, CorruptError):
        return


_NODE = struct.Struct("<HHHH")  # lo, hi, flags, key size (a branch: lo|hi<<16|flags<<32 = child)
_P_BRANCH, _P_LEAF, _P_OVERFLOW = 0x01, 0x02, 0x04
_F_BIGDATA, _F_SUBDATA, _F_DUPDATA = 0x01, 0x02, 0x04
_DB_RECORD = struct.Struct("<" + _DB)
_MAX_DEPTH = 32


class ConcurrentChange(Exception):
    """The meta page of the transaction was rewritten while it was read: check again."""


def check_tree(
    index_dir: Path, txn_id: int, hint: str, *, skip: frozenset[bytes] = frozenset(), free: bool = True
) -> set[int]:
    """Raise CorruptError unless every page reachable from the meta of transaction
    ``txn_id`` is sound (see the module docstring); return those page numbers. The caller
    holds that read transaction. The trees of the tables named in ``skip`` and, unless
    ``free``, the free list are left out."""
    page = mmap.PAGESIZE
    seen: set[int] = set()
    try:
        fd = fsio.open_file(index_dir / DATA_FILE, os.O_RDONLY, what="index")
    except OSError as exc:
        raise translate_os_error(exc, "index") from exc
    try:
        size = os.fstat(fd).st_size
        problem = _walk(fd, size // page, page, txn_id, seen, skip, free)
    except OSError as exc:
        raise translate_os_error(exc, "index") from exc
    finally:
        os.close(fd)
    if problem:
        raise CorruptError("index", problem, hint=hint)
    return seen


def _walk(
    fd: int, npages: int, page: int, txn_id: int, seen: set[int], skip: frozenset[bytes], with_free: bool
) -> str:
    metas = []
    for i in range(2):
        data = os.pread(fd, page, i * page)
        fields = _META.unpack_from(data, _PAGE_HEADER.size) if len(data) >= 16 + _META.size else None
        if fields is not None and fields[21] == txn_id:
            metas.append(fields)
    if not metas:
        raise ConcurrentChange
    fields = metas[0]
    last_pg = fields[20]
    if not 2 <= last_pg + 1 <= npages:
        return f"last page {last_pg} is past the end of the file"
    free_db, main_db = fields[4:12], fields[12:20]
    stack = [(main_db[7], main_db[2], False)]
    if with_free:
        stack.append((free_db[7], free_db[2], True))
    while stack:
        pgno, depth, free = stack.pop()
        if pgno == _P_INVALID:
            continue
        if not 2 <= pgno <= last_pg or pgno in seen or not 1 <= depth <= _MAX_DEPTH:
            return f"page {pgno} referenced twice, out of range or too deep"
        seen.add(pgno)
        data = os.pread(fd, page, pgno * page)
        number, _, flags, lower, upper = _PAGE_HEADER.unpack_from(data)
        if number != pgno or not 16 <= lower <= upper <= page or lower & 1:
            return f"page {pgno}: damaged header"
        ptrs = struct.unpack_from(f"<{(lower - 16) // 2}H", data, 16)
        if flags & _P_BRANCH and not flags & _P_LEAF:
            for ptr in ptrs:
                if not upper <= ptr <= page - _NODE.size:
                    return f"page {pgno}: node offset {ptr}"
                lo, hi, high, ksize = _NODE.unpack_from(data, ptr)
                if ptr + _NODE.size + ksize > page:
                    return f"page {pgno}: key past the page"
                stack.append((lo | hi << 16 | high << 32, depth - 1, free))
        elif flags & _P_LEAF and not flags & _P_BRANCH and depth == 1:
            for ptr in ptrs:
                problem = _leaf_node(fd, data, ptr, upper, page, last_pg, free, stack, skip)
                if problem:
                    return f"page {pgno}: {problem}"
        else:
            return f"page {pgno}: flags {flags:#x} at depth {depth}"
    return ""


def _leaf_node(
    fd: int,
    data: bytes,
    ptr: int,
    upper: int,
    page: int,
    last_pg: int,
    free: bool,
    stack: list[tuple[int, int, bool]],
    skip: frozenset[bytes],
) -> str:
    if not upper <= ptr <= page - _NODE.size:
        return f"node offset {ptr}"
    lo, hi, flags, ksize = _NODE.unpack_from(data, ptr)
    dsize = lo | hi << 16
    start = ptr + _NODE.size + ksize
    if flags & _F_DUPDATA:
        return "a duplicate-data node (no table of snapstore has them)"
    if flags & _F_BIGDATA:
        if start + 8 > page:
            return "overflow page number past the page"
        (first,) = struct.unpack_from("<Q", data, start)
        pages = (dsize + 16 + page - 1) // page
        if not 2 <= first <= last_pg + 1 - pages:
            return f"overflow pages {first}+{pages} out of range"
        head = os.pread(fd, 24, first * page)
        number, _, oflags, _, _ = _PAGE_HEADER.unpack_from(head)
        (count,) = struct.unpack_from("<I", head, 12)
        if number != first or not oflags & _P_OVERFLOW or count < pages:
            return f"overflow page {first}: damaged header"
        value_head = head[16:24]
    else:
        if start + dsize > page:
            return f"value of {dsize} bytes past the page"
        value_head = data[start : start + 8]
    # A free-list entry is a count, then that many page numbers.
    if free and (len(value_head) < 8 or (struct.unpack("<Q", value_head)[0] + 1) * 8 > dsize):
        return "free-list entry longer than its value"
    if flags & _F_SUBDATA:
        if flags & _F_BIGDATA or dsize != _DB_RECORD.size:
            return "damaged table record"
        db = _DB_RECORD.unpack_from(data, start)
        if data[ptr + _NODE.size : start] not in skip:
            stack.append((db[7], db[2], False))
    return ""
