"""snap stats"""

from __future__ import annotations

from snapstore.cli.common import (
    HostFilterOption,
    JsonOption,
    NoLockOption,
    RepoOption,
    TagFilterOption,
    emit_json,
    open_repo,
    out,
    snapshot_filter,
)
from snapstore.cli.snapshots_cmd import snapshot_doc
from snapstore.cli.text import cut
from snapstore.ops.space import exclusive_bytes
from snapstore.ops.stats import repo_stats
from snapstore.repo_space import DeltaTotals
from snapstore.units import format_size


def delta_doc(d: DeltaTotals) -> dict[str, int]:
    return {
        "full_chunks": d.full_chunks,
        "full_raw_bytes": d.full_raw_bytes,
        "full_stored_bytes": d.full_stored_bytes,
        "delta_chunks": d.delta_chunks,
        "delta_raw_bytes": d.delta_raw_bytes,
        "delta_stored_bytes": d.delta_stored_bytes,
        "delta_saved_bytes": d.saved_bytes,
    }


def stats(
    tag: TagFilterOption = None,
    host: HostFilterOption = None,
    repo: RepoOption = None,
    json_output: JsonOption = False,
    no_lock: NoLockOption = False,
) -> None:
    """Repository totals and what each snapshot alone holds.

    With --tag/--host: the count and logical size of the matching snapshots; the disk,
    stored and unreferenced sizes stay the whole repository's."""
    select = snapshot_filter(tag, host)
    with open_repo(repo, no_lock=no_lock) as r:
        snaps = select.select(r.list_snapshots())
        st = repo_stats(r, snaps)
        exclusive = {s.id: exclusive_bytes(r, s.id) for s in snaps}
        quota = r.config.quota_bytes
    if json_output:
        emit_json(
            {
                "snapshots": [snapshot_doc(s, exclusive_bytes=exclusive[s.id]) for s in snaps],
                "snapshot_count": st.snapshots,
                "logical_bytes": st.logical_bytes,
                "chunks": st.chunks,
                "live_chunks": st.live_chunks,
                "raw_bytes": st.raw_bytes,
                "stored_bytes": st.stored_bytes,
                "garbage_bytes": st.garbage_bytes,
                "disk_bytes": st.disk_bytes,
                "dedup_ratio": round(st.dedup_ratio, 3),
                "compression_ratio": round(st.compression_ratio, 3),
                "quota_bytes": quota,
            }
            | ({} if st.deltas is None else {"deltas": delta_doc(st.deltas)})
        )
        return
    out(f"snapshots:          {st.snapshots}")
    out(f"logical size:       {format_size(st.logical_bytes)}")
    out(f"unique data:        {format_size(st.raw_bytes)} in {st.live_chunks} chunks")
    out(f"stored size:        {format_size(st.stored_bytes)}")
    out(f"unreferenced:       {format_size(st.garbage_bytes)} (freed by 'snap gc')")
    out(
        f"disk usage:         {format_size(st.disk_bytes)}"
        + (f" of quota {format_size(quota)}" if quota else "")
    )
    out(f"dedup ratio:        {st.dedup_ratio:.2f}x")
    out(f"compression ratio:  {st.compression_ratio:.2f}x")
    if st.deltas is not None:
        d = st.deltas
        out(f"full records:       {d.full_chunks} chunks, {format_size(d.full_stored_bytes)}")
        out(
            f"delta records:      {d.delta_chunks} chunks of {format_size(d.delta_raw_bytes)}, "
            f"{format_size(d.delta_stored_bytes)} (saved about {format_size(d.saved_bytes)})"
        )
    for s in snaps:
        out(f"  {s.hex[:12]}  {cut(s.name, 20):<20}  exclusive {format_size(exclusive[s.id])}")
