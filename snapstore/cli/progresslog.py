"""Progress as a periodic one-line record on stderr (``--progress=log``): for a commit or
checkout running for hours without a terminal (cron, systemd, CI logs)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from snapstore.cli.eta import RateMeter
from snapstore.units import format_size

DEFAULT_INTERVAL = 30.0  # seconds between records


class LogProgress:
    """A record every ``interval`` seconds (checked as work advances: one clock read per
    call), and one at the end: done and total in binary units, the smoothed rate of work in
    MiB/s and the ETA it gives (snapstore.cli.eta: holes count as done, not as speed)."""

    def __init__(self, interval: float = DEFAULT_INTERVAL, stream: TextIO | None = None) -> None:
        self.interval = interval
        self.stream = stream or sys.stderr
        self.total = 0
        self.label = ""
        self.meter = RateMeter(time.monotonic())
        self._next = 0.0

    @property
    def done(self) -> int:
        return self.meter.done

    @property
    def rate(self) -> float | None:
        return self.meter.rate

    def start(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        now = time.monotonic()
        self.meter = RateMeter(now)
        self._next = now + self.interval
        self._record(now)  # shown from the start

    def advance(self, n: int) -> None:
        self._add(n, 0)

    def skip(self, n: int) -> None:
        self._add(0, n)

    def _add(self, worked: int, skipped: int) -> None:
        now = time.monotonic()
        self.meter.add(now, worked, skipped)
        if now >= self._next:
            self._record(now)
            self._next = now + self.interval

    def finish(self) -> None:
        now = time.monotonic()
        self.stream.write(
            record_line(self.label, self.done, self.total, self._average(now), now - self.meter.started, True)
            + "\n"
        )
        self.stream.flush()

    def _average(self, now: float) -> float:
        return self.meter.worked / max(now - self.meter.started, 1e-9)

    def _record(self, now: float) -> None:
        line = record_line(self.label, self.done, self.total, self.rate, now - self.meter.started, False)
        eta = self.meter.eta(self.total)
        self.stream.write(line + (f", ETA {duration(eta)}" if eta is not None else "") + "\n")
        self.stream.flush()


def record_line(label: str, done: int, total: int, rate: float | None, elapsed: float, final: bool) -> str:
    """``snap: progress: commit vm.img: 1.2 GiB of 4.0 GiB (30%), 45.3 MiB/s`` (the caller adds
    ``, ETA 1m10s``), or at the end ``..., done in 1m30s``."""
    share = f" ({100 * done // total}%)" if total else ""
    text = f"snap: progress: {label}: {format_size(done)} of {format_size(total)}{share}"
    if rate is not None:
        text += f", {format_size(rate)}/s"
    if final:
        return text + f", done in {duration(elapsed)}"
    return text


def duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
