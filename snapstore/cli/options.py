"""The options given before the command, as the command reads them (no repository
imported here: ``snap --help`` and the app itself need only this)."""

from __future__ import annotations

from dataclasses import dataclass

REPO_HELP = (
    "Repository: a path, ssh://[USER@]HOST[:PORT]/PATH or [USER@]HOST:PATH "
    "(default: $SNAP_REPO, else the nearest .snapstore/ up from here)."
)


@dataclass
class GlobalOptions:
    """The options given before the command (``snap -r REPO -q log``); a command's own
    ``-r``/``--no-lock`` after it take precedence."""

    repo: str | None = None
    remote_snap: str | None = None  # the command that runs snap on a remote repository's server
    remote_timeout: str | None = None  # a dead link's timeout (--remote-timeout, SNAP_REMOTE_TIMEOUT)
    no_lock: bool = False
    quiet: bool = False
    verbose: bool = False
    lock_wait: float = 0.0
    utc: bool = False
    progress: str = "auto"  # auto | bar | log | none
    json_emitted: bool = False  # the command printed its JSON document (then no error document)


GLOBAL = GlobalOptions()
