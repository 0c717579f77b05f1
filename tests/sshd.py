"""A real OpenSSH server for the remote tests (issue 14, point 6): Debian's ``sshd`` on a
loopback port, with throwaway host and user keys and its own config in a temp directory,
run in the foreground (``-D -e``) by the test process and killed after. Tests reach it with
``SNAP_RSH`` (:attr:`SshServer.rsh`); the remote snap is this checkout's
(:data:`REMOTE_SNAP`: the interpreter running the tests, ``-m snapstore``)."""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or next(
    (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None
)
REMOTE_SNAP = f"{shlex.quote(sys.executable)} -m snapstore"
FAKE_RSH = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).with_name('fake_rsh.py')))}"


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    key: Path  # the user's private key (unrestricted)
    restricted_key: Path  # a key whose authorized_keys line forces a restricted snap serve
    restricted_to: Path  # the one directory the restricted key may use

    def rsh(self, key: Path | None = None) -> str:
        """A SNAP_RSH reaching this server (no host key checks, no user config)."""
        return (
            f"ssh -F /dev/null -p {self.port} -i {shlex.quote(str(key or self.key))} -o IdentitiesOnly=yes "
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
        )

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1{path}"

    def env(self, key: Path | None = None) -> dict[str, str]:
        return {"SNAP_RSH": self.rsh(key), "SNAP_REMOTE_SNAP": REMOTE_SNAP, "SNAP_REMOTE_TIMEOUT": "120"}


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "snapstore-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_sshd(where: Path) -> Iterator[SshServer]:
    """Start sshd in ``where`` and yield it once it accepts connections."""
    assert SSHD is not None
    where.mkdir(parents=True, exist_ok=True)
    _keygen(where / "host_key")
    user_key = _keygen(where / "user_key")
    restricted_key = _keygen(where / "restricted_key")
    restricted_to = where / "srv"
    restricted_to.mkdir()
    forced = f"{REMOTE_SNAP} serve --stdio --restrict-to-path {shlex.quote(str(restricted_to))} --append-only"
    (where / "authorized_keys").write_text(
        f"{user_key}\ncommand={json_quote(forced)},restrict {restricted_key}\n"
    )
    port = _free_port()
    (where / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {where / 'host_key'}\n"
        f"AuthorizedKeysFile {where / 'authorized_keys'}\nPidFile none\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "LogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n"
        "Subsystem sftp internal-sftp\n"  # restic's sftp backend (the remote benchmark)
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation directory
    log = (where / "sshd.log").open("wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(where / "sshd_config")], stderr=log, stdout=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(where / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield SshServer(port, getpass.getuser(), where / "user_key", where / "restricted_key", restricted_to)
    finally:
        proc.kill()
        proc.wait()
        log.close()


def json_quote(text: str) -> str:
    """``text`` in double quotes as authorized_keys options take it."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
