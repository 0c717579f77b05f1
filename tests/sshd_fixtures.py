"""The fixtures of the remote tests (registered in conftest.py): a real sshd for the
module, index caches kept in each test's directory, and the byte-counting SNAP_RSH wrapper."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sshd import SSHD, SshServer, running_sshd

COUNTING_RSH = (
    f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).with_name('counting_rsh.py')))}"
)


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Index caches of remote repositories in the test's directory, not ~/.cache (a module
    asks for it with ``pytestmark = pytest.mark.usefixtures("own_cache")``)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if SSHD is None:
        pytest.skip("sshd is not installed (Debian: openssh-server)")
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
