"""snap completion: shell completion scripts, and the answers they ask snap for.

Click's protocol (https://click.palletsprojects.com/en/stable/shell-completion/): the script
runs ``snap`` with ``_SNAP_COMPLETE=bash_complete`` (zsh_complete, fish_complete) and the
words typed so far (bash: ``COMP_WORDS``/``COMP_CWORD``; zsh and fish likewise), and snap
prints the candidates instead of running a command. Click's own scripts and classes are used,
not typer's (whose ``--install-completion`` speaks an older dialect of the same protocol):
``snap completion SHELL`` replaces ``--install-completion`` and ``--show-completion``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from snapstore.errors import UsageError

if TYPE_CHECKING:
    from click.shell_completion import ShellComplete

COMPLETE_VAR = "_SNAP_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
INSTALL_HINT = (
    "print a completion script with 'snap completion bash|zsh|fish', e.g. "
    "snap completion bash > ~/.local/share/bash-completion/completions/snap"
)


def completion(
    shell: Annotated[str, typer.Argument(metavar="SHELL", help="bash, zsh or fish.")],
) -> None:
    """Print the shell completion script for SHELL (see docs/CLI.md to install it)."""
    if shell not in SHELLS:
        raise UsageError(f"no completion for shell {shell!r}", hint="give bash, zsh or fish")
    typer.echo(_completer(shell).source(), nl=False)


def answer(instruction: str) -> int:
    """Print the candidates a completion script asks for (``$_SNAP_COMPLETE``); the exit code."""
    shell, _, action = instruction.partition("_")
    if shell not in SHELLS or action not in ("complete", "source"):
        print(f"snap: error: bad {COMPLETE_VAR} value {instruction!r}", file=sys.stderr)
        return UsageError.exit_code
    comp = _completer(shell)
    typer.echo(comp.complete() if action == "complete" else comp.source(), nl=action == "complete")
    return 0


def _completer(shell: str) -> ShellComplete:
    # Imported here: click's completion machinery is not needed by any other command.
    from snapstore.cli.app import app
    from snapstore.cli.completion_shells import completer

    return completer(shell, typer.main.get_command(app), COMPLETE_VAR)
