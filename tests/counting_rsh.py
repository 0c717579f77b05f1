"""A SNAP_RSH wrapper for the remote tests: ``counting_rsh.py COUNTS RSH ARGS...`` runs ``RSH
ARGS...`` (ssh) with its stdin and stdout passed through, and writes to COUNTS the bytes sent
to it and received from it (``SENT RECEIVED``): what crossed the wire, before ssh's own
framing and encryption."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path


def _copy(src: int, dst: int, counts: list[int], slot: int, close: bool) -> None:
    while data := os.read(src, 1 << 20):
        counts[slot] += len(data)
        view = memoryview(data)
        while view:
            view = view[os.write(dst, view) :]
    if close:
        os.close(dst)


if __name__ == "__main__":
    counts_file, argv = Path(sys.argv[1]), sys.argv[2:]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    counts = [0, 0]
    back = threading.Thread(target=_copy, args=(proc.stdout.fileno(), 1, counts, 1, False))
    back.start()
    _copy(0, proc.stdin.fileno(), counts, 0, True)
    status = proc.wait()
    back.join()
    counts_file.write_text(f"{counts[0]} {counts[1]}\n")
    sys.exit(status)
