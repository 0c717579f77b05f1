"""Progress that can be trusted (issue 18, point 12): drawn at once, a rate that is a moving
average of the work done (so the ETA does not jump), holes counted as done but not as speed,
and speed in the binary units of the sizes. The pure rate logic (snapstore.cli.eta) is
tested with a clock passed in; the bar through a real terminal (a pty)."""

from __future__ import annotations

import itertools
import math
import os
import pty
import select
import subprocess
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from snapstore.cli.eta import FIRST_AFTER, TAU, RateMeter
from tests.conftest import SNAP

MIB = 1 << 20
# Intervals of work: (seconds, bytes per second).
STEPS = st.lists(st.tuples(st.floats(0.01, 5.0), st.floats(1e3, 1e9)), min_size=1, max_size=60)


def feed(meter: RateMeter, steps: list[tuple[float, float]], now: float = 0.0) -> float:
    for span, rate in steps:
        now += span
        meter.add(now, worked=round(span * rate))
    return now


@given(STEPS)
def test_rate_is_an_average_of_the_rates_seen(steps: list[tuple[float, float]]) -> None:
    meter = RateMeter(0.0)
    feed(meter, steps)
    if meter.rate is not None:
        lowest = min(r for _, r in steps)
        highest = max(r for _, r in steps)
        assert lowest * 0.999 - 1 <= meter.rate <= highest * 1.001 + 1


@given(STEPS, st.lists(st.integers(0, 1 << 40), min_size=1, max_size=60))
def test_skipped_bytes_are_done_but_not_speed(steps: list[tuple[float, float]], holes: list[int]) -> None:
    plain, holey = RateMeter(0.0), RateMeter(0.0)
    now = 0.0
    for i, (span, rate) in enumerate(steps):
        now += span
        plain.add(now, worked=round(span * rate))
        holey.add(now, worked=round(span * rate), skipped=holes[i % len(holes)])
    assert plain.rate == holey.rate
    assert holey.done == plain.done + sum(holes[i % len(holes)] for i in range(len(steps)))


def test_nothing_is_guessed_before_half_a_second_of_work() -> None:
    meter = RateMeter(0.0)
    meter.add(FIRST_AFTER / 2, worked=100 * MIB)
    assert meter.rate is None and meter.eta(1 << 40) is None
    meter.add(FIRST_AFTER, worked=100 * MIB)
    assert meter.rate == 200 * MIB / FIRST_AFTER


def test_eta_after_a_hole_does_not_drop() -> None:
    """The issue's ETA of 9 s -> 14 s -> 3 s: a hole made the speed leap. Here the ETA after a
    10 GiB hole is exactly the data left at the speed of the data."""
    total = 12 << 30
    meter = RateMeter(0.0)
    now = feed(meter, [(1.0, 100 * MIB)] * 10)
    before = meter.eta(total)
    assert before is not None and math.isclose(before, (total - 1000 * MIB) / (100 * MIB))
    meter.add(now + 0.3, skipped=10 << 30)  # the hole: 0.3 s to step over, its real cost
    assert meter.rate is not None and math.isclose(meter.rate, 100 * MIB * math.exp(-0.3 / TAU))
    left = total - meter.done
    after = meter.eta(total)
    assert after is not None and math.isclose(after, left / meter.rate)
    assert left / (100 * MIB) <= after <= 1.05 * left / (100 * MIB)  # the speed of the data, not 34 GiB/s


@given(st.floats(1e5, 1e9), st.integers(20, 200))
def test_eta_counts_down_steadily_at_a_steady_rate(rate: float, steps: int) -> None:
    total = round(rate * steps * 0.5 * 2)
    meter = RateMeter(0.0)
    now, etas = 0.0, []
    for _ in range(steps):
        now += 0.5
        meter.add(now, worked=round(rate * 0.5))
        eta = meter.eta(total)
        if eta is not None:
            etas.append((now, eta))
    for (t0, e0), (t1, e1) in itertools.pairwise(etas):
        assert math.isclose(e0 - e1, t1 - t0, rel_tol=1e-3, abs_tol=1e-3)  # one second a second


@given(STEPS, st.floats(0.3, 30.0), st.floats(1e3, 1e9))
def test_one_interval_moves_the_rate_by_its_weight_only(
    steps: list[tuple[float, float]], span: float, burst: float
) -> None:
    meter = RateMeter(0.0)
    now = feed(meter, steps) + 1.0
    meter.add(now, worked=MIB)  # a sample: the meter's clock is at ``now`` from here
    old = meter.rate
    if old is None:
        return
    meter.add(now + span, worked=round(span * burst))
    assert meter.rate is not None
    weight = 1 - math.exp(-span / TAU)
    assert abs(meter.rate - old) <= weight * abs(burst - old) * 1.001 + 1


def test_bar_is_drawn_at_once_on_a_terminal_in_binary_units(tmp_path: Path, repo_path: Path) -> None:
    """Through a real pseudo-terminal: the bar is on stderr from the start (a pulse labelled
    'starting' until the commit knows the size), then the commit's own label; its sizes and
    speed are binary (MiB, MiB/s); stdout keeps only the snapshot id."""
    src = tmp_path / "vm.img"
    with open(src, "wb") as f:
        f.write(os.urandom(4 * MIB))
        f.truncate(64 * MIB)  # and a hole
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "SNAP_REPO"} | {"TERM": "xterm", "COLUMNS": "120"}
    proc = subprocess.Popen(
        [*SNAP, "commit", str(src), "-r", str(repo_path)],
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    screen = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 300)
        if not ready:
            break
        try:
            data = os.read(primary, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not data:
            break
        screen += data
    out, _ = proc.communicate(timeout=300)
    os.close(primary)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "starting" in text and "commit vm.img" in text
    assert "MiB" in text and " MB" not in text and "MB/s" not in text
    assert len(out.split()) == 1  # the id alone on stdout: the bar went to stderr
