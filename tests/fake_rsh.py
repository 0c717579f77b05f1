"""A stand-in for ssh in tests: ``fake_rsh.py [OPTIONS] -- HOST COMMAND`` runs COMMAND here
with ``sh -c`` (the host and options ignored), as ssh would run it on HOST."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    args = sys.argv[1:]
    command = args[args.index("--") + 2]
    os.execvp("sh", ["sh", "-c", command])
