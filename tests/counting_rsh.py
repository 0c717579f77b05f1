"""A SNAP_RSH wrapper for the remote tests: ``counting_rsh.py COUNTS [--kill-after N] RSH
ARGS...`` runs ``RSH ARGS...`` (ssh) with its stdin and stdout passed through, and writes to
COUNTS the bytes sent to it and received from it (``SENT RECEIVED``): what crossed the wire,
before ssh's own framing and encryption. With ``--kill-after N``, once N bytes have crossed
(both ways together) it kills ssh and itself with SIGKILL: the link drops there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path


class Wire:
    def __init__(self, counts_file: Path, kill_after: int | None, proc: subprocess.Popen[bytes]) -> None:
        self.counts = [0, 0]
        self._file = counts_file
        self._kill_after = kill_after
        self._proc = proc
        self._lock = threading.Lock()

    def copy(self, src: int, dst: int, slot: int, close: bool) -> None:
        while data := os.read(src, 1 << 16):
            with self._lock:
                self.counts[slot] += len(data)
                if self._kill_after is not None and sum(self.counts) >= self._kill_after:
                    self.save()
                    self._proc.kill()
                    os.kill(os.getpid(), signal.SIGKILL)
            view = memoryview(data)
            while view:
                view = view[os.write(dst, view) :]
        if close:
            os.close(dst)

    def save(self) -> None:
        self._file.write_text(f"{self.counts[0]} {self.counts[1]}\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    counts_file = Path(args.pop(0))
    kill_after = int(args[1]) if args[0] == "--kill-after" else None
    argv = args[2:] if kill_after is not None else args
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    wire = Wire(counts_file, kill_after, proc)
    back = threading.Thread(target=wire.copy, args=(proc.stdout.fileno(), 1, 1, False))
    back.start()
    wire.copy(0, proc.stdin.fileno(), 0, True)
    status = proc.wait()
    back.join()
    wire.save()
    sys.exit(status)
