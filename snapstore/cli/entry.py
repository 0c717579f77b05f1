"""The ``snap`` command's entry point: answers ``--version`` before importing anything else
(start-up is most of a small command's time), then runs the CLI (snapstore.cli.app)."""

from __future__ import annotations

import sys

VERSION_FLAGS = ("--version", "-V")


def run() -> None:
    if len(sys.argv) == 2 and sys.argv[1] in VERSION_FLAGS:
        from snapstore import __version__

        sys.stdout.write(f"snap {__version__}\n")
        sys.stdout.flush()
        raise SystemExit(0)
    from snapstore.cli.app import run as run_cli

    run_cli()
