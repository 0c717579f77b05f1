"""Finding a local repository, reading its config and laying out a new one (a repository
over a backend: repo_location.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from snapstore.errors import (
    RepositoryNotFoundError,
    StorageIOError,
    UnsupportedFormatError,
    translate_os_error,
)
from snapstore.format import READABLE_VERSIONS
from snapstore.format import config as config_fmt
from snapstore.model import Config
from snapstore.storage import fsio
from snapstore.storage.dirs import RepoDirs
from snapstore.storage.index import Index

REPO_DIR_NAME = ".snapstore"
RESERVE_SIZE = 16 * 1024 * 1024


def find_root(start: Path) -> Path | None:
    """The nearest ``.snapstore`` directory at or above ``start``."""
    for directory in (start, *start.parents):
        candidate = directory / REPO_DIR_NAME
        try:
            st = os.stat(candidate / "config")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:  # e.g. a .snapstore this user may not search: say so
            raise translate_os_error(exc, str(candidate)) from exc
        if stat.S_ISREG(st.st_mode):
            return candidate
    return None


def create_layout(root: Path, config: Config) -> None:
    """The directories, an empty index, the reserve file and, last, the config: a directory
    without it is not a repository yet."""
    file_mode = 0o644 if config.shared else 0o600
    dir_mode = fsio.dir_mode(file_mode)
    try:
        root.mkdir(mode=dir_mode, parents=True, exist_ok=True)
        (root / "index").mkdir(mode=dir_mode, exist_ok=True)
    except OSError as exc:
        raise translate_os_error(exc, str(root)) from exc
    dirs = RepoDirs(root)
    try:
        dirs.open_layout(dir_mode)
        Index(dirs.path() / "index", mode=file_mode, create=True).close()
        fsio.reserve_space(dirs.path() / "reserve", RESERVE_SIZE, file_mode)
        fsio.write_durable(dirs.path() / "config", config_fmt.encode(config), file_mode)
    finally:
        dirs.close()


def open_dirs(root: Path) -> RepoDirs:
    try:
        return RepoDirs(root)
    except StorageIOError as exc:
        if not root.is_dir():
            raise RepositoryNotFoundError(root) from exc
        raise


def load_config(root: Path, pinned_root: Path | None = None, *, ignore_bad_quota: bool = False) -> Config:
    """The config of the repository at ``root`` (read through ``pinned_root`` when given)."""
    path = (pinned_root or root) / "config"
    try:
        fd = fsio.open_file(path, os.O_RDONLY, what=f"{root / 'config'}")
        try:
            data = b""
            while len(data) <= config_fmt.MAX_CONFIG_SIZE and (part := os.read(fd, 1 << 16)):
                data += part
        finally:
            os.close(fd)
    except FileNotFoundError as exc:
        raise RepositoryNotFoundError(root) from exc
    except NotADirectoryError as exc:
        raise RepositoryNotFoundError(root) from exc
    except OSError as exc:
        raise translate_os_error(exc, str(root / "config")) from exc
    return decode_config(data, root, ignore_bad_quota=ignore_bad_quota)


def decode_config(data: bytes, root: Path, *, ignore_bad_quota: bool = False) -> Config:
    """A config's bytes decoded (UnsupportedFormatError for a format this snap cannot read)."""
    version = config_fmt.peek_version(data)
    if version not in READABLE_VERSIONS:
        raise UnsupportedFormatError(root, version, READABLE_VERSIONS)
    return config_fmt.decode(data, ignore_bad_quota=ignore_bad_quota)


def save_config(dirs: RepoDirs, config: Config, file_mode: int) -> None:
    fsio.write_durable(dirs.path() / "config", config_fmt.encode(config), file_mode)
