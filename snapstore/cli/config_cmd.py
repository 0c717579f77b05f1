"""snap config get/set/unset (today: the repository quota)"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from snapstore.cli.common import JsonOption, RepoOption, emit_json, open_repo, out
from snapstore.errors import UsageError
from snapstore.format.config import check_quota
from snapstore.repo import Mode
from snapstore.units import format_size, parse_size

KEYS = ("quota",)
KeyArgument = Annotated[str, typer.Argument(help="Setting name: quota.")]

config_app = typer.Typer(
    help="Read or change repository settings (quota).", no_args_is_help=True, rich_markup_mode=None
)


def _check(key: str) -> None:
    if key not in KEYS:
        raise UsageError(f"unknown setting {key!r}", hint=f"settings: {', '.join(KEYS)}")


@config_app.command("get")
def get(key: KeyArgument, repo: RepoOption = None, json_output: JsonOption = False) -> None:
    """Print a setting."""
    _check(key)
    with open_repo(repo) as r:
        quota = r.config.quota_bytes
    if json_output:
        emit_json({"quota_bytes": quota})
    else:
        out("none" if quota is None else format_size(quota))


@config_app.command("set")
def set_(
    key: KeyArgument,
    value: Annotated[str, typer.Argument(help="e.g. 200G")],
    repo: RepoOption = None,
    json_output: JsonOption = False,
) -> None:
    """Change a setting (quota: every commit then keeps the repository within it)."""
    _check(key)
    quota = parse_size(value)
    check_quota(quota)
    with open_repo(repo, Mode.WRITE, ignore_bad_quota=True) as r:
        r.save_config(replace(r.config, quota_bytes=quota))
    if json_output:
        emit_json({"quota_bytes": quota})
    else:
        out(f"quota set to {format_size(quota)}")


@config_app.command("unset")
def unset(key: KeyArgument, repo: RepoOption = None, json_output: JsonOption = False) -> None:
    """Remove a setting."""
    _check(key)
    with open_repo(repo, Mode.WRITE, ignore_bad_quota=True) as r:
        r.save_config(replace(r.config, quota_bytes=None))
    if json_output:
        emit_json({"quota_bytes": None})
    else:
        out("quota removed")
