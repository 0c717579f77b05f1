"""The frames and error records of the snap protocol (docs/PROTOCOL.md, normative). Pure
encoding and decoding, plus reading one frame from a binary stream.

A connection starts with the server's 8-byte :data:`MAGIC`; then each side sends frames:

    header_length: u32 big-endian | payload_length: u32 big-endian | header | payload

``header`` is a UTF-8 JSON object (at most :data:`MAX_HEADER` bytes); ``payload`` is raw
bytes (object data, at most :data:`MAX_PAYLOAD`).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path, PurePath
from typing import Any, BinaryIO

from snapstore import errors
from snapstore.errors import ProtocolError, ServerError, SnapstoreError

MAGIC = b"SNAPSRV\n"
PROTOCOL_VERSION = 1  # the only version this snap speaks (both sides check it)
MAX_HEADER = 1 << 20
MAX_PAYLOAD = 64 << 20
PIECE = 8 << 20  # gets and puts cross the wire in pieces of at most this many bytes
_LENGTHS = struct.Struct(">II")

Header = dict[str, Any]


def encode_frame(header: Header, payload_length: int = 0) -> bytes:
    """The bytes of a frame up to its payload (the caller sends the payload after them)."""
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if len(encoded) > MAX_HEADER or payload_length > MAX_PAYLOAD:
        raise AssertionError(f"frame too large ({len(encoded)} header, {payload_length} payload bytes)")
    return _LENGTHS.pack(len(encoded), payload_length) + encoded


def read_frame(stream: BinaryIO, where: str) -> tuple[Header, bytes] | None:
    """The next frame of ``stream``; None at a clean end (no byte of a new frame).
    ProtocolError for a frame cut short or malformed."""
    lengths = _read_exactly(stream, _LENGTHS.size, where, allow_eof=True)
    if lengths is None:
        return None
    header_length, payload_length = _LENGTHS.unpack(lengths)
    if header_length > MAX_HEADER or payload_length > MAX_PAYLOAD:
        raise ProtocolError(where, f"a frame of {header_length}+{payload_length} bytes is beyond the limits")
    raw = _read_exactly(stream, header_length, where)
    payload = _read_exactly(stream, payload_length, where) if payload_length else b""
    assert raw is not None and payload is not None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(where, f"a frame header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ProtocolError(where, "a frame header is not a JSON object")
    return header, payload


def _read_exactly(stream: BinaryIO, n: int, where: str, *, allow_eof: bool = False) -> bytes | None:
    data = stream.read(n)
    if len(data) == n:
        return data
    if not data and allow_eof:
        return None
    raise ProtocolError(where, f"the connection ended inside a frame ({len(data)} of {n} bytes)")


# -- errors ----------------------------------------------------------------------------------------

# The errors a client rebuilds as their own class, by the fields each is made from: the ones
# callers of a backend catch (docs/BACKENDS.md). Others arrive as ServerError with their
# message, hint and exit code.
_FIELDS: dict[str, tuple[str, ...]] = {
    "ObjectNotFoundError": ("name",),
    "ObjectExistsError": ("name",),
    "ObjectNameError": ("name", "reason"),
    "ShortObjectError": ("name", "size", "end"),
    "CorruptError": ("what", "detail"),
    "NoSpaceError": ("where",),
    "StorageIOError": ("where", "reason"),
    "LockedError": ("path", "holder"),
    "RepositoryNotFoundError": (),
    "AccessDeniedError": (),
    "UsageError": (),
}
_BUGS = {"ValueError": ValueError, "NotImplementedError": NotImplementedError}


def encode_error(exc: BaseException) -> Header:
    """The error record of a failed request (docs/PROTOCOL.md, "errors")."""
    kind = type(exc).__name__
    if not isinstance(exc, SnapstoreError):
        return {"class": kind, "exit": 1, "message": str(exc) or kind, "hint": None, "fields": {}}
    values = {f: getattr(exc, f, None) for f in _FIELDS.get(kind, ())}
    values = {f: str(v) if isinstance(v, PurePath) else v for f, v in values.items()}
    fields = {f: v for f, v in values.items() if isinstance(v, str | int)}
    return {"class": kind, "exit": exc.exit_code, "message": exc.message, "hint": exc.hint, "fields": fields}


def decode_error(record: Header, where: str) -> Exception:
    """The exception a client raises for an error record: the same class for the errors
    backends' callers catch, ServerError (with the server's exit code) for the rest."""
    kind = str(record.get("class", "error"))
    message = str(record.get("message", kind))
    hint = record.get("hint")
    hint = str(hint) if hint is not None else None
    fields = record.get("fields") or {}
    if kind in _BUGS:
        return _BUGS[kind](message)
    names = _FIELDS.get(kind)
    cls = getattr(errors, kind, None)
    if names and isinstance(fields, dict) and set(names) <= set(fields) and isinstance(cls, type):
        args = [fields[n] for n in names]
        if kind == "LockedError":
            args[0] = Path(str(args[0]))
        try:
            rebuilt = cls(*args)
        except (TypeError, ValueError):
            rebuilt = None
        if isinstance(rebuilt, SnapstoreError):
            return rebuilt
    if kind == "RepositoryNotFoundError":
        return ServerError(f"{where}: {message}", hint=hint, exit_code=3, kind=kind)
    if kind == "AccessDeniedError":
        return errors.AccessDeniedError(f"{where}: {message}", hint=hint)
    if kind == "UsageError":
        return errors.UsageError(f"{where}: {message}", hint=hint)
    code = record.get("exit")
    exit_code = code if isinstance(code, int) and 1 <= code <= 125 else 1
    return ServerError(f"{where}: {message}", hint=hint, exit_code=exit_code, kind=kind)
