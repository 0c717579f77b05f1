"""Where typer 0.25 and click 8.5 disagree, made to agree (the typer + click adapter).

click 8.5 gave ``click.Argument`` a ``help`` of its own: ``Parameter.__init__`` now sets
``self.help``, after typer's ``TyperArgument`` has set it and without being given it, so every
positional argument lost its help text in ``--help``. The help given is put back once the
argument is built; and click's new "Positional arguments" section of the help is left out,
typer's own "Arguments" section listing the same. (The other disagreement, "Did you mean"
said twice for a mistyped command, is handled where errors are printed: cli.app._once.)
"""

from __future__ import annotations

from typing import Any

import click
from typer.core import TyperArgument, TyperCommand

_typer_init = TyperArgument.__init__


def _init_keeping_help(self: TyperArgument, *args: Any, help: str | None = None, **kwargs: Any) -> None:
    _typer_init(self, *args, help=help, **kwargs)
    self.help = help


if not getattr(TyperArgument.__init__, "_snap_keeps_help", False):
    _init_keeping_help._snap_keeps_help = True  # type: ignore[attr-defined]
    TyperArgument.__init__ = _init_keeping_help  # type: ignore[method-assign]


def _typer_lists_arguments(self: click.Command, ctx: click.Context, formatter: click.HelpFormatter) -> None:
    """Nothing: typer's format_options lists the arguments (under "Arguments")."""


if hasattr(click.Command, "format_arguments"):  # click >= 8.5
    setattr(TyperCommand, "format_arguments", _typer_lists_arguments)  # noqa: B010 (absent before click 8.5)
