"""The protocol's frames and error records (docs/PROTOCOL.md): what one side encodes the
other reads back; a cut or oversized frame is a ProtocolError; errors keep their class and
exit code across the wire. And the server itself, fed bytes that are no protocol."""

from __future__ import annotations

import io
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapstore.errors import (
    AccessDeniedError,
    CorruptError,
    LockedError,
    NoSpaceError,
    ObjectExistsError,
    ObjectNameError,
    ObjectNotFoundError,
    ProtocolError,
    ServerError,
    ShortObjectError,
    SnapstoreError,
    StorageIOError,
)
from snapstore.remote import wire
from tests.conftest import SNAP

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@given(
    frames=st.lists(
        st.tuples(st.dictionaries(st.text(max_size=10), json_values, max_size=5), st.binary(max_size=300)),
        max_size=5,
    )
)
def test_frames_read_back(frames: list[tuple[dict[str, object], bytes]]) -> None:
    stream = io.BytesIO(b"".join(wire.encode_frame(h, len(p)) + p for h, p in frames))
    for header, payload in frames:
        assert wire.read_frame(stream, "test") == (header, payload)
    assert wire.read_frame(stream, "test") is None  # a clean end


@given(header=st.dictionaries(st.text(max_size=10), json_values, max_size=5), payload=st.binary(max_size=100))
def test_a_frame_cut_anywhere_is_a_protocol_error(header: dict[str, object], payload: bytes) -> None:
    whole = wire.encode_frame(header, len(payload)) + payload
    for cut in range(1, len(whole)):
        with pytest.raises(ProtocolError):
            wire.read_frame(io.BytesIO(whole[:cut]), "test")


@pytest.mark.parametrize(
    "raw",
    [
        struct.pack(">II", wire.MAX_HEADER + 1, 0),
        struct.pack(">II", 2, wire.MAX_PAYLOAD + 1),
        struct.pack(">II", 2, 0) + b"[]",  # not an object
        struct.pack(">II", 2, 0) + b"\xff{",  # not UTF-8 JSON
    ],
)
def test_malformed_frames_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        wire.read_frame(io.BytesIO(raw + b"\0" * 64), "test")


@pytest.mark.parametrize(
    "error",
    [
        ObjectNotFoundError("packs/ab/x.pack"),
        ObjectExistsError("config"),
        ObjectNameError("A", "characters other than a-z 0-9 . _ - /"),
        ShortObjectError("obj", 6, 10),
        CorruptError("pack x", "bad magic"),
        NoSpaceError("packs/ab/x.pack"),
        StorageIOError("packs/ab/x.pack", "Input/output error"),
        LockedError(Path("/srv/repo"), "another holder of locks/write"),
    ],
)
def test_backend_errors_keep_their_class_and_fields(error: SnapstoreError) -> None:
    back = wire.decode_error(wire.encode_error(error), "ssh://nas/r")
    assert type(back) is type(error)
    assert isinstance(back, SnapstoreError)
    assert back.message == error.message and back.exit_code == error.exit_code
    assert vars(back) == vars(error)


def test_other_errors_keep_their_message_and_exit_code() -> None:
    denied = wire.decode_error(wire.encode_error(AccessDeniedError("no", hint="h")), "ssh://nas/r")
    assert isinstance(denied, AccessDeniedError) and denied.exit_code == 14 and denied.hint == "h"
    odd = wire.decode_error({"class": "Whatever", "exit": 999, "message": "m"}, "w")
    assert isinstance(odd, ServerError) and odd.exit_code == 1  # out of range: an internal error
    bug = wire.decode_error(wire.encode_error(ValueError("negative offset")), "w")
    assert type(bug) is ValueError


def test_the_server_ends_on_bytes_that_are_no_protocol() -> None:
    """A client speaking nonsense: the server greets, then exits 13 without a traceback."""
    done = subprocess.run(
        [*SNAP, "serve", "--stdio"], input=b"\0\0\0\x05\0\0\0\0[1,2]garbage", capture_output=True, timeout=120
    )
    assert done.returncode == 13, done.stderr
    assert done.stdout.startswith(wire.MAGIC) and b"Traceback" not in done.stderr
    assert wire.read_frame(io.BytesIO(done.stdout[len(wire.MAGIC) :]), "test") is not None


def test_serve_without_stdio_is_a_usage_error() -> None:
    done = subprocess.run([*SNAP, "serve"], capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and done.stderr.decode().startswith("snap: error: give --stdio")
