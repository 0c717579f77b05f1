"""Who holds a lock object, and whether that process is gone (storage/objlock.py).

A holder is named by its host, pid, and what tells one life of a pid from the next: the
kernel's boot id and the process's start time (field 22 of /proc/PID/stat, in clock ticks
since boot). A holder is known to be gone only when it was on this host and this host has
rebooted since, or its pid is free, or the pid now belongs to a process started at another
time. A holder on another host is never taken for gone."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def this_process() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv[:2]),
        "boot": _boot_id(),
        "start": _start_ticks(os.getpid()),
    }


def gone(info: object) -> bool:
    """Whether the holder a lock record names is known to have ended."""
    if not isinstance(info, dict) or info.get("host") != socket.gethostname():
        return False
    pid, boot, start = info.get("pid"), info.get("boot"), info.get("start")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if isinstance(boot, str) and boot and boot != _boot_id():
        return True
    now = _start_ticks(pid)
    if now is None:
        return not exists(pid)
    return isinstance(start, int) and start != now


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    try:  # the command name (field 2) is in parentheses and may hold spaces or ')'
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (someone else's too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True
