"""The terminal progress bar (rich), for commit, checkout and verify on a terminal."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    DownloadColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from snapstore.units import format_size


class BinarySpeedColumn(ProgressColumn):
    """The speed in the sizes' own binary units (MiB/s beside GiB), not rich's decimal MB/s."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{format_size(speed)}/s", style="progress.data.speed")


class BarProgress:
    """A progress bar with MiB/s and ETA on stderr."""

    def __init__(self) -> None:
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            BinarySpeedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self._task: TaskID | None = None

    def start(self, total: int, label: str) -> None:
        self._bar.start()
        self._task = self._bar.add_task(label, total=total)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._bar.advance(self._task, n)

    def finish(self) -> None:
        self._bar.stop()
