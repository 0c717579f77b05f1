"""The terminal progress bar (rich), for commit, checkout and verify on a terminal."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from snapstore.cli.eta import RateMeter
from snapstore.cli.progresslog import duration
from snapstore.units import format_size


class BinarySpeedColumn(ProgressColumn):
    """The speed in the sizes' own binary units (MiB/s beside GiB), not rich's decimal MB/s:
    the smoothed rate of ``meter`` when given, else rich's own estimate."""

    def __init__(self, meter: RateMeter | None = None) -> None:
        super().__init__()
        self.meter = meter

    def render(self, task: Task) -> Text:
        speed = self.meter.rate if self.meter is not None else task.finished_speed or task.speed
        return Text("?" if speed is None else f"{format_size(speed)}/s", style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """Time left at the smoothed rate of work (holes are not work: see snapstore.cli.eta)."""

    def __init__(self, meter: RateMeter) -> None:
        super().__init__()
        self.meter = meter

    def render(self, task: Task) -> Text:
        left = None if task.total is None else self.meter.eta(int(task.total))
        return Text("ETA ?" if left is None else f"ETA {duration(left)}", style="progress.remaining")


class BarProgress:
    """A progress bar on stderr, drawn at once (a pulse until the operation says its size),
    with sizes in binary units, the speed in MiB/s and a smoothed ETA."""

    def __init__(self, label: str = "starting") -> None:
        self.meter = RateMeter(time.monotonic())
        self._speed = BinarySpeedColumn(self.meter)
        self._eta = EtaColumn(self.meter)
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            self._speed,
            self._eta,
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()  # drawn now, not when the operation has opened everything
        self._task: TaskID = self._bar.add_task(label, total=None)
        self._bar.refresh()

    def start(self, total: int, label: str) -> None:
        self.meter = self._speed.meter = self._eta.meter = RateMeter(time.monotonic())
        self._bar.update(self._task, total=total, completed=0, description=label)
        self._bar.refresh()

    def advance(self, n: int) -> None:
        self.meter.add(time.monotonic(), worked=n)
        self._bar.update(self._task, completed=self.meter.done)

    def skip(self, n: int) -> None:
        self.meter.add(time.monotonic(), skipped=n)
        self._bar.update(self._task, completed=self.meter.done)

    def finish(self) -> None:
        self._bar.stop()
