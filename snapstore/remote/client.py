"""A storage backend on another machine, spoken to over SSH (docs/PROTOCOL.md): every
method of :class:`~snapstore.backends.base.Backend` is one request (or a few, pipelined) to
``snap serve --stdio`` on the server, which runs it on its local backend. A repository over
it works as over any backend (``Repository.open_backend``), its index a local cache.

Requests of different threads are in flight together; appends are buffered and sent without
waiting (their failures surface at the next call of the writer, at the latest at
``checkpoint``); big gets and puts cross in pieces of ``wire.PIECE`` bytes."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

from snapstore.backends.base import (
    AppendWriter,
    Backend,
    Capabilities,
    Data,
    check_name,
    check_prefix,
    check_range,
    parts_of,
)
from snapstore.errors import ProtocolError, RemoteError
from snapstore.model import Buffer
from snapstore.progress import Progress
from snapstore.remote import maintenance, wire
from snapstore.remote.address import SshAddress, ssh_argv
from snapstore.remote.channel import Channel, Reply

# Appends are sent in frames of about _APPEND_BUFFER bytes, at most _APPEND_IN_FLIGHT of one
# writer unanswered: what a dropped link can lose of what was sent (a rerun sends it again),
# and what keeps the link full (enough for ~100 MB/s at 10 ms round trips).
_APPEND_BUFFER = 256 << 10
_APPEND_IN_FLIGHT = 4
_STAT_BATCH = 10_000


class RemoteBackend(Backend):
    """The backend ``snap serve`` offers for one repository directory on the server."""

    def __init__(self, channel: Channel, opened: dict[str, object]) -> None:
        self._channel = channel
        caps = opened.get("capabilities")
        caps = caps if isinstance(caps, dict) else {}
        self.capabilities = Capabilities(
            append=bool(caps.get("append")),
            punch=bool(caps.get("punch")),
            flock=bool(caps.get("flock")),
            create_exclusive=bool(caps.get("create_exclusive")),
        )
        self.append_only = bool(opened.get("append_only"))  # the server refuses removals
        self.where = channel.where
        runs = opened.get("run")  # the maintenance commands the server runs itself (none: older)
        self.runs = frozenset(str(c) for c in runs) if isinstance(runs, list) else frozenset()

    @classmethod
    def connect(
        cls, address: SshAddress, *, rsh: str, remote_snap: str, create: bool = False, timeout: float = 120.0
    ) -> RemoteBackend:
        """Run ``rsh`` to reach the address's host and start ``remote_snap serve --stdio``
        there, check the protocol version and open the repository directory (``create``:
        make it if missing)."""
        where = str(address)
        channel = Channel(ssh_argv(rsh, address, f"{remote_snap} serve --stdio"), where, timeout)
        try:
            greeting = channel.handshake()
            versions = greeting.get("protocols")
            if not isinstance(versions, list) or wire.PROTOCOL_VERSION not in versions:
                raise ProtocolError(
                    where,
                    f"the server speaks protocol version(s) {versions!r}, this snap speaks "
                    f"{wire.PROTOCOL_VERSION}",
                    hint="install the same snapstore version on both machines",
                )
            request = {
                "op": "open",
                "protocol": wire.PROTOCOL_VERSION,
                "path": address.path,
                "create": create,
            }
            opened, _ = channel.request(request).wait(channel)
        except BaseException:
            channel.close()
            raise
        return cls(channel, opened if isinstance(opened, dict) else {})

    def _call(self, header: wire.Header, payload: Buffer = b"") -> tuple[object, bytes]:
        return self._channel.request(header, payload).wait(self._channel)

    # -- every backend ----------------------------------------------------------------------------

    def put(self, name: str, data: Data, *, overwrite: bool = False) -> None:
        check_name(name)
        channel = self._channel
        opened = channel.request({"op": "put_open", "name": name, "overwrite": overwrite})
        handle = opened.request_id  # the put is named by its opening request
        parts = [opened]
        try:
            for piece in _pieces(data):  # which may read this backend meanwhile (a copy)
                parts.append(channel.request({"op": "put_part", "handle": handle}, piece))
                while parts and parts[0].done:
                    parts.pop(0).wait(channel)
        except BaseException:
            with suppress(RemoteError):
                channel.request({"op": "put_abort", "handle": handle})
            raise
        end = channel.request({"op": "put_end", "handle": handle})
        for reply in parts:
            reply.wait(channel)
        end.wait(channel)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_name(name)
        check_range(offset, length)
        first = min(length, wire.PIECE) if length is not None else None
        replies = [self._get_piece(name, offset, first)]
        if length is not None:  # the rest in pieces, all in flight together
            replies += [
                self._get_piece(name, at, min(wire.PIECE, offset + length - at))
                for at in range(offset + wire.PIECE, offset + length, wire.PIECE)
            ]
        results = [reply.wait(self._channel) for reply in replies]
        size = results[0][0]
        data = b"".join(payload for _, payload in results)
        if length is None and isinstance(size, int) and offset + len(data) < size:  # past one piece
            data += self.get(name, offset + len(data), size - offset - len(data))
        return data

    def _get_piece(self, name: str, offset: int, length: int | None) -> Reply:
        return self._channel.request({"op": "get", "name": name, "offset": offset, "length": length})

    def stat(self, name: str) -> int:
        size, _ = self._call({"op": "stat", "name": check_name(name)})
        return _integer(size, self.where)

    def stat_many(self, names: Sequence[str]) -> dict[str, int | None]:
        for name in names:
            check_name(name)
        replies = [
            (batch, self._channel.request({"op": "stat_many", "names": batch}))
            for batch in (list(names[i : i + _STAT_BATCH]) for i in range(0, len(names), _STAT_BATCH))
        ]
        sizes: dict[str, int | None] = {}
        for batch, reply in replies:
            result, _ = reply.wait(self._channel)
            if not isinstance(result, list) or len(result) != len(batch):
                raise ProtocolError(self.where, "a stat_many reply of the wrong length")
            sizes.update(zip(batch, result, strict=True))
        return sizes

    def list(self, prefix: str = "") -> Iterator[str]:
        _, payload = self._call({"op": "list", "prefix": check_prefix(prefix)})
        return iter(payload.decode().split("\n") if payload else [])

    def delete(self, name: str) -> None:
        self._call({"op": "delete", "name": check_name(name)})

    def usage(self) -> int:
        used, _ = self._call({"op": "usage"})
        return _integer(used, self.where)

    def close(self) -> None:
        self._channel.close()

    # -- capabilities -----------------------------------------------------------------------------

    def open_append(self, name: str) -> AppendWriter:
        if not self.capabilities.append:
            return super().open_append(name)
        handle, _ = self._call({"op": "append_open", "name": check_name(name)})
        return RemoteAppendWriter(self._channel, _integer(handle, self.where))

    def punch(self, name: str, offset: int, length: int) -> None:
        if not self.capabilities.punch:
            return super().punch(name, offset, length)
        check_range(offset, length)
        self._call({"op": "punch", "name": check_name(name), "offset": offset, "length": length})
        return None

    def lock(self, name: str, *, exclusive: bool) -> AbstractContextManager[None]:
        if not self.capabilities.flock:
            return super().lock(name, exclusive=exclusive)
        return self._locked(check_name(name), exclusive)

    @contextmanager
    def _locked(self, name: str, exclusive: bool) -> Iterator[None]:
        """Held by the server for the session: it ends when the connection does."""
        handle, _ = self._call({"op": "lock", "name": name, "exclusive": exclusive})
        try:
            yield
        finally:
            with suppress(RemoteError):  # a lost connection has released it
                self._call({"op": "unlock", "handle": handle})

    def create_exclusive(self, name: str, data: Buffer) -> bool:
        if not self.capabilities.create_exclusive:
            return super().create_exclusive(name, data)
        created, _ = self._call({"op": "create_exclusive", "name": check_name(name)}, data)
        return bool(created)

    # -- maintenance run on the server (remote/maintenance.py) -------------------------------------

    def run(self, command: str, args: dict[str, Any], progress: Progress | None) -> dict[str, Any]:
        """Run gc, prune, verify or repair on the server (one of :attr:`runs`); its result."""
        return maintenance.run_on_server(self._channel, command, args, progress)


class RemoteAppendWriter(AppendWriter):
    """An object the server appends to; writes are buffered and sent without waiting. A
    failed write breaks the writer: later calls raise that failure again until aborted.

    One thread writes while another checkpoints (storage/appender.py): the buffer and the
    frames in flight are changed under a lock, and a checkpoint waits for its replies
    outside it, so writing goes on meanwhile."""

    def __init__(self, channel: Channel, handle: int) -> None:
        self._channel = channel
        self._handle = handle
        self.size = 0
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._in_flight: deque[Reply] = deque()
        self._broken: BaseException | None = None
        self._closed = False

    def write(self, data: Buffer) -> int:
        with self._lock:
            self._check_usable()
            offset = self.size
            self._buffer += data
            self.size += memoryview(data).nbytes
            if len(self._buffer) >= _APPEND_BUFFER:
                self._send_buffer(whole=False)
            return offset

    def checkpoint(self) -> None:
        self._finish("append_checkpoint")

    def seal(self) -> None:
        if self._closed and self._broken is None:
            return
        self._finish("append_seal")
        self._closed = True

    def abort(self) -> None:
        with self._lock:
            if self._closed and self._broken is None:
                return
            self._closed = True
            self._buffer.clear()
        with suppress(Exception):
            self._channel.request({"op": "append_abort", "handle": self._handle}).wait(self._channel)
        self._broken = None

    def _finish(self, op: str) -> None:
        """Send the buffer and ``op``, then wait for every frame sent before it."""
        with self._lock:
            self._check_usable()
            self._send_buffer(whole=True)
            try:
                reply = self._channel.request({"op": op, "handle": self._handle})
            except BaseException as exc:
                self._broken = self._broken or exc
                raise
            earlier, self._in_flight = self._in_flight, deque()
        for sent in (*earlier, reply):
            self._settle(sent)

    def _send_buffer(self, *, whole: bool) -> None:
        """Send the buffer in frames of _APPEND_BUFFER bytes (``whole``: the rest too), each
        once fewer than _APPEND_IN_FLIGHT are unanswered (under the lock)."""
        buffer, sent = self._buffer, 0
        try:
            while len(buffer) - sent >= _APPEND_BUFFER or (whole and sent < len(buffer)):
                frame = buffer[sent : sent + _APPEND_BUFFER]
                self._in_flight.append(
                    self._channel.request({"op": "append_write", "handle": self._handle}, frame)
                )
                sent += len(frame)
                self._drain(_APPEND_IN_FLIGHT)
        except BaseException as exc:
            self._broken = self._broken or exc
            raise
        finally:
            self._buffer = buffer[sent:]

    def _drain(self, keep: int) -> None:
        """Wait for the oldest writes until at most ``keep`` are in flight (and for those
        answered already): the first failure breaks the writer."""
        while self._in_flight and (len(self._in_flight) > keep or self._in_flight[0].done):
            self._settle(self._in_flight.popleft())

    def _settle(self, reply: Reply) -> None:
        try:
            reply.wait(self._channel)
        except BaseException as exc:
            self._broken = self._broken or exc
            raise

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise ValueError("write to a sealed or aborted object")


def _pieces(data: Data) -> Iterator[Buffer]:
    """The parts of ``data`` cut to at most ``wire.PIECE`` bytes each."""
    for part in parts_of(data):
        view = memoryview(part).cast("B")
        for at in range(0, len(view), wire.PIECE):
            yield view[at : at + wire.PIECE]


def _integer(value: object, where: str) -> int:
    if not isinstance(value, int):
        raise ProtocolError(where, f"an integer was expected, not {value!r}")
    return value
