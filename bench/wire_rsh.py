"""The remote benchmark's ssh wrapper: ``wire_rsh.py LOG [--rate BYTES_PER_S] SSH ARGS...``
runs ``SSH ARGS...`` with its stdin and stdout relayed, and when ssh exits appends one line
``SENT RECEIVED`` to LOG: the bytes the client wrote to ssh and read from it, i.e. what
crossed the wire before ssh's framing and encryption. One line per connection, so a command
that opens several is counted whole. With ``--rate``, each direction is held to that many
bytes a second (a slower link than loopback). Used alike as SNAP_RSH, BORG_RSH and restic's
``sftp.command`` (bench/remote.py), so every tool's bytes are counted the same way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BLOCK = 1 << 18


class Relay:
    def __init__(self, rate: float | None) -> None:
        self.counts = [0, 0]  # sent to ssh, received from it
        self._rate = rate

    def copy(self, src: int, dst: int, slot: int, close: bool) -> None:
        started = time.monotonic()
        try:
            while data := os.read(src, BLOCK):
                view = memoryview(data)
                while view:
                    view = view[os.write(dst, view) :]
                self.counts[slot] += len(data)
                if self._rate:
                    ahead = self.counts[slot] / self._rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass  # the other side went away: the counts so far stand
        if close:
            os.close(dst)


def main(args: list[str]) -> int:
    log = Path(args.pop(0))
    rate = None
    if args[0] == "--rate":
        rate = float(args[1])
        args = args[2:]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    relay = Relay(rate)
    back = threading.Thread(target=relay.copy, args=(proc.stdout.fileno(), 1, 1, False))
    forth = threading.Thread(target=relay.copy, args=(0, proc.stdin.fileno(), 0, True), daemon=True)
    back.start()
    forth.start()
    status = proc.wait()
    back.join()
    forth.join(timeout=1)  # a client still writing to a dead ssh is not waited for
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{relay.counts[0]} {relay.counts[1]}\n".encode())
    finally:
        os.close(fd)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
