"""The rate and time left that progress shows (pure: the clock is passed in).

The rate is a moving average over time of the bytes *worked* (read, chunked, written): bytes
done without work (a hole a commit does not read, a zero run a sparse checkout leaves as a
hole) count as done, so the bar reaches its end, but not as speed, so that a 10 GiB hole
does not make the next minute's ETA a second. The average weighs each interval by its length
(time constant ``tau``), so the ETA moves smoothly instead of following every burst.
"""

from __future__ import annotations

import math

TAU = 10.0  # seconds: how long the average remembers
SAMPLE_EVERY = 0.25  # seconds: shorter intervals are gathered into one sample
FIRST_AFTER = 0.5  # seconds of work before a first rate (an ETA from 10 ms is noise)


class RateMeter:
    """The smoothed rate of work, in bytes per second, from cumulative counts."""

    def __init__(self, now: float, *, tau: float = TAU) -> None:
        self.tau = tau
        self.started = now
        self.rate: float | None = None  # bytes/s, None until FIRST_AFTER seconds of work
        self.done = 0  # bytes worked and skipped
        self.worked = 0
        self._last = now  # time and bytes worked of the last sample
        self._last_worked = 0

    def add(self, now: float, worked: int = 0, skipped: int = 0) -> None:
        """``worked`` more bytes were worked and ``skipped`` more were done without work."""
        self.worked += worked
        self.done += worked + skipped
        span = now - self._last
        if span < SAMPLE_EVERY or now - self.started < FIRST_AFTER:
            return
        latest = (self.worked - self._last_worked) / span
        if self.rate is None:
            self.rate = self.worked / (now - self.started)
        else:
            weight = 1.0 - math.exp(-span / self.tau)
            self.rate += weight * (latest - self.rate)
        self._last, self._last_worked = now, self.worked

    def eta(self, total: int) -> float | None:
        """Seconds left to reach ``total`` bytes done at the smoothed rate (None: not known yet)."""
        if not self.rate:
            return None
        return max(0, total - self.done) / self.rate
