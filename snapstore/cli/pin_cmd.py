"""snap pin, snap unpin"""

from __future__ import annotations

from snapstore.cli.common import JsonOption, RepoOption, emit_json, open_repo, out
from snapstore.cli.snapshots_cmd import IdArgument
from snapstore.repo import Mode


def pin(snapshot: IdArgument, repo: RepoOption = None, json_output: JsonOption = False) -> None:
    """Protect a snapshot from every prune."""
    _set(snapshot, repo, json_output, pinned=True)


def unpin(snapshot: IdArgument, repo: RepoOption = None, json_output: JsonOption = False) -> None:
    """Let prune consider a snapshot again."""
    _set(snapshot, repo, json_output, pinned=False)


def _set(ref: str, repo: RepoOption, json_output: bool, *, pinned: bool) -> None:
    with open_repo(repo, Mode.WRITE) as r:
        s = r.resolve(ref)
        if pinned:
            r.pin(s.id)
        else:
            r.unpin(s.id)
    if json_output:
        emit_json({"id": s.hex, "pinned": pinned})
    else:
        out(f"{'pinned' if pinned else 'unpinned'} {s.hex[:12]} ({s.name})")
