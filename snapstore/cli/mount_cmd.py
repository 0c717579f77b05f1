"""snap mount"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from snapstore.cli.common import NoLockOption, RepoOption, info, open_repo
from snapstore.cli.text import safe
from snapstore.errors import UsageError
from snapstore.ops.mount import mount as do_mount

MISSING = "FUSE support is not installed"
HINT = "pip install 'snapstore[mount]', and the fuse3 package (Debian: apt install fuse3)"


def mount(
    mountpoint: Annotated[Path, typer.Argument(help="An empty directory to mount the snapshots on.")],
    repo: RepoOption = None,
    no_lock: NoLockOption = False,
) -> None:
    """Mount the snapshots read-only (FUSE): ids/ID, names/NAME/ID and latest/NAME.

    Every read is checked against the chunk ids. Stop with Ctrl-C or fusermount -u."""
    try:
        import mfusepy  # noqa: F401  (a clear message before the repository is opened)
    except (ImportError, OSError) as exc:  # OSError: the library found no libfuse
        raise UsageError(MISSING, hint=HINT) from exc
    if not mountpoint.is_dir():
        raise UsageError(f"{mountpoint} is not a directory")
    with open_repo(repo, no_lock=no_lock) as r:
        snapshots = [s for s in r.list_snapshots() if s.kind == "file"]  # trees: not mounted yet
        # libfuse unmounts on SIGINT and SIGTERM when their handlers are the default ones.
        old = {s: signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            do_mount(
                r,
                snapshots,
                str(mountpoint),
                on_ready=lambda: info(f"mounting {len(snapshots)} snapshots at {safe(str(mountpoint))}"),
            )
        except RuntimeError as exc:  # fuse_main failed: not mounted (it said why on stderr)
            raise UsageError(
                f"could not mount on {mountpoint}", hint="is it empty, and is /dev/fuse there?"
            ) from exc
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
    info("unmounted")
