"""snap init"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer

from snapstore.chunkparams import parse_spec
from snapstore.cli.common import GLOBAL, JsonOption, RepoOption, connect, emit_json, out
from snapstore.errors import UsageError
from snapstore.remote.address import SshAddress, parse_location
from snapstore.repo import REPO_DIR_NAME, Repository


def init(
    path: Annotated[
        str | None,
        typer.Argument(
            help="Where to create it: a path or ssh://[USER@]HOST/PATH (default: ./.snapstore).",
            click_type=click.Path(),
        ),
    ] = None,
    repo: RepoOption = None,
    chunker: Annotated[
        str,
        typer.Option(help="fastcdc (default), fastcdc:MIN:AVG:MAX[:ZERORUN], or fixed:SIZE (e.g. fixed:1M)."),
    ] = "fastcdc",
    level: Annotated[int, typer.Option(help="zstd compression level (1-22).")] = 3,
    shared: Annotated[
        bool, typer.Option(help="Make repository files readable by others (default: owner only).")
    ] = False,
    delta: Annotated[
        bool,
        typer.Option(
            help="Store a changed chunk as a delta against the chunk that stood at its place "
            "(repository format 3: older snap versions refuse it)."
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Create an empty repository."""
    named = path if path is not None else repo or GLOBAL.repo
    address = parse_location(named) if named else None
    root: Path | SshAddress = address or Path(named or REPO_DIR_NAME)
    params = parse_spec(chunker)
    if isinstance(root, SshAddress):
        if shared:
            raise UsageError("--shared is for local repositories", hint="set the mode on the server")
        backend = connect(root, create=True)
        try:
            with Repository.init_backend(backend, chunker=params, codec_level=level, delta=delta) as r:
                c = r.config
        finally:
            backend.close()
    else:
        with Repository.init(root, chunker=params, codec_level=level, shared=shared, delta=delta) as r:
            c = r.config
    if json_output:
        emit_json(
            {
                "path": str(root),
                "repository_id": c.repository_id,
                "format_version": c.format_version,
                "chunker": {
                    "algorithm": c.chunker.algorithm,
                    "min_size": c.chunker.min_size,
                    "avg_size": c.chunker.avg_size,
                    "max_size": c.chunker.max_size,
                    "zero_run": c.chunker.zero_run,
                },
                "codec": {"name": c.codec.name, "level": c.codec.level},
                "delta": c.delta,
            }
        )
    else:
        out(f"created snapstore repository at {root}")
