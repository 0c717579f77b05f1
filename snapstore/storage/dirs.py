"""The repository's directories, each opened once without following a symbolic link and
pinned for the life of the repository object (docs/FORMAT.md, "trust").

The stores are handed :func:`fsio.pinned` paths (``/proc/self/fd/<fd>``): the kernel
resolves them to the directory that was opened, so a symbolic link planted in the
repository (``tmp`` -> ``/home``) is refused when the repository is opened and cannot
redirect a store later. Files inside are opened by :func:`fsio.open_file`, which follows no
link either.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

from snapstore.errors import translate_os_error
from snapstore.storage import fsio

LAYOUT = ("packs", "snapshots", "tmp", "locks", "pins")


class RepoDirs:
    def __init__(self, root: Path) -> None:
        """Open ``root`` (as named: a link to it is the user's choice); then
        :meth:`open_layout`."""
        self.root = root
        self._fds: dict[str, int] = {}
        try:
            self._fds[""] = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise translate_os_error(exc, str(root)) from exc

    def open_layout(self, create_mode: int | None = None) -> None:
        """Open the layout directories; ``create_mode``: create those missing with this mode
        (writers). A directory that is a link or not a directory is a CorruptError."""
        for name in LAYOUT:
            if name not in self._fds:
                self._open(name, create_mode)

    def _open(self, name: str, create_mode: int | None) -> None:
        what = f"repository directory {self.root / name}"
        try:
            try:
                self._fds[name] = fsio.open_dir(name, what=what, dir_fd=self._fds[""])
            except FileNotFoundError:
                if create_mode is None:
                    return  # a reader finds it empty (see path())
                os.mkdir(name, create_mode, dir_fd=self._fds[""])
                self._fds[name] = fsio.open_dir(name, what=what, dir_fd=self._fds[""])
        except OSError as exc:
            raise translate_os_error(exc, what) from exc

    def path(self, name: str = "") -> Path:
        """The pinned path of the root (``""``) or of a layout directory. A missing one (a
        reader's repository without ``pins/``) is named below the pinned root: it lists as
        empty and nothing is written there."""
        fd = self._fds.get(name)
        if fd is None:
            return fsio.pinned(self._fds[""]) / name
        return fsio.pinned(fd)

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            with suppress(OSError):
                os.close(fd)
