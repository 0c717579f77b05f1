"""What every command shares: options, opening the repository, output, progress."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress

from snapstore.errors import RepositoryNotFoundError
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.repo import Mode, Repository, find_root

RepoOption = Annotated[
    Path | None,
    typer.Option(
        "--repo",
        "-r",
        envvar="SNAP_REPO",
        show_envvar=True,
        help="Repository path (default: nearest .snapstore/ up from here).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def locate(repo: Path | None) -> Path | None:
    if repo is not None:
        return repo
    return find_root(Path.cwd())


def open_repo(repo: Path | None, mode: Mode = Mode.READ) -> Repository:
    root = locate(repo)
    if root is None:
        raise RepositoryNotFoundError(None)
    return Repository.open(root, mode)


def info(message: str) -> None:
    """A human line on stderr (stdout is for ids and JSON)."""
    typer.echo(message, err=True)


def out(message: str) -> None:
    typer.echo(message)


def emit_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, sort_keys=False, default=str))


class BarProgress:
    """A progress bar with MB/s and ETA on stderr."""

    def __init__(self) -> None:
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
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


@contextmanager
def progress_for(json_output: bool) -> Iterator[Progress]:
    """A bar when stderr is a terminal, nothing otherwise."""
    if sys.stderr.isatty() and not json_output:
        yield BarProgress()
    else:
        yield NULL_PROGRESS
