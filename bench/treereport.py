"""What the tree benchmark prints: one row per phase and tool, snap's ratios to each peer, and
which of issue 13's targets hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from report import SNAP, ratio_table, ratios
from runner import Measurement

MiB = 1024 * 1024
COMMIT_1, COMMIT_2, RESTORE, SYNC = "commit day 1", "commit day 2", "restore day 2", "in-place day 2"
PHASES = (COMMIT_1, COMMIT_2, RESTORE, SYNC)
RSS_TARGET_MIB = 300
# issue 13: snap's speed over the peer's, at least (the sync: faster than rsync, i.e. above 1)
TARGETS = (
    (COMMIT_1, 1.5, ("restic", "borg")),
    (COMMIT_2, 2.0, ("restic", "borg")),
    (RESTORE, 1.5, ("restic", "borg")),
    (SYNC, 1.0, ("rsync",)),
)


@dataclass
class TreeMeasurement(Measurement):
    files: int = 0  # entries of the version (the root not counted)

    @property
    def files_per_s(self) -> float | None:
        if self.status != "ok" or not self.seconds:
            return None
        return self.files / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | {"files_per_s": self.files_per_s}


def results_table(results: list[TreeMeasurement]) -> list[str]:
    lines = [
        f"{'phase':<16}{'tool':<9}{'seconds':>9}{'MB/s':>9}{'files/s':>9}{'RSS MiB':>9}"
        f"{'repo MiB':>10}  status",
    ]
    for phase in dict.fromkeys(m.phase for m in results):
        for m in (r for r in results if r.phase == phase):
            ok = m.status == "ok"
            lines.append(
                f"{m.phase:<16}{m.tool:<9}"
                f"{_fmt(m.seconds if ok else None, 2):>9}{_fmt(m.mb_per_s, 1):>9}{_fmt(m.files_per_s, 0):>9}"
                f"{_fmt((m.max_rss_kib or 0) / 1024 if ok else None, 1):>9}"
                f"{_fmt(m.repo_bytes / MiB if m.repo_bytes is not None else None, 1):>10}  "
                + (m.status if ok or m.detail.startswith(m.status) else f"{m.status}: {m.detail}")
            )
    return lines


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def target_lines(results: list[TreeMeasurement]) -> list[str]:
    """One line per target of issue 13: the ratio measured and whether it holds."""
    rows = {(r["phase"], r["peer"]): r["speed_ratio"] for r in ratios(list(results), _peers(results))}
    lines = []
    for phase, least, peers in TARGETS:
        for peer in peers:
            ratio = rows.get((phase, peer))
            want = f">= {least}x" if least > 1 else "faster (> 1x)"
            if ratio is None:
                verdict = "not measured"
            elif ratio >= least if least > 1 else ratio > least:
                verdict = "holds"
            else:
                verdict = "MISSED"
            shown = "-" if ratio is None else f"{ratio:.2f}x"
            lines.append(f"{phase:<16} snap / {peer:<7} {shown:>7}  target {want:<14} {verdict}")
    snap_rss = [
        m.max_rss_kib / 1024 for m in results if m.tool == SNAP and m.status == "ok" and m.max_rss_kib
    ]
    if snap_rss:
        peak = max(snap_rss)
        verdict = "holds" if peak < RSS_TARGET_MIB else "MISSED"
        lines.append(f"{'peak RSS':<16} snap {peak:>16.1f} MiB  target < {RSS_TARGET_MIB} MiB  {verdict}")
    return lines


def _peers(results: list[TreeMeasurement]) -> list[str]:
    return [t for t in dict.fromkeys(m.tool for m in results) if t != SNAP]


def print_tree_results(results: list[TreeMeasurement]) -> list[dict[str, Any]]:
    """Print the tables; return the ratio rows."""
    print("== results (MB/s = the version's logical bytes / wall time until its writes are on disk;")
    print("   files/s = its entries / that time; RSS = peak of the tool's process; repo = allocated")
    print("   bytes of the repository after the phase, like du)")
    for line in results_table(results):
        print(line.rstrip())
    peers = _peers(results)
    rows = ratios(list(results), peers) if peers and any(m.tool == SNAP for m in results) else []
    if rows:
        print("== snap relative to each peer (speed = snap MB/s / peer MB/s, above 1 is faster;")
        print("   size = snap repo / peer repo, below 1 is smaller)")
        for line in ratio_table(rows, peers):
            print(line.rstrip())
        print("== issue 13's targets")
        for line in target_lines(results):
            print(line)
    return rows
