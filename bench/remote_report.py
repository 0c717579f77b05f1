"""What the remote benchmark (bench/remote.py) prints: per phase and tool the wall time,
the bytes on the wire and the client's peak RSS; snap against each peer; issue 14's targets."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runner import Measurement
from workload import Workload

MiB = 1024 * 1024
SNAP = "snap"
PEERS = ("restic", "borg")  # what issue 14's targets compare snap with (not snap-local)
FASTER = 3.0  # issue 14: an incremental commit >= 3x faster than borg serve and restic/SFTP
SENT_FACTOR, SENT_SLACK = 1.2, 0.01  # sent < 1.2 x new chunks compressed + 1% of the image


@dataclass(frozen=True)
class WireCount:
    """What crossed the wire during one phase, over all its connections."""

    sent: int = 0
    received: int = 0
    connections: int = 0

    @classmethod
    def read(cls, log: Path) -> WireCount:
        """Sum bench/wire_rsh.py's lines (``SENT RECEIVED``, one per connection)."""
        if not log.exists():
            return cls()
        lines = [line.split() for line in log.read_text().splitlines() if line.strip()]
        return cls(sum(int(s) for s, _ in lines), sum(int(r) for _, r in lines), len(lines))

    def __str__(self) -> str:
        return (
            f"{self.sent / MiB:.2f} MiB sent, {self.received / MiB:.2f} MiB received ({self.connections} ssh)"
        )


@dataclass(frozen=True)
class RemoteRow:
    tool: str
    phase: str
    status: str
    detail: str
    seconds: float | None
    sent: int
    received: int
    connections: int
    max_rss_kib: int | None
    repo_bytes: int | None  # allocated on the server after a commit
    image_bytes: int  # the version's logical size
    new_stored_bytes: int | None  # snap's commits: compressed size of the new chunks (its --json)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def remote_rows(measured: list[tuple[Measurement, WireCount, str]]) -> list[RemoteRow]:
    return [
        RemoteRow(
            m.tool,
            m.phase,
            m.status,
            m.detail,
            m.seconds,
            wire.sent,
            wire.received,
            wire.connections,
            m.max_rss_kib,
            m.repo_bytes,
            m.bytes,
            _new_stored(stdout) if m.tool == SNAP and m.phase.startswith("commit") else None,
        )
        for m, wire, stdout in measured
    ]


def _new_stored(stdout: str) -> int | None:
    try:
        return int(json.loads(stdout)["new_stored_bytes"])
    except (ValueError, KeyError, TypeError):
        return None


def targets(rows: list[RemoteRow], work: Workload) -> list[dict[str, Any]]:
    """Issue 14's targets for each incremental commit (every commit after the first)."""
    by = {(r.tool, r.phase): r for r in rows if r.status == "ok"}
    peers = [p for p in PEERS if any(r.tool == p for r in rows)]
    commits = [f"commit {name}" for name in list(work.images)[1:]]
    found: list[dict[str, Any]] = []
    for phase in commits:
        snap = by.get((SNAP, phase))
        if snap is None or not snap.seconds:
            continue
        for peer in peers:
            other = by.get((peer, phase))
            if other is None or not other.seconds:
                continue
            speed = other.seconds / snap.seconds
            found.append(_target(phase, f"speed vs {peer}", speed, FASTER, speed >= FASTER))
            found.append(_target(phase, f"sent vs {peer}", snap.sent, other.sent, snap.sent < other.sent))
        if snap.new_stored_bytes is not None:
            bound = SENT_FACTOR * snap.new_stored_bytes + SENT_SLACK * snap.image_bytes
            verdict = _target(phase, "sent vs new chunks", snap.sent, bound, snap.sent < bound)
            found.append(verdict | {"new_stored_bytes": snap.new_stored_bytes})
    return found


def _target(phase: str, check: str, value: float, target: float, met: bool) -> dict[str, Any]:
    return {"phase": phase, "check": check, "value": value, "target": target, "met": met}


# Printing -------------------------------------------------------------------------------

COLUMNS = ("s", "sent", "recv", "RSS", "repo")
CELL = 8


def _cells(row: RemoteRow | None) -> list[str]:
    if row is None:
        return ["-"] * len(COLUMNS)
    if row.status != "ok":
        return [row.status, *["-"] * (len(COLUMNS) - 1)]
    return [
        f"{row.seconds:.2f}" if row.seconds is not None else "-",
        f"{row.sent / MiB:.2f}",
        f"{row.received / MiB:.2f}",
        f"{row.max_rss_kib / 1024:.0f}" if row.max_rss_kib else "-",
        f"{row.repo_bytes / MiB:.1f}" if row.repo_bytes is not None else "",
    ]


def _line(label: str, groups: list[list[str]]) -> str:
    return f"{label:<16}" + "".join("|" + "".join(f"{c:>{CELL}}" for c in g) + " " for g in groups).rstrip()


def results_table(rows: list[RemoteRow], tools: list[str]) -> list[str]:
    by = {(r.tool, r.phase): r for r in rows}
    phases = list(dict.fromkeys(r.phase for r in rows))
    width = CELL * len(COLUMNS)
    lines = ["tool            " + "".join(f"|{t:^{width}} " for t in tools).rstrip()]
    lines.append(_line("phase", [list(COLUMNS) for _ in tools]))
    lines += [_line(p, [_cells(by.get((t, p))) for t in tools]) for p in phases]
    return lines


def ratio_table(rows: list[RemoteRow], peers: list[str]) -> list[str]:
    by = {(r.tool, r.phase): r for r in rows if r.status == "ok"}
    phases = list(dict.fromkeys(r.phase for r in rows))
    heads = ("speed", "sent", "wire")
    lines = ["snap / peer     " + "".join(f"|{p:^{CELL * len(heads)}} " for p in peers).rstrip()]
    lines.append(_line("phase", [list(heads) for _ in peers]))
    for phase in phases:
        snap = by.get((SNAP, phase))
        groups = []
        for peer in peers:
            other = by.get((peer, phase))
            if snap is None or other is None or not snap.seconds or not other.seconds:
                groups.append(["-"] * len(heads))
                continue
            groups.append(
                [
                    f"{other.seconds / snap.seconds:.2f}x",
                    _fraction(snap.sent, other.sent),
                    _fraction(snap.sent + snap.received, other.sent + other.received),
                ]
            )
        lines.append(_line(phase, groups))
    return lines


def _fraction(a: int, b: int) -> str:
    return f"{a / b:.2f}x" if b else "-"


def target_lines(verdicts: list[dict[str, Any]]) -> list[str]:
    lines = []
    for v in verdicts:
        verdict = "met" if v["met"] else "NOT met"
        if v["check"].startswith("speed"):
            text = f"{v['value']:.2f}x faster (target >= {v['target']:.0f}x)"
        elif v["check"] == "sent vs new chunks":
            sent, new, bound = v["value"] / MiB, v["new_stored_bytes"] / MiB, v["target"] / MiB
            text = f"snap sent {sent:.2f} MiB, new chunks {new:.2f} MiB compressed, bound {bound:.2f} MiB"
        else:
            text = (
                f"snap sent {v['value'] / MiB:.2f} MiB, the peer {v['target'] / MiB:.2f} MiB (target: fewer)"
            )
        lines.append(f"{v['phase']:<12} {v['check']:<20} {text}: {verdict}")
    return lines


def print_remote(rows: list[RemoteRow], tools: list[str], verdicts: list[dict[str, Any]]) -> None:
    print("== over ssh (s = wall time to the client's exit plus a sync; sent, recv = MiB the client")
    print("   wrote to ssh and read from it; RSS = the client's peak, MiB; repo = allocated MiB")
    print("   of the repository on the server after the phase)")
    for line in results_table(rows, tools):
        print(line)
    peers = [t for t in tools if t != SNAP]
    if SNAP in tools and peers:
        print("== snap relative to each peer (speed = peer s / snap s, above 1 is faster; sent, wire =")
        print("   snap's bytes sent, and sent + received, / the peer's: below 1 is fewer)")
        for line in ratio_table(rows, peers):
            print(line)
    print(f"== issue 14's targets, incremental commits: >= {FASTER:.0f}x faster than each peer, fewer")
    print(
        f"   bytes sent, and snap's sent < {SENT_FACTOR}x its new chunks' compressed size + {SENT_SLACK:.0%}"
    )
    print("   of the image")
    for line in target_lines(verdicts) or ["(no incremental commit to judge)"]:
        print(line)
    for row in rows:
        if row.status != "ok":
            print(f"{row.status}: {row.tool} {row.phase}: {row.detail}")
