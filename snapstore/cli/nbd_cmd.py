"""snap nbd"""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path
from typing import Annotated

import typer

from snapstore.cli.common import NoLockOption, RepoOption, info, open_repo
from snapstore.cli.signals import Signalled
from snapstore.cli.text import safe
from snapstore.errors import UsageError, translate_os_error
from snapstore.ops.nbd import serve
from snapstore.ops.snapread import SnapshotReader
from snapstore.units import format_size

DEFAULT_PORT = 10809  # the NBD port IANA assigned


def nbd(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id, unique prefix, or 'latest'.")],
    socket_path: Annotated[
        Path | None, typer.Option("--socket", help="Listen on this Unix socket (created; removed at exit).")
    ] = None,
    port: Annotated[int | None, typer.Option(help=f"Listen on TCP port (default {DEFAULT_PORT}).")] = None,
    bind: Annotated[str, typer.Option(help="Address to listen on with TCP.")] = "127.0.0.1",
    name: Annotated[str | None, typer.Option(help="With 'latest': newest of this name.")] = None,
    repo: RepoOption = None,
    no_lock: NoLockOption = False,
) -> None:
    """Serve a file snapshot as a read-only NBD export (qemu, nbdcopy, nbdinfo) until stopped.

    Every read is checked against the chunk ids. A VM boots from it through a qcow2 overlay:
    qemu-img create -f qcow2 -b nbd+unix:///?socket=S -F raw overlay.qcow2"""
    if socket_path is not None and port is not None:
        raise UsageError("give --socket or --port, not both")
    with open_repo(repo, no_lock=no_lock) as r:
        snap = r.resolve(snapshot, name=name)
        with SnapshotReader(r, snap) as reader, _listen(socket_path, bind, port) as (listener, uri):
            shown = f"{snap.hex[:12]} ({safe(snap.name)}, {format_size(reader.size)})"
            info(f"serving {shown} read-only at {uri}")
            stop = threading.Event()
            try:
                serve(listener, reader, snap.hex[:12], stop)
            except Signalled:
                stop.set()
                info("stopped")


class _listen:
    """The listening socket, and the URI clients use; a Unix socket's file is removed at exit."""

    def __init__(self, path: Path | None, bind: str, port: int | None) -> None:
        self.path = path
        self.bind = bind
        self.port = DEFAULT_PORT if port is None else port

    def __enter__(self) -> tuple[socket.socket, str]:
        try:
            if self.path is not None:
                if os.path.lexists(self.path):
                    raise UsageError(f"{self.path} exists", hint="name a new socket path")
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(str(self.path))
                uri = f"nbd+unix:///?socket={self.path}"
            else:
                family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.bind, self.port))
                host = f"[{self.bind}]" if family == socket.AF_INET6 else self.bind
                uri = f"nbd://{host}:{self.port}/"
        except OSError as exc:
            raise translate_os_error(exc, str(self.path or f"{self.bind}:{self.port}")) from exc
        sock.listen(16)
        self.sock = sock
        return sock, uri

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        if self.path is not None:
            try:
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    os.unlink(self.path)
            except OSError:
                pass
