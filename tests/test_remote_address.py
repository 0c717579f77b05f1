"""Repository locations (issue 14, point 1): ssh:// URLs and scp-style addresses name a
remote repository, everything else a local path; what would reach ssh as an option is
refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapstore.errors import UsageError
from snapstore.remote.address import SshAddress, parse_location, ssh_argv

TABLE: list[tuple[str, SshAddress | None]] = [
    ("ssh://nas/srv/repo", SshAddress("nas", "/srv/repo")),
    ("ssh://backup@nas/vm", SshAddress("nas", "/vm", user="backup")),
    ("ssh://backup@nas:2222/vm/", SshAddress("nas", "/vm/", user="backup", port=2222)),
    ("ssh://[::1]:22/r", SshAddress("::1", "/r", port=22)),
    ("ssh://[fe80::1]/r", SshAddress("fe80::1", "/r")),
    ("ssh://nas/~/repo", SshAddress("nas", "repo")),
    ("nas:repo", SshAddress("nas", "repo")),
    ("nas:/srv/repo", SshAddress("nas", "/srv/repo")),
    ("backup@nas:vm/images", SshAddress("nas", "vm/images", user="backup")),
    ("nas:~/repo", SshAddress("nas", "repo")),
    ("[::1]:repo", SshAddress("::1", "repo")),
    ("repo", None),
    ("./a:b", None),
    ("/srv/a:b", None),
    ("sub/dir:x", None),
    ("", None),
    (":x", None),
    ("[not closed:x", None),
]


@pytest.mark.parametrize(("text", "expected"), TABLE)
def test_table(text: str, expected: SshAddress | None) -> None:
    assert parse_location(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "ssh://nas",  # no path
        "ssh://nas/",  # the root is no repository
        "ssh:///srv/repo",  # no host
        "ssh://nas:0/r",
        "ssh://nas:65536/r",
        "ssh://nas:22x/r",
        "ssh://[::1/r",
        "ssh://[::1]x/r",
        "ssh://-oProxyCommand=evil/r",  # would reach ssh as an option
        "-oProxyCommand=evil:r",
        "ssh://-l@nas/r",
        "ssh://a@b@nas/r",
        "ssh://na s/r",
        "nas:",
        "nas:~",
        "ssh://nas/~",
    ],
)
def test_malformed_remote_addresses_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_location(text)


hosts = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True),
    st.from_regex(r"[0-9a-f]{1,4}(:[0-9a-f]{0,4}){2,5}", fullmatch=True),  # IPv6
)
users = st.none() | st.from_regex(r"[a-z_][a-z0-9_.-]{0,10}", fullmatch=True)
paths = st.from_regex(r"/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.: -]+){0,3}", fullmatch=True)


@given(host=hosts, user=users, port=st.none() | st.integers(1, 65535), path=paths)
def test_an_address_reads_back_from_its_url(host: str, user: str | None, port: int | None, path: str) -> None:
    address = SshAddress(host=host, path=path, user=user, port=port)
    assert parse_location(str(address)) == address


@given(path=st.from_regex(r"(/|\./|\.\./)[^\x00]{0,40}", fullmatch=True))
def test_absolute_and_dotted_paths_are_local(path: str) -> None:
    assert parse_location(path) is None


@given(text=st.text(max_size=40))
def test_any_text_is_local_remote_or_a_usage_error(text: str) -> None:
    try:
        address = parse_location(text)
    except UsageError:
        return
    if address is not None:
        assert not address.host.startswith("-") and address.host
        assert address.user is None or not address.user.startswith("-")
        assert address.path


def test_ssh_argv_puts_the_host_after_the_options() -> None:
    address = SshAddress("nas", "/r", user="backup", port=2222)
    argv = ssh_argv("ssh -i 'my key' -o BatchMode=yes", address, "snap serve --stdio")
    assert argv == [
        "ssh",
        "-i",
        "my key",
        "-o",
        "BatchMode=yes",
        "-p",
        "2222",
        "-l",
        "backup",
        "--",
        "nas",
        "snap serve --stdio",
    ]
    with pytest.raises(UsageError):
        ssh_argv("  ", address, "snap serve --stdio")
