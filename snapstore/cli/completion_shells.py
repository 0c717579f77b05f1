"""Click's completion classes for bash, zsh and fish, completing file names for paths."""

from __future__ import annotations

import click
from click.shell_completion import (
    BashComplete,
    CompletionItem,
    FishComplete,
    ShellComplete,
    ZshComplete,
    _resolve_context,
    _resolve_incomplete,
)


class _PathsMixin(ShellComplete):
    """Click's completion, but a path parameter completes file names: typer's path type
    offers nothing, for its own scripts to fall back on the shell's (click's do not)."""

    def get_completions(self, args: list[str], incomplete: str) -> list[CompletionItem]:
        ctx = _resolve_context(self.cli, self.ctx_args, self.prog_name, args)
        obj, incomplete = _resolve_incomplete(ctx, args, incomplete)
        if isinstance(obj, click.Parameter) and isinstance(obj.type, click.Path):
            dirs_only = obj.type.dir_okay and not obj.type.file_okay
            return [CompletionItem(incomplete, type="dir" if dirs_only else "file")]
        return obj.shell_complete(ctx, incomplete)


class _Bash(_PathsMixin, BashComplete):
    pass


class _Zsh(_PathsMixin, ZshComplete):
    pass


class _Fish(_PathsMixin, FishComplete):
    pass


_CLASSES: dict[str, type[ShellComplete]] = {"bash": _Bash, "zsh": _Zsh, "fish": _Fish}


def completer(shell: str, cli: click.Command, complete_var: str) -> ShellComplete:
    """The completion of ``cli`` (named snap) in ``shell``: bash, zsh or fish."""
    return _CLASSES[shell](cli, {}, "snap", complete_var)
