"""Progress as a periodic one-line record on stderr (``--progress=log``): for a commit or
checkout running for hours without a terminal (cron, systemd, CI logs)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from snapstore.units import format_size

DEFAULT_INTERVAL = 30.0  # seconds between records
_SMOOTHING = 0.3  # weight of the newest interval's rate in the smoothed rate


class LogProgress:
    """A record every ``interval`` seconds (checked as work advances: one clock read per
    call), and one at the end: done and total in binary units, the smoothed rate in MiB/s
    and the ETA it gives."""

    def __init__(self, interval: float = DEFAULT_INTERVAL, stream: TextIO | None = None) -> None:
        self.interval = interval
        self.stream = stream or sys.stderr
        self.total = 0
        self.done = 0
        self.label = ""
        self.rate: float | None = None  # bytes/s, smoothed
        self._started = self._last = self._next = 0.0
        self._last_done = 0

    def start(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self._started = self._last = time.monotonic()
        self._next = self._started + self.interval
        self._last_done = 0
        self.rate = None
        self._record(self._started)  # shown from the start

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now >= self._next:
            self._sample(now)
            self._record(now)
            self._next = now + self.interval

    def finish(self) -> None:
        now = time.monotonic()
        elapsed = max(now - self._started, 1e-9)
        self.rate = self.done / elapsed
        self._record(now, final=True)

    def _sample(self, now: float) -> None:
        span = now - self._last
        if span > 0:
            latest = (self.done - self._last_done) / span
            self.rate = latest if self.rate is None else _SMOOTHING * latest + (1 - _SMOOTHING) * self.rate
        self._last, self._last_done = now, self.done

    def _record(self, now: float, *, final: bool = False) -> None:
        self.stream.write(
            record_line(self.label, self.done, self.total, self.rate, now - self._started, final) + "\n"
        )
        self.stream.flush()


def record_line(label: str, done: int, total: int, rate: float | None, elapsed: float, final: bool) -> str:
    """``snap: progress: commit vm.img: 1.2 GiB of 4.0 GiB (30%), 45.3 MiB/s, ETA 1m10s``."""
    share = f" ({100 * done // total}%)" if total else ""
    text = f"snap: progress: {label}: {format_size(done)} of {format_size(total)}{share}"
    if rate is not None:
        text += f", {format_size(rate)}/s"
    if final:
        return text + f", done in {duration(elapsed)}"
    if rate:
        text += f", ETA {duration(max(0, total - done) / rate)}"
    return text


def duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
