"""The options given before the command, as the command reads them (no repository
imported here: ``snap --help`` and the app itself need only this)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_HELP = "Repository path (default: $SNAP_REPO, else the nearest .snapstore/ up from here)."


@dataclass
class GlobalOptions:
    """The options given before the command (``snap -r REPO -q log``); a command's own
    ``-r``/``--no-lock`` after it take precedence."""

    repo: Path | None = None
    no_lock: bool = False
    quiet: bool = False
    verbose: bool = False
    lock_wait: float = 0.0
    utc: bool = False
    progress: str = "auto"  # auto | bar | log | none
    json_emitted: bool = False  # the command printed its JSON document (then no error document)


GLOBAL = GlobalOptions()
