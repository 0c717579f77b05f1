"""snap serve"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from snapstore.errors import UsageError


def serve(
    stdio: Annotated[bool, typer.Option("--stdio", help="Speak the protocol on stdin and stdout.")] = False,
    restrict_to_path: Annotated[
        list[Path] | None,
        typer.Option(
            "--restrict-to-path",
            metavar="PATH",
            help="Serve only repositories at or below PATH (repeatable).",
        ),
    ] = None,
    append_only: Annotated[
        bool,
        typer.Option("--append-only", help="Refuse to remove snapshots or free space (rm, gc, prune)."),
    ] = False,
) -> None:
    """Serve repositories of this machine to a remote snap (run by ssh: snap -r ssh://...)."""
    if not stdio:
        raise UsageError("give --stdio", hint="snap serve is started by ssh for 'snap -r ssh://HOST/PATH'")
    from snapstore import __version__
    from snapstore.cli.maintenance import run_served
    from snapstore.remote.policy import Policy
    from snapstore.remote.server import serve_stdio

    policy = Policy(restrict_to=tuple(restrict_to_path or ()), append_only=append_only)
    raise typer.Exit(serve_stdio(policy, __version__, run_served))
