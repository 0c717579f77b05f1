"""Reading a commit's input: direct I/O where the bytes are not cached, the page cache
where they are, plain reads where direct I/O cannot be used; the same bytes every way."""

from __future__ import annotations

import mmap
import os
import random
from pathlib import Path

import pytest

from snapstore.errors import InputChangedError
from snapstore.ops.streams import InputFile
from snapstore.storage import fsio

PAGE = fsio.PAGE


def _uncached(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = random.Random(5).randbytes(3 * 1024 * 1024 + 1234)  # not a whole number of pages
    path = tmp_path / "input.img"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("cold", [True, False])
@pytest.mark.parametrize("direct", [True, False])
def test_reads_give_the_file_bytes(data_file: tuple[Path, bytes], cold: bool, direct: bool) -> None:
    path, data = data_file
    if cold:
        _uncached(path)
    fd = os.open(path, os.O_RDONLY)
    source = InputFile(fd, path, direct=direct)
    room = memoryview(mmap.mmap(-1, 2 * 1024 * 1024))  # page-aligned, as the commit's blocks are
    try:
        for offset, length in [
            (0, 1 << 20),
            (1 << 20, 2 << 20),
            (3 << 20, len(data) - (3 << 20)),
            (4097, 5000),
        ]:
            source.read(room, offset, length)
            assert bytes(room[:length]) == data[offset : offset + length], (offset, length)
    finally:
        source.close()
        os.close(fd)


def test_cached_tells_resident_pages(data_file: tuple[Path, bytes]) -> None:
    path, _ = data_file
    _uncached(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert not fsio.cached(fd, 0, 1 << 20)
        os.pread(fd, 1 << 20, 0)
        assert fsio.cached(fd, 0, 1 << 20)
        assert fsio.cached(fd, 0, 0)
    finally:
        os.close(fd)


def test_a_file_that_shrank_is_reported(data_file: tuple[Path, bytes]) -> None:
    path, _ = data_file
    fd = os.open(path, os.O_RDONLY)
    source = InputFile(fd, path)
    room = memoryview(mmap.mmap(-1, 2 * 1024 * 1024))
    try:
        os.truncate(path, 1 << 20)
        _uncached(path)
        with pytest.raises(InputChangedError):
            source.read(room, PAGE * 200, 1 << 20)
    finally:
        source.close()
        os.close(fd)


def test_direct_io_refused_falls_back(data_file: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """A device whose alignment rules refuse a direct read: that read and every later one
    are plain reads, with the same bytes."""
    path, data = data_file
    _uncached(path)
    fd = os.open(path, os.O_RDONLY)
    source = InputFile(fd, path)
    real_preadv = os.preadv
    refused = []

    def preadv(fildes: int, buffers: list[memoryview], offset: int) -> int:
        if fildes not in (fd,):
            refused.append(offset)
            raise OSError(22, "Invalid argument")
        return real_preadv(fildes, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)
    room = memoryview(mmap.mmap(-1, 2 * 1024 * 1024))
    try:
        for offset in (0, 1 << 20, 2 << 20):
            source.read(room, offset, 1 << 20)
            assert bytes(room[: 1 << 20]) == data[offset : offset + (1 << 20)]
    finally:
        source.close()
        os.close(fd)
    assert refused == [0]  # tried once, then never again
