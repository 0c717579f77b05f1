"""SIGINT and SIGTERM as an exception, so that a command stops cleanly: the operation's own
clean-up runs (a checkout removes its temp output, a commit keeps what it stored and drops
its unfinished manifest), then the CLI prints one line and exits 128 + the signal number
(130 for Ctrl-C, 143 for SIGTERM)."""

from __future__ import annotations

import signal
from types import FrameType

NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class Signalled(BaseException):
    """Raised in the main thread when SIGINT or SIGTERM arrives (a BaseException, so that
    no ``except Exception`` swallows it, and not KeyboardInterrupt, which typer turns into a
    silent exit)."""

    def __init__(self, signum: int) -> None:
        super().__init__(NAMES.get(signal.Signals(signum), f"signal {signum}"))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def line(self) -> str:
        return f"snap: {self.args[0]}"


def install() -> None:
    """Turn the first SIGINT or SIGTERM into :class:`Signalled`; a second one, while the
    clean-up runs, acts as the default (kills at once)."""
    for signum in NAMES:
        signal.signal(signum, _raise)


def _raise(signum: int, frame: FrameType | None) -> None:
    for other in NAMES:
        signal.signal(other, signal.SIG_DFL)
    raise Signalled(signum)
