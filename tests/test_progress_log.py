"""Progress without a terminal (issue 18, point 12): ``--progress=log`` writes a one-line
record on stderr from the start, then every interval (30 s; $SNAP_PROGRESS_INTERVAL), and
one at the end, in binary units throughout."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from snapstore.cli.progresslog import LogProgress, duration, record_line
from tests.conftest import run_snap

UNIT = r"[\d.]+ (B|KiB|MiB|GiB|TiB|PiB)"
LINE = re.compile(
    rf"^snap: progress: (commit|checkout) \S+: {UNIT} of {UNIT} \(\d+%\)"
    rf"(, {UNIT}/s)?(, ETA \S+|, done in \S+)?$"
)


def test_commit_and_checkout_log_records(tmp_path: Path, repo_path: Path) -> None:
    src = tmp_path / "vm.img"
    src.write_bytes(os.urandom(3 << 20))
    env = {"SNAP_PROGRESS_INTERVAL": "0"}
    done = run_snap("--progress", "log", "commit", str(src), "-r", str(repo_path), env=env)
    assert done.returncode == 0, done.stderr
    records = [line for line in done.stderr.decode().splitlines() if line.startswith("snap: progress:")]
    assert len(records) >= 3  # the start, at least one on the way, the end
    assert all(LINE.match(line) for line in records), records
    assert " 0 B of 3.0 MiB (0%)" in records[0]
    assert "3.0 MiB of 3.0 MiB (100%)" in records[-1] and "done in" in records[-1]
    out = run_snap("--progress=log", "checkout", "latest", "-o", str(tmp_path / "o"), "-r", str(repo_path))
    assert out.returncode == 0, out.stderr
    lines = out.stderr.decode().splitlines()
    assert LINE.match(lines[0]) and "done in" in lines[-2]  # then the summary line
    quiet = run_snap("commit", str(src), "-r", str(repo_path))  # no terminal, no --progress
    assert b"progress" not in quiet.stderr


def test_no_record_before_the_interval() -> None:
    sink = io.StringIO()
    p = LogProgress(interval=3600, stream=sink)
    p.start(100, "commit x")
    for _ in range(100):
        p.advance(1)
    p.finish()
    lines = sink.getvalue().splitlines()
    assert len(lines) == 2 and "0 B of 100 B (0%)" in lines[0] and "done in" in lines[1]


@given(st.integers(0, 1 << 50), st.integers(1, 1 << 50), st.floats(1, 1e10))
def test_record_line_units(done: int, total: int, rate: float) -> None:
    assert LINE.match(record_line("commit vm.img", min(done, total), total, rate, 1.0, False))


def test_duration() -> None:
    assert [duration(s) for s in (0, 59.4, 61, 3599, 3600, 90061)] == [
        "0s",
        "59s",
        "1m01s",
        "59m59s",
        "1h00m",
        "25h01m",
    ]


def test_bar_speed_in_binary_units() -> None:
    from rich.progress import Progress

    from snapstore.cli.progressbar import BinarySpeedColumn

    with Progress(BinarySpeedColumn(), disable=True) as bar:
        task_id = bar.add_task("x", total=100)
        task = bar.tasks[0]
        assert str(BinarySpeedColumn().render(task)) == "?"
        assert task_id is not None
    assert "MiB/s" in str(BinarySpeedColumn().render(_Speed(12345678.0)))  # type: ignore[arg-type]


class _Speed:
    finished_speed = None

    def __init__(self, speed: float) -> None:
        self.speed = speed
