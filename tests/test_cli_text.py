"""User-controlled strings on a terminal (issue 18, point 9): names and messages with escape
sequences, CR or newlines are printed escaped (one line per snapshot, no colour leaks), long
names are cut with an ellipsis, and times are local unless --utc."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from snapstore.cli.text import ELLIPSIS, cut, safe, when
from tests.conftest import run_snap

EVIL = "e\x1b[31mvil\rname\nthat-is-longer-than-the-column"


@given(st.text())
def test_safe_leaves_no_control_character(text: str) -> None:
    shown = safe(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0x202A <= ord(c) <= 0x202E for c in shown)
    printable = "".join(c for c in text if c.isprintable() and c != "\\")
    assert safe(printable) == printable


@given(st.text(), st.integers(1, 40))
def test_cut_fits_and_says_so(text: str, width: int) -> None:
    shown = cut(text, width)
    assert len(shown) <= width
    assert (shown != safe(text)) == (len(safe(text)) > width)
    if shown != safe(text):
        assert shown.endswith(ELLIPSIS) and safe(text).startswith(shown[:-1])


def test_when_utc_and_local() -> None:
    moment = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
    assert when(moment, utc=True) == "2026-12-03 12:00:00"
    assert when(moment, utc=False) == f"{moment.astimezone():%Y-%m-%d %H:%M:%S}"


def test_log_escapes_and_cuts(tmp_path: Path, repo_path: Path) -> None:
    src = tmp_path / "vm.img"
    src.write_bytes(os.urandom(4096))
    done = run_snap(
        "commit", str(src), "--name", EVIL, "-m", "one\rtwo\x1b]0;title\x07", "-r", str(repo_path)
    )
    assert done.returncode == 0, done.stderr
    assert b"\x1b" not in done.stderr and b"\r" not in done.stderr
    log = run_snap("log", "-r", str(repo_path))
    text = log.stdout.decode()
    lines = text.splitlines()
    assert len(lines) == 2  # the header and one line for the snapshot
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "e\\e[31mvil\\rname\\nt" + ELLIPSIS in lines[1]
    assert "one\\rtwo\\e]0;title\\x07" in lines[1]
    assert "CREATED (UTC)" in run_snap("--utc", "log", "-r", str(repo_path)).stdout.decode()
    assert "(UTC)" not in lines[0]
