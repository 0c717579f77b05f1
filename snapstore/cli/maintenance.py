"""gc, prune, verify and repair as :class:`Work`: how the command opens its repository and
what it computes there, the document its ``--json`` prints (the text is drawn from that
document too). The work runs here, or, for a remote repository whose server runs it, on
the server next to the data (docs/PROTOCOL.md, "run"), which sends the document back: the
client prints the same text and JSON and exits with the same code either way."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snapstore.cli.common import GLOBAL, connect, locate, open_repo, progress_for, state_notes, warn
from snapstore.errors import LockedError, ProtocolError
from snapstore.progress import NULL_PROGRESS, Progress
from snapstore.remote.address import SshAddress
from snapstore.repo import Mode, Repository
from snapstore.repo_location import Shown

if TYPE_CHECKING:  # (a local command does not import the protocol)
    from snapstore.remote.maintenance import Served

Doc = dict[str, Any]


@dataclass(frozen=True)
class Work:
    mode: Mode
    compute: Callable[[Repository, Progress], Doc]
    rebuild_index: bool = False
    reports_index: bool = False  # the command reports a missing or damaged index itself
    no_lock: bool = False
    progress: bool = False  # the command shows its progress


# command -> (module, function making its Work from the command's arguments, a JSON object)
_WORKS = {
    "gc": ("snapstore.cli.space_cmd", "gc_work"),
    "prune": ("snapstore.cli.space_cmd", "prune_work"),
    "verify": ("snapstore.cli.check_cmd", "verify_work"),
    "repair": ("snapstore.cli.check_cmd", "repair_work"),
}


def work_for(command: str, args: dict[str, Any]) -> Work:
    """The work of ``command`` with ``args`` (UsageError for bad ones)."""
    module, name = _WORKS[command]
    make: Callable[[dict[str, Any]], Work] = getattr(importlib.import_module(module), name)
    return make(args)


def perform(repo: str | None, command: str, args: dict[str, Any], *, json_output: bool) -> Doc:
    """Run ``command`` on the repository the command names: on its server when it is
    remote and the server runs it, else here; the command's document."""
    work = work_for(command, args)  # (bad arguments are refused before connecting)
    root = locate(repo)
    if isinstance(root, SshAddress):
        doc = _on_server(root, command, args, work, json_output)
        if doc is not None:
            return doc
    with open_repo(
        repo,
        work.mode,
        rebuild_index=work.rebuild_index,
        reports_index=work.reports_index,
        no_lock=work.no_lock,
    ) as r:
        if not work.progress:
            return work.compute(r, NULL_PROGRESS)
        with progress_for(json_output) as progress:
            return work.compute(r, progress)


def _on_server(
    address: SshAddress, command: str, args: dict[str, Any], work: Work, json_output: bool
) -> Doc | None:
    """The document of ``command`` run by the server (None: this server does not run it, an
    older snap; the client then runs it over the backend interface). The client holds no
    lock meanwhile: the server takes the repository's own."""
    from snapstore.remote.client import RemoteBackend

    backend = connect(address)
    try:
        if not isinstance(backend, RemoteBackend) or command not in backend.runs:
            return None
        sent = {**args, "shown": str(address), "lock_wait": GLOBAL.lock_wait}
        if work.progress:
            with progress_for(json_output) as progress:
                result = backend.run(command, sent, None if progress is NULL_PROGRESS else progress)
        else:
            result = backend.run(command, sent, None)
    except LockedError as exc:  # (named as typed: the wire carries a path, which folds ssh://)
        raise LockedError(Shown(str(address)), exc.holder) from None
    finally:
        backend.close()
    doc, notes = result.get("doc"), result.get("notes")
    if not isinstance(doc, dict) or not isinstance(notes, list):
        raise ProtocolError(str(address), f"a run of {command} answered no document")
    for line in notes:
        warn(str(line))
    return doc


def run_served(served: Served, command: str, args: dict[str, Any], progress: Progress) -> Doc:
    """On the server (``snap serve``'s runner): open the served repository as ``command``
    would (taking its locks, exactly as a local snap) and run it; the document and the
    notes the client says."""
    from snapstore.repo_served import open_served

    work = work_for(command, args)
    with open_served(
        Path(served.path),
        work.mode,
        shown=str(args.get("shown") or ""),
        append_only=served.append_only,
        rebuild_index=work.rebuild_index,
        lock=not work.no_lock,
        lock_wait=float(args.get("lock_wait") or 0.0),
    ) as r:
        notes = state_notes(r, index=not work.reports_index)
        doc = work.compute(r, progress)
    return {"doc": doc, "notes": notes}
