"""The progress protocol: operations report, the CLI draws.

``advance(n)``: n more bytes done by working on them (read, chunked, written); ``skip(n)``: n
more bytes done at no cost (a hole not read, a zero run left as a hole): they move the bar
but not the speed, so the time left stays right."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, total: int, label: str) -> None: ...

    def advance(self, n: int) -> None: ...

    def skip(self, n: int) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    def start(self, total: int, label: str) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def skip(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


NULL_PROGRESS: Progress = NullProgress()
