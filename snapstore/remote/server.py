"""``snap serve --stdio``: the server's end of the protocol (docs/PROTOCOL.md). It greets,
opens the one repository directory the client names (within ``--restrict-to-path``), then
answers requests in the order they come, each on the local backend of that directory, until
its input ends. Nothing but frames is written to stdout.

What a session holds (locks, objects being appended to) is let go when it ends, however it
ends: the kernel drops a dead server's locks, and an object appended to keeps what its last
checkpoint made durable, as after a killed local commit."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from snapstore.backends.base import AppendWriter, Backend, check_name
from snapstore.backends.local import LocalBackend
from snapstore.errors import ProtocolError, RepositoryNotFoundError, SnapstoreError
from snapstore.remote import maintenance, wire
from snapstore.remote.policy import Policy
from snapstore.remote.putstream import PutStream
from snapstore.remote.wire import Header

WHERE = "the client"


class Server:
    def __init__(
        self,
        stdin: BinaryIO,
        stdout: BinaryIO,
        policy: Policy,
        version: str,
        runner: maintenance.Runner | None = None,
    ) -> None:
        self._version = version  # snapstore's, told in the greeting
        self._in = stdin
        self._out = stdout
        self._policy = policy
        self._backend: Backend | None = None
        self._writers: dict[int, AppendWriter] = {}
        self._locks: dict[int, AbstractContextManager[None]] = {}
        self._puts: dict[int, PutStream] = {}
        self._handles = iter(range(1, 1 << 62))
        self._gone = False  # the output is broken: the client is gone
        # -- maintenance run on the server (remote/maintenance.py): given by snap serve
        self._runner = runner
        self._served: maintenance.Served | None = None

    def run(self) -> int:
        """Serve until the input ends; the exit status (0, or 13 for a broken protocol)."""
        self._out.write(wire.MAGIC)
        self._reply({"server": "snapstore", "version": self._version, "protocols": [wire.PROTOCOL_VERSION]})
        try:
            while (frame := wire.read_frame(self._in, WHERE)) is not None:
                self._answer(*frame)
        except ProtocolError:
            return ProtocolError.exit_code
        finally:
            self._end()
        return 0

    def _answer(self, header: Header, payload: bytes) -> None:
        request_id = header.get("id")
        op = header.get("op")
        out = b""
        try:
            if op == "open":
                result = self._open(header)
            elif self._backend is None:
                raise ProtocolError(WHERE, f"{op!r} asked before open")
            else:
                handler = _HANDLERS.get(str(op))
                if handler is None:  # a newer client's: refused, the session goes on
                    raise ProtocolError(WHERE, f"unknown request {op!r}")
                result, out = handler(self, self._backend, header, payload)
        except (SnapstoreError, ValueError, NotImplementedError, KeyError, TypeError) as exc:
            self._reply({"id": request_id, "error": wire.encode_error(exc)})
            return
        self._reply({"id": request_id, "ok": result}, out)

    def _reply(self, header: Header, payload: bytes = b"") -> None:
        """Send a reply; once the client is gone, none (the requests that reached the server
        whole are still carried out, as if their replies were lost on the way: a rerun then
        reuses every append that arrived)."""
        if self._gone:
            return
        try:
            self._out.write(wire.encode_frame(header, len(payload)))
            if payload:
                self._out.write(payload)
            self._out.flush()
        except BrokenPipeError:
            self._gone = True

    # -- requests ------------------------------------------------------------------------------

    def _open(self, header: Header) -> Header:
        if self._backend is not None:
            raise ProtocolError(WHERE, "open asked twice")
        if header.get("protocol") != wire.PROTOCOL_VERSION:
            raise ProtocolError(
                WHERE, f"protocol version {header.get('protocol')!r} is not {wire.PROTOCOL_VERSION}"
            )
        path = Path(str(header["path"]))
        self._policy.check_path(path)
        create = bool(header.get("create"))
        if not create and not (path / "config").exists():
            raise RepositoryNotFoundError(path)
        self._backend = LocalBackend(path, create=create)
        self._served = maintenance.Served(path, self._policy.append_only)
        caps = self._backend.capabilities
        return {
            "capabilities": {
                "append": caps.append,
                "punch": caps.punch and not self._policy.append_only,
                "flock": caps.flock,
                "create_exclusive": caps.create_exclusive,
            },
            "append_only": self._policy.append_only,
            "run": list(maintenance.COMMANDS) if self._runner is not None else [],
        }

    def handle(self) -> int:
        return next(self._handles)

    def _end(self) -> None:
        for lock in self._locks.values():
            with suppress(Exception):
                lock.__exit__(None, None, None)
        self._locks.clear()
        for put in self._puts.values():
            put.abort()
        self._puts.clear()
        self._writers.clear()  # unsealed objects keep their last checkpoint (no abort)
        if self._backend is not None:
            self._backend.close()


_Result = tuple[Any, bytes]


def _put_open(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    name, overwrite = check_name(str(h["name"])), bool(h.get("overwrite"))
    server._policy.check_put(name, overwrite, _exists(backend))
    server._puts[int(h["id"])] = PutStream(backend, name, overwrite)
    return None, b""


def _put_part(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    put = server._puts.get(int(h["handle"]))
    if put is not None:  # (none: its opening failed, and the client learns it from that)
        put.add(payload)
    return None, b""


def _put_end(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    put = server._puts.pop(int(h["handle"]), None)
    if put is not None:
        put.end()
    return None, b""


def _put_abort(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    put = server._puts.pop(int(h["handle"]), None)
    if put is not None:
        put.abort()
    return None, b""


def _get(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    name, offset, length = str(h["name"]), int(h["offset"]), h.get("length")
    size = backend.stat(name)
    if length is None:
        length = max(0, min(size - offset, wire.PIECE))
    return size, backend.get(name, offset, int(length))


def _stat(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    return backend.stat(str(h["name"])), b""


def _stat_many(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    names = [str(n) for n in h["names"]]
    sizes = backend.stat_many(names)
    return [sizes[n] for n in names], b""


def _list(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    return None, "\n".join(backend.list(str(h["prefix"]))).encode()


def _delete(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    name = str(h["name"])
    server._policy.check_delete(name)
    backend.delete(name)
    return None, b""


def _usage(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    return backend.usage(), b""


def _append_open(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    name = str(h["name"])
    server._policy.check_put(name, False, _exists(backend))
    handle = server.handle()
    server._writers[handle] = backend.open_append(name)
    return handle, b""


def _append_write(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    server._writers[int(h["handle"])].write(payload)
    return None, b""


def _append_checkpoint(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    server._writers[int(h["handle"])].checkpoint()
    return None, b""


def _append_seal(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    server._writers[int(h["handle"])].seal()
    return None, b""


def _append_abort(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    writer = server._writers.pop(int(h["handle"]), None)
    if writer is not None:
        writer.abort()
    return None, b""


def _punch(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    name = str(h["name"])
    server._policy.check_delete(name)
    backend.punch(name, int(h["offset"]), int(h["length"]))
    return None, b""


def _lock(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    held = backend.lock(str(h["name"]), exclusive=bool(h["exclusive"]))
    held.__enter__()
    handle = server.handle()
    server._locks[handle] = held
    return handle, b""


def _unlock(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    held = server._locks.pop(int(h["handle"]), None)
    if held is not None:
        held.__exit__(None, None, None)
    return None, b""


def _create_exclusive(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    name = str(h["name"])
    server._policy.check_put(name, False, _exists(backend))
    return backend.create_exclusive(name, payload), b""


# -- maintenance run on the server (docs/PROTOCOL.md, "run") ---------------------------------------


def _run(server: Server, backend: Backend, h: Header, payload: bytes) -> _Result:
    assert server._served is not None  # (opened)

    def send(header: Header) -> None:
        server._reply(header)
        if server._gone:  # _reply keeps quiet once the client is gone; the run stops
            raise BrokenPipeError("the client is gone")

    return maintenance.handle_run(server._served, server._runner, h, send), b""


def _exists(backend: Backend) -> Callable[[str], bool]:
    return lambda name: bool(backend.exists_many([name]))


_HANDLERS = {
    "put_open": _put_open,
    "put_part": _put_part,
    "put_end": _put_end,
    "put_abort": _put_abort,
    "get": _get,
    "stat": _stat,
    "stat_many": _stat_many,
    "list": _list,
    "delete": _delete,
    "usage": _usage,
    "append_open": _append_open,
    "append_write": _append_write,
    "append_checkpoint": _append_checkpoint,
    "append_seal": _append_seal,
    "append_abort": _append_abort,
    "punch": _punch,
    "lock": _lock,
    "unlock": _unlock,
    "create_exclusive": _create_exclusive,
    "run": _run,  # maintenance run on the server
}


def serve_stdio(policy: Policy, version: str, runner: maintenance.Runner | None = None) -> int:
    """Serve on this process's stdin and stdout (which then carry nothing else)."""
    stdin = os.fdopen(os.dup(0), "rb", buffering=1 << 20)
    stdout = os.fdopen(os.dup(1), "wb", buffering=1 << 20)
    devnull = os.open(os.devnull, os.O_RDWR)  # nothing else may write frames' bytes
    os.dup2(devnull, 1)
    os.close(devnull)
    return Server(stdin, stdout, policy, version, runner).run()
