"""Where a repository is named (``-r``, ``SNAP_REPO``, ``snap init``): a local path, or a
remote repository reached over SSH (docs/CLI.md, "remote repositories"). Pure: no I/O.

- ``ssh://[user@]host[:port]/absolute/path`` (``[::1]`` for an IPv6 host);
- scp-style ``[user@]host:path``, the path relative to the remote home unless it starts with
  ``/`` (``~/`` is the home too); a colon counts only before the first slash, so ``./a:b``
  and ``/x/a:b`` are local paths;
- anything else is a local path.

A user or host starting with ``-`` is refused (it would reach ssh as an option), and so are
whitespace and control characters in either.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from snapstore.errors import UsageError

SSH_SCHEME = "ssh://"
_BAD = re.compile(r"[\s\x00-\x1f\x7f@/]")


@dataclass(frozen=True)
class SshAddress:
    """A remote repository: ``path`` is absolute, or relative to the remote home."""

    host: str
    path: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        """The address as a URL (messages; parse_location reads it back to the same)."""
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        path = self.path if self.path.startswith("/") else f"/~/{self.path}"
        return f"{SSH_SCHEME}{user}{host}{port}{path}"


def parse_location(text: str) -> SshAddress | None:
    """The remote repository ``text`` names, or None when it names a local path; UsageError
    when it is meant as a remote one but is malformed."""
    if text.startswith(SSH_SCHEME):
        return _parse_url(text, text[len(SSH_SCHEME) :])
    if text.startswith("["):  # [v6]:path
        close = text.find("]")
        if close > 0 and text[close + 1 : close + 2] == ":":
            return _address(text, None, text[1:close], None, text[close + 2 :], url=False)
        return None
    colon = text.find(":")
    slash = text.find("/")
    if colon <= 0 or (0 <= slash < colon):
        return None
    user, _, host = text[:colon].rpartition("@")
    return _address(text, user if _ else None, host, None, text[colon + 1 :], url=False)


def _parse_url(text: str, rest: str) -> SshAddress:
    authority, slash, path = rest.partition("/")
    if not slash:
        raise UsageError(f"{text!r}: no path", hint="e.g. ssh://user@host/srv/repo (the path is absolute)")
    userinfo, at, hostport = authority.rpartition("@")
    port: int | None = None
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise UsageError(f"{text!r}: unclosed '[' in the host")
        host, after = hostport[1:close], hostport[close + 1 :]
        if after and not after.startswith(":"):
            raise UsageError(f"{text!r}: unexpected {after!r} after the host")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text_ = hostport.partition(":")
        port_text = port_text_ if colon else None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise UsageError(f"{text!r}: port {port_text!r} is not a number 1-65535")
        port = int(port_text)
    if path.startswith("~/") or path == "~":  # ssh://host/~/repo: relative to the home
        return _address(text, userinfo if at else None, host, port, path[2:], url=True)
    return _address(text, userinfo if at else None, host, port, "/" + path, url=True)


def _address(text: str, user: str | None, host: str, port: int | None, path: str, *, url: bool) -> SshAddress:
    if not host:
        raise UsageError(f"{text!r}: no host")
    for what, value in (("host", host), ("user", user)):
        if value is not None and (not value or value.startswith("-") or _BAD.search(value)):
            raise UsageError(f"{text!r}: invalid {what} {value!r}")
    if path.startswith("~/") or path == "~":
        path = path[2:]
    if path in ("", "/"):
        raise UsageError(
            f"{text!r}: no repository path",
            hint="e.g. ssh://user@host/srv/repo or user@host:repo (relative to the remote home)",
        )
    if "\x00" in path:
        raise UsageError(f"{text!r}: a NUL character in the path")
    return SshAddress(host=host, path=path, user=user or None, port=port)


def ssh_argv(rsh: str, address: SshAddress, remote_command: str) -> list[str]:
    """The command line that runs ``remote_command`` on the address's host: ``rsh`` split
    as a shell would (``SNAP_RSH="ssh -p 2222 -i key"``), then the URL's port and user as
    options, ``--`` and the host (never taken for an option)."""
    argv = shlex.split(rsh)
    if not argv:
        raise UsageError("SNAP_RSH is empty", hint="unset it, or give a command such as 'ssh -p 2222'")
    if address.port is not None:
        argv += ["-p", str(address.port)]
    if address.user is not None:
        argv += ["-l", address.user]
    return [*argv, "--", address.host, remote_command]
