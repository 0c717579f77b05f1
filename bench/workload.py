"""The benchmark's data: a deterministic, sparse, ext4-looking raw VM image and its later versions.

Every byte depends only on the seed and the size: each region draws from its own
``random.Random`` seeded with a string naming it, so the same seed gives identical files.
"""

from __future__ import annotations

import itertools
import os
import random
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import blake3

KiB = 1024
MiB = 1024 * KiB
BLOCK = 4 * KiB  # the guest filesystem's block size: every region and write is aligned to it
PIECE = 16 * MiB  # the largest buffer generated or copied at once
HEADER = 1 * MiB  # boot block, superblock and the first inode table
CHANGE_FRACTION = 0.025  # of the image rewritten in place between versions
INSERT_AT = 64 * KiB  # where the shifted version gets its extra bytes
INSERT_LEN = 5000  # a few KiB, deliberately not a multiple of the block size
DATA_MIX = {"random": 0.45, "log": 0.25, "table": 0.20, "zeros": 0.10}  # shares of the data half
VERSIONS = ("v1", "v2", "v3", "shifted")


class Kind(StrEnum):
    HOLE = "hole"
    RANDOM = "random"  # incompressible: compressed files, media, encrypted blobs
    LOG = "log"  # text: syslog/nginx/postgres lines (compresses ~5x)
    TABLE = "table"  # structured binary: ext4-like inode records (compresses well)
    ZEROS = "zeros"  # explicitly written zeros: allocated, unlike holes


@dataclass(frozen=True)
class Region:
    offset: int
    length: int
    kind: Kind


@dataclass(frozen=True)
class Image:
    """One version of the image on disk."""

    name: str
    path: Path
    size: int
    allocated: int  # st_blocks * 512
    digest: str  # BLAKE3 of the content, to verify checkouts


@dataclass
class Workload:
    images: dict[str, Image] = field(default_factory=dict)
    composition: dict[str, int] = field(default_factory=dict)  # bytes of v1 per kind
    writes_per_version: int = 0
    seconds: float = 0.0
    kind: str = "synthetic"  # or "real" (bench/realdata.py)
    notes: list[str] = field(default_factory=list)  # how the versions were made, when not synthetic


def build_workload(
    directory: Path, size: int, seed: int, data_fraction: float = 0.5, versions: tuple[str, ...] = VERSIONS
) -> Workload:
    """Write the images of ``versions`` (a prefix of VERSIONS) into ``directory``."""
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    work = Workload()
    paths = {name: directory / f"{name}.img" for name in versions}
    layout = plan_layout(size, data_fraction, random.Random(f"{seed}/layout"))
    work.composition = composition(layout)
    write_base_image(paths["v1"], size, layout, seed)
    for prev, name in itertools.pairwise(versions):
        if name == "shifted":
            write_shifted(paths[prev], paths[name], seed)
        else:
            work.writes_per_version = write_changed(paths[prev], paths[name], seed, name)
    work.images = {name: describe(name, path) for name, path in paths.items()}
    work.seconds = time.perf_counter() - started
    return work


# Layout of the first version ------------------------------------------------------------


def plan_layout(size: int, data_fraction: float, rng: random.Random) -> list[Region]:
    """Regions of 64 KiB..8 MiB covering the image; about ``1 - data_fraction`` are holes."""
    regions = [Region(0, min(HEADER, size), Kind.TABLE)]
    pos = regions[0].length
    while pos < size:
        length = min(BLOCK * round(2 ** rng.uniform(4, 11)), size - pos)
        regions.append(Region(pos, length, _pick_kind(rng, data_fraction)))
        pos += length
    return regions


def _pick_kind(rng: random.Random, data_fraction: float) -> Kind:
    if rng.random() >= data_fraction:
        return Kind.HOLE
    names = list(DATA_MIX)
    return Kind(rng.choices(names, weights=[DATA_MIX[n] for n in names])[0])


def composition(layout: list[Region]) -> dict[str, int]:
    totals = {kind.value: 0 for kind in Kind}
    for region in layout:
        totals[region.kind.value] += region.length
    return totals


def write_base_image(path: Path, size: int, layout: list[Region], seed: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)  # everything not written below stays a hole
        fd = f.fileno()
        for index, region in enumerate(layout):
            if region.kind is not Kind.HOLE:
                rng = random.Random(f"{seed}/v1/{index}")
                _pwrite_all(fd, fill(region.kind, region.length, rng), region.offset)
        if size >= 2 * KiB:  # a zero boot block, then the superblock
            os.pwrite(fd, bytes(KiB) + superblock(size, random.Random(f"{seed}/superblock")), 0)


def fill(kind: Kind, length: int, rng: random.Random) -> Iterator[bytes]:
    """The bytes of one region, in pieces of at most PIECE bytes."""
    for start in range(0, length, PIECE):
        n = min(PIECE, length - start)
        if kind is Kind.RANDOM:
            yield rng.randbytes(n)
        elif kind is Kind.LOG:
            yield log_text(n, rng)
        elif kind is Kind.TABLE:
            yield inode_table(n, rng)
        else:
            yield bytes(n)


def _pwrite_all(fd: int, pieces: Iterable[bytes], offset: int) -> None:
    for piece in pieces:
        view = memoryview(piece)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n


# Content generators ---------------------------------------------------------------------

_HOSTS = ("web-01", "web-02", "db-01", "cache-1")
_STATUS = (200, 200, 200, 200, 304, 404, 500, 301)
_PATHS = ("/api/v1/items/%d", "/static/js/app.%x.js", "/login?next=/u/%d", "/api/v2/search?q=%x")
# Every template takes (stamp, host, int, int, int, str, int, int).
_TEMPLATES = (
    '%s %s nginx[%d]: 10.0.%d.%d - - "GET %s HTTP/1.1" %d %d\n',
    "%s %s sshd[%d]: Accepted publickey for deploy from 10.1.%d.%d port 22 ssh2 %s %d %d\n",
    "%s %s kernel: [%d.%03d%03d] EXT4-fs (vda1): re-mounted %s. Opts: errors=remount-ro %d %d\n",
    "%s %s postgres[%d]: LOG: duration: %d.%03d ms statement: SELECT * FROM t WHERE k='%s' LIMIT %d -- %d\n",
)


def log_text(n: int, rng: random.Random) -> bytes:
    """``n`` bytes of plausible, varied log lines with increasing timestamps."""
    lines: list[str] = []
    total = 0
    sec, ms = 1_715_650_000 + rng.randrange(10**7), 0
    stamp = _stamp(sec)
    while total < n:
        b = rng.getrandbits(64)
        ms += b & 0x3F
        if ms >= 1000:
            sec, ms = sec + ms // 1000, ms % 1000
            stamp = _stamp(sec)
        path = _PATHS[(b >> 41) & 3] % ((b >> 43) & 0xFFFF)
        line = _TEMPLATES[(b >> 6) & 3] % (
            f"{stamp}.{ms:03d}Z",
            _HOSTS[(b >> 8) & 3],
            (b >> 10) & 0x7FFF,
            (b >> 25) & 0xFF,
            (b >> 33) & 0xFF,
            path,
            _STATUS[(b >> 59) & 7],
            (b >> 20) & 0xFFFF,
        )
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:n]


def _stamp(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


_INODE = struct.Struct("<HHIIIIIHHII60sI")  # i_mode .. i_block (an extent header + one extent), i_gen
_INODE_SIZE = 256


def inode_table(n: int, rng: random.Random) -> bytes:
    """``n`` bytes of ext4-like 256-byte inode records: small varying fields, mostly zeros."""
    out = bytearray(-(-n // _INODE_SIZE) * _INODE_SIZE)
    t0 = 1_715_650_000 + rng.randrange(10**7)
    block = rng.randrange(1 << 24)
    for pos in range(0, len(out), _INODE_SIZE):
        b = rng.getrandbits(64)
        size = b & 0xFFFFF if b >> 62 else 0
        blocks = -(-size // BLOCK)
        extent = struct.pack("<HHHHIHHI", 0xF30A, 1, 4, 0, 0, blocks, 0, block)
        mode = 0o100644 if b >> 63 else 0o40755
        mtime = t0 + ((b >> 20) & 0xFFFF)
        generation = (b >> 36) & 0xFFFFFF
        _INODE.pack_into(
            out, pos, mode, 1000, size, mtime, t0, mtime, 0, 1000, 1, blocks * 8, 0x80000, extent, generation
        )
        block += blocks
    return bytes(out[:n])


def superblock(size: int, rng: random.Random) -> bytes:
    """An ext4-like superblock (magic 0xEF53 at 0x38), written at offset 1024."""
    sb = bytearray(KiB)
    blocks = size // BLOCK
    struct.pack_into("<IIIII", sb, 0, blocks // 4, blocks, blocks // 20, blocks // 2, blocks // 8)
    struct.pack_into("<IIIII", sb, 0x14, 0, 2, 2, 32768, 32768)
    struct.pack_into("<IIIHhHH", sb, 0x28, 8192, 1_715_650_000, 1_715_650_000, 1, -1, 0xEF53, 1)
    struct.pack_into("<I", sb, 0x4C, 1)
    struct.pack_into("<IH", sb, 0x54, 11, _INODE_SIZE)
    struct.pack_into("<III", sb, 0x5C, 0x3C, 0x2C2, 0x7B)  # has_journal; extents, 64bit, flex_bg
    sb[0x68:0x78] = rng.randbytes(16)
    sb[0x78:0x88] = b"bench-root".ljust(16, b"\0")
    return bytes(sb)


# Later versions -------------------------------------------------------------------------


def write_changed(src: Path, dst: Path, seed: int, name: str) -> int:
    """``dst`` = ``src`` with CHANGE_FRACTION of it rewritten in place; returns the write count."""
    sparse_copy(src, dst)
    size = src.stat().st_size
    rng = random.Random(f"{seed}/{name}/writes")
    writes = plan_writes(size, rng)
    with open(dst, "r+b") as f:
        for index, region in enumerate(writes):
            content = random.Random(f"{seed}/{name}/{index}")
            _pwrite_all(f.fileno(), fill(region.kind, region.length, content), region.offset)
    return len(writes)


def plan_writes(size: int, rng: random.Random) -> list[Region]:
    """Scattered block-aligned writes of 4 KiB..1 MiB totalling CHANGE_FRACTION of ``size``."""
    writes: list[Region] = []
    budget = int(size * CHANGE_FRACTION)
    blocks = size // BLOCK
    while budget > 0 and blocks > 0:
        length = min(BLOCK * round(2 ** rng.uniform(0, 8)), budget, blocks * BLOCK)
        offset = BLOCK * rng.randrange(blocks - -(-length // BLOCK) + 1)
        writes.append(Region(offset, length, Kind.RANDOM if rng.random() < 0.6 else Kind.LOG))
        budget -= length
    return writes


def write_shifted(src: Path, dst: Path, seed: int) -> None:
    """``dst`` = ``src`` with INSERT_LEN bytes inserted at INSERT_AT: every later byte moves."""
    insert = log_text(INSERT_LEN, random.Random(f"{seed}/shifted/insert"))
    sparse_copy(src, dst, insert_at=INSERT_AT, insert=insert)


def sparse_copy(src: Path, dst: Path, insert_at: int = 0, insert: bytes = b"") -> None:
    """Copy the data regions of ``src`` (explicit zeros included), leaving its holes as holes;
    optionally insert ``insert`` at ``insert_at``."""
    shift = len(insert)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        size = os.fstat(fi.fileno()).st_size
        for offset, length in data_extents(fi.fileno(), size):
            for pos in range(offset, offset + length, PIECE):
                block = os.pread(fi.fileno(), min(PIECE, offset + length - pos), pos)
                head = block[: max(0, insert_at - pos)]
                _pwrite_all(fo.fileno(), [head], pos)
                _pwrite_all(fo.fileno(), [block[len(head) :]], pos + len(head) + shift)
        if insert:
            os.pwrite(fo.fileno(), insert, insert_at)
        fo.truncate(size + shift)


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of the allocated regions of an open file (SEEK_DATA/SEEK_HOLE)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: nothing but a hole from here on
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end - start
        pos = end


# Facts about the files ------------------------------------------------------------------


def describe(name: str, path: Path) -> Image:
    st = path.stat()
    return Image(name, path, st.st_size, st.st_blocks * 512, file_digest(path))


def file_digest(path: Path) -> str:
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(path, "rb", buffering=0) as f:
        while block := f.read(PIECE):
            h.update(block)
    return h.hexdigest()
