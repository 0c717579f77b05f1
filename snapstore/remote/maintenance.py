"""gc, prune, verify and repair run on the server, next to the data (docs/PROTOCOL.md,
"run"): the ``run`` request names the command and its arguments; the server answers with
progress frames of that request, then one reply carrying what the command computed (the
document its ``--json`` prints). Both ends are here: :func:`handle_run` on the server (the
command itself is a :class:`Runner` that ``snap serve`` is given from above, since this
layer knows no repository), :func:`run_on_server` on the client.

Progress crosses as lists of events (``["start", total, label]``, ``["advance", n]``,
``["skip", n]``, ``["finish"]``); counts are summed and sent at most every
:data:`FLUSH_SECONDS`, and a frame (maybe empty) goes at least every
:data:`HEARTBEAT_SECONDS`, so that a long gc is never taken for a dead link. A client gone
midway (a write fails) stops the command at its next progress call, as a killed one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from snapstore.errors import ConnectionLostError, ProtocolError
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.remote.channel import Channel
from snapstore.remote.wire import Header

COMMANDS = ("gc", "prune", "verify", "repair")  # what a server with a runner runs
HEARTBEAT_SECONDS = 2.0
FLUSH_SECONDS = 0.25
WHERE = "the client"


@dataclass(frozen=True)
class Served:
    """The repository a session opened, as the run sees it."""

    path: Path
    append_only: bool  # snap serve --append-only: removals refused (exit 14)


class Runner(Protocol):
    def __call__(
        self, served: Served, command: str, args: dict[str, Any], progress: Progress
    ) -> dict[str, Any]: ...


# -- the server ------------------------------------------------------------------------------------


def handle_run(
    served: Served, runner: Runner | None, header: Header, send: Callable[[Header], None]
) -> dict[str, Any]:
    """Run the request's command on ``served`` (``send``: writes a frame to the client),
    forwarding its progress; the reply's result. Errors are the command's own."""
    command, args = header.get("command"), header.get("args")
    if runner is None or command not in COMMANDS:
        raise ProtocolError(WHERE, f"this server does not run {command!r}")
    if not isinstance(args, dict):
        raise ProtocolError(WHERE, "the arguments of a run are not a JSON object")
    forwarded = ForwardedProgress(send, int(header["id"]), forward=bool(header.get("progress")))
    try:
        return runner(served, str(command), args, forwarded)
    finally:
        forwarded.close()


class ForwardedProgress:
    """A run's progress, sent to the client as progress frames of its request (from any
    thread); a heartbeat thread sends what is pending at least every HEARTBEAT_SECONDS.
    ``forward`` False: only heartbeats are sent (the client shows no progress), but a client
    gone still stops the command at its next report."""

    def __init__(self, send: Callable[[Header], None], request_id: int, *, forward: bool = True) -> None:
        self._send = send
        self._id = request_id
        self._forward = forward
        self._lock = threading.Lock()
        self._events: list[list[Any]] = []
        self._sent = time.monotonic()
        self._gone: ConnectionLostError | None = None
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="snap-serve-progress")
        self._beat.start()

    def start(self, total: int, label: str) -> None:
        self._add(["start", total, label], now=True)

    def advance(self, n: int) -> None:
        self._add(["advance", n])

    def skip(self, n: int) -> None:
        self._add(["skip", n])

    def finish(self) -> None:
        self._add(["finish"], now=True)

    def close(self) -> None:
        """Stop the heartbeat and send what is pending (before the reply)."""
        self._stop.set()
        self._beat.join()
        self._flush(force=True)

    def _add(self, event: list[Any], *, now: bool = False) -> None:
        with self._lock:
            if self._gone is not None:
                raise self._gone
            if not self._forward:
                return
            last = self._events[-1] if self._events else None
            if last is not None and len(event) == 2 and last[0] == event[0]:
                last[1] += event[1]  # counts are summed between frames
            else:
                self._events.append(event)
        self._flush(force=now)

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(FLUSH_SECONDS, HEARTBEAT_SECONDS)):
            self._flush(force=time.monotonic() - self._sent >= HEARTBEAT_SECONDS)

    def _flush(self, *, force: bool) -> None:
        with self._lock:
            if self._gone is not None or not (force or (self._events and self._due())):
                return
            events, self._events = self._events, []
            try:
                self._send({"id": self._id, "progress": events})
            except OSError as exc:  # the client is gone: the command stops at its next report
                self._gone = ConnectionLostError(WHERE, f"sending progress failed ({exc})")
            self._sent = time.monotonic()

    def _due(self) -> bool:
        return time.monotonic() - self._sent >= FLUSH_SECONDS


# -- the client ------------------------------------------------------------------------------------


def run_on_server(
    channel: Channel, command: str, args: dict[str, Any], progress: Progress | None
) -> dict[str, Any]:
    """Run ``command`` on the server; its result. ``progress``: fed from the progress
    frames (None: the server sends none but its heartbeats)."""
    reply = channel.request(
        {"op": "run", "command": command, "args": args, "progress": progress is not None},
        on_progress=lambda events: _replay(events, progress or NULL_PROGRESS),
    )
    result, _ = reply.wait(channel)
    if not isinstance(result, dict):
        raise ProtocolError(channel.where, f"a run of {command} answered {type(result).__name__}")
    return result


def _replay(events: object, progress: Progress) -> None:
    if not isinstance(events, list):
        return
    for event in events:
        match event:
            case ["start", int(total), str(label)]:
                progress.start(total, label)
            case ["advance", int(n)]:
                progress.advance(n)
            case ["skip", int(n)]:
                progress.skip(n)
            case ["finish"]:
                progress.finish()
