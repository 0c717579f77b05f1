"""The client's end of a connection to ``snap serve --stdio``: a child process (ssh) whose
stdin and stdout carry frames (docs/PROTOCOL.md). Any thread may send a request; one reader
thread matches replies to requests by id, so many requests are in flight at once (the link
is kept full; nobody waits a round trip per request). A reply not come within ``timeout``
seconds, the child exiting or the stream breaking fails every request, then and after, with
ConnectionLostError (exit 13)."""

from __future__ import annotations

import io
import itertools
import os
import select
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from snapstore.errors import ConnectionLostError, ProtocolError, RemoteError
from snapstore.model import Buffer
from snapstore.remote import wire
from snapstore.remote.wire import Header

_STDERR_LINES = 20


class Reply:
    """A request in flight: :meth:`wait` returns its result and payload, or raises."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._header: Header | None = None
        self._payload = b""
        self._failure: BaseException | None = None
        self.request_id = 0
        # a request answered by progress frames before its reply (docs/PROTOCOL.md, "run"):
        # each one is passed here, and counts as the server being alive
        self.on_progress: Callable[[Any], None] | None = None
        self.heard = time.monotonic()

    def settle(self, header: Header | None, payload: bytes, failure: BaseException | None) -> None:
        self._header, self._payload, self._failure = header, payload, failure
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, channel: Channel) -> tuple[Any, bytes]:
        self.heard = time.monotonic()  # the timeout counts from here, or from the last progress
        while not self._done.wait(max(0.0, self.heard + channel.timeout - time.monotonic())):
            if time.monotonic() - self.heard >= channel.timeout:  # (a progress frame moves it on)
                channel.fail(f"no reply for {channel.timeout:g} s")
                self._done.wait()
        if self._failure is not None:
            raise self._failure
        assert self._header is not None
        if "error" in self._header:
            raise wire.decode_error(self._header["error"], channel.where)
        return self._header.get("ok"), self._payload


class Channel:
    def __init__(self, argv: list[str], where: str, timeout: float) -> None:
        self.where = where
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, Reply] = {}
        self._lock = threading.Lock()  # _pending, _failure
        self._send_lock = threading.Lock()  # one frame (or one streamed put) at a time
        self._failure: RemoteError | None = None
        self._stderr: deque[str] = deque(maxlen=_STDERR_LINES)
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                preexec_fn=_ignore_interrupts,
            )
        except OSError as exc:
            raise ConnectionLostError(
                where, f"cannot run {argv[0]}: {exc.strerror or exc}", connecting=True
            ) from None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._out = self._proc.stdin.fileno()
        os.set_blocking(self._out, False)  # (our end only): a send waits at most ``timeout``
        self._in = io.BufferedReader(io.FileIO(os.dup(self._proc.stdout.fileno()), "rb"), 1 << 20)
        self._proc.stdout.close()
        self._stderr_reader = threading.Thread(
            target=self._read_stderr, daemon=True, name="snap-remote-stderr"
        )
        self._stderr_reader.start()

    # -- starting ----------------------------------------------------------------------------------

    def handshake(self) -> Header:
        """Read the server's magic and greeting (ProtocolError when what answers is not a
        snap server), then start the reader thread."""
        magic = self._in.read(len(wire.MAGIC))
        if magic != wire.MAGIC:
            if not magic:
                raise self._lost("no snap server answered", connecting=True)
            junk = (magic + self._in.peek(200)[:200]).split(b"\n")[0].decode(errors="replace")
            raise ProtocolError(
                self.where,
                f"the remote command is not 'snap serve' (it said {junk!r})",
                hint="set --remote-snap or SNAP_REMOTE_SNAP to snap's path on the server",
            )
        try:
            frame = wire.read_frame(self._in, self.where)
        except ProtocolError:
            raise self._lost("the server's greeting was cut short", connecting=True) from None
        if frame is None:
            raise self._lost("the server ended before its greeting", connecting=True)
        threading.Thread(target=self._read_replies, daemon=True, name="snap-remote-reader").start()
        return frame[0]

    # -- requests ----------------------------------------------------------------------------------

    def request(
        self, header: Header, payload: Buffer = b"", on_progress: Callable[[Any], None] | None = None
    ) -> Reply:
        """Send one request (``header`` without its id) and return its reply to wait for
        (``on_progress``: called, in the reader thread, with each progress frame's value)."""
        with self._send_lock:
            reply, request_id = self._register()
            reply.on_progress = on_progress
            self._send({**header, "id": request_id}, payload)
        return reply

    def _register(self) -> tuple[Reply, int]:
        reply = Reply()
        with self._lock:
            if self._failure is not None:
                raise self._failure
            request_id = next(self._ids)
            self._pending[request_id] = reply
        reply.request_id = request_id
        return reply, request_id

    def _send(self, header: Header, payload: Buffer) -> None:
        self._write(wire.encode_frame(header, len(payload)))
        if len(payload):
            self._write(payload)

    def _write(self, data: Buffer) -> None:
        """Write all of ``data``; a link that takes none of it for ``timeout`` seconds (ssh
        stopped forwarding: a dead link, a stopped server) fails the channel."""
        view = memoryview(data).cast("B")
        try:
            while view:
                try:
                    written = os.write(self._out, view)
                except BlockingIOError:
                    if not select.select([], [self._out], [], self.timeout)[1]:
                        raise self.fail(f"no progress sending for {self.timeout:g} s") from None
                    continue
                view = view[written:]
        except OSError as exc:
            raise self.fail(f"sending failed ({exc.strerror or exc})") from None

    # -- replies -----------------------------------------------------------------------------------

    def _read_replies(self) -> None:
        try:
            while True:
                frame = wire.read_frame(self._in, self.where)
                if frame is None:
                    self.fail("the server closed the connection")
                    return
                header, payload = frame
                if "progress" in header:
                    if not self._progressed(header):
                        self.fail(f"a progress frame for request {header.get('id')!r}, which takes none")
                        return
                    continue
                with self._lock:
                    reply = self._pending.pop(int(header.get("id", -1)), None)
                if reply is None:
                    self.fail(f"a reply to no request ({header.get('id')!r})")
                    return
                reply.settle(header, payload, None)
        except (ProtocolError, OSError, ValueError) as exc:
            self.fail(str(exc))

    def _progressed(self, header: Header) -> bool:
        """A progress frame of a request that takes them: passed on (never fails the reader)."""
        with self._lock:
            reply = self._pending.get(int(header.get("id", -1)))
        if reply is None or reply.on_progress is None:
            return False
        reply.heard = time.monotonic()
        with suppress(Exception):
            reply.on_progress(header["progress"])
        return True

    def fail(self, reason: str) -> RemoteError:
        """Fail every request in flight and every later one; stop the child."""
        lost = self._lost(reason) if self._failure is None else None  # (waits for ssh's status)
        with self._lock:
            if self._failure is None:
                self._failure = lost or self._lost(reason)
            failure = self._failure
            pending, self._pending = self._pending, {}
        for reply in pending.values():
            reply.settle(None, b"", failure)
        self._stop()
        return failure

    def _lost(self, reason: str, *, connecting: bool = False) -> RemoteError:
        """ConnectionLostError naming what ssh said last on stderr and its exit status."""
        with suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=0.5)
            self._stderr_reader.join(timeout=1.0)  # ssh has exited: its last words are in
        said = next((line for line in reversed(self._stderr) if line.strip()), "")
        status = self._proc.returncode
        detail = f"; ssh exited with status {status}" if status not in (None, 0) else ""
        return ConnectionLostError(
            self.where, f"{reason}{detail}" + (f" ({said})" if said else ""), connecting=connecting
        )

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line.decode(errors="replace").rstrip())

    # -- closing -----------------------------------------------------------------------------------

    def close(self) -> None:
        """End the session: close the server's stdin (it ends, releasing what it holds) and
        wait for ssh to exit."""
        with self._lock:
            if self._failure is None:
                self._failure = ConnectionLostError(self.where, "the connection was closed")
        with suppress(OSError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=max(self.timeout, 1.0))
        except subprocess.TimeoutExpired:
            self._stop()
        with suppress(OSError):
            self._in.close()

    def _stop(self) -> None:
        if self._proc.poll() is None:
            with suppress(OSError):
                self._proc.kill()


def _ignore_interrupts() -> None:
    """In ssh, before it starts: Ctrl-C on the terminal is snap's to handle (it ends the
    session in order), not ssh's to die of (ssh keeps a signal it finds ignored ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
