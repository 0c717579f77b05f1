"""What ``snap serve`` lets a client do (for ``authorized_keys`` ``command=``, as ``borg
serve`` offers): ``--restrict-to-path P`` serves only repositories at or below P (links
resolved), ``--append-only`` refuses to delete or replace any object but the session's
scratch (``tmp/``), lock objects (``locks/``) and the index caches' ``generation`` (a put
with overwrite of a name not there is a create), so no snapshot can be removed and no pack
freed: rm, gc, prune and repair fail with AccessDeniedError (exit 14)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from snapstore.errors import AccessDeniedError

SCRATCH = ("tmp/", "locks/", "generation")  # what an append-only server still lets go


@dataclass(frozen=True)
class Policy:
    restrict_to: tuple[Path, ...] = field(default=())
    append_only: bool = False

    def check_path(self, path: Path) -> None:
        """AccessDeniedError unless ``path`` is at or below a ``--restrict-to-path``."""
        if not self.restrict_to:
            return
        real = os.path.realpath(path)
        for allowed in self.restrict_to:
            top = os.path.realpath(allowed)
            if real == top or real.startswith(top.rstrip("/") + "/"):
                return
        raise AccessDeniedError(
            f"{path} is outside the paths this server serves",
            hint="the server's key restricts it with --restrict-to-path",
        )

    def check_put(self, name: str, overwrite: bool, exists: Callable[[str], bool]) -> None:
        """AccessDeniedError for a put that would replace an object (``exists``: whether
        one is there) an append-only server keeps."""
        if overwrite and self._refuses(name) and exists(name):
            raise _denied("replace", name)

    def check_delete(self, name: str) -> None:
        if self._refuses(name):
            raise _denied("delete", name)

    def _refuses(self, name: str) -> bool:
        return self.append_only and not name.startswith(SCRATCH)


def _denied(what: str, name: str) -> AccessDeniedError:
    return AccessDeniedError(
        f"the server is append-only: it does not {what} {name!r}",
        hint="snapshots cannot be removed and space cannot be freed through this key",
    )
