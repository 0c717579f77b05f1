"""The bytes of the NBD protocol (newstyle fixed handshake, simple and structured replies, the
``base:allocation`` meta context) that ``snap nbd`` speaks: pure encoding and decoding, no I/O.
Reference: the NBD protocol document, doc/proto.md of the NetworkBlockDevice project."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT"
OPTION_REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

# handshake flags (server) and client flags
FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2

# options
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

# option replies
REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_UNSUP = (1 << 31) + 1
REP_ERR_POLICY = (1 << 31) + 2
REP_ERR_INVALID = (1 << 31) + 3
REP_ERR_UNKNOWN = (1 << 31) + 6

# information types (NBD_OPT_INFO / NBD_OPT_GO)
INFO_EXPORT = 0
INFO_NAME = 1
INFO_BLOCK_SIZE = 3

# transmission flags
TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_CAN_MULTI_CONN = 1 << 8

# commands and their flags
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7
CMD_FLAG_REQ_ONE = 1 << 3

# structured reply types and flags
REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) + 1

# base:allocation states
STATE_HOLE = 1
STATE_ZERO = 2
BASE_ALLOCATION = "base:allocation"

# errno values the protocol names
EPERM = 1
EIO = 5
EINVAL = 22
ENOTSUP = 95

GREETING = struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
OPTION_HEADER = struct.Struct(">QII")  # IHAVEOPT, option, length of its data
REQUEST = struct.Struct(">IHHQQI")  # magic, command flags, type, cookie, offset, length
MAX_OPTION_DATA = 64 * 1024  # longer option data is a broken client (names are short)


class ProtocolError(Exception):
    """The client broke the protocol; the connection is closed."""


@dataclass(frozen=True, slots=True)
class Request:
    flags: int
    type: int
    cookie: int
    offset: int
    length: int


def decode_request(data: bytes) -> Request:
    magic, flags, kind, cookie, offset, length = REQUEST.unpack(data)
    if magic != REQUEST_MAGIC:
        raise ProtocolError(f"request magic {magic:#x}")
    return Request(flags, kind, cookie, offset, length)


def option_reply(option: int, reply: int, data: bytes = b"") -> bytes:
    return struct.pack(">QIII", OPTION_REPLY_MAGIC, option, reply, len(data)) + data


def export_name_reply(size: int, flags: int, *, no_zeroes: bool) -> bytes:
    """The answer to NBD_OPT_EXPORT_NAME (no option reply header)."""
    return struct.pack(">QH", size, flags) + (b"" if no_zeroes else bytes(124))


def info_export(size: int, flags: int) -> bytes:
    return struct.pack(">HQH", INFO_EXPORT, size, flags)


def info_block_size(minimum: int, preferred: int, maximum: int) -> bytes:
    return struct.pack(">HIII", INFO_BLOCK_SIZE, minimum, preferred, maximum)


def info_name(name: str) -> bytes:
    return struct.pack(">H", INFO_NAME) + name.encode()


def server_entry(name: str) -> bytes:
    """An NBD_REP_SERVER reply's data (NBD_OPT_LIST)."""
    raw = name.encode()
    return struct.pack(">I", len(raw)) + raw


def decode_go(data: bytes) -> tuple[str, list[int]]:
    """NBD_OPT_INFO / NBD_OPT_GO data: the export name and the information types asked for."""
    name, rest = _name(data)
    if len(rest) < 2:
        raise ProtocolError("short NBD_OPT_GO data")
    (count,) = struct.unpack(">H", rest[:2])
    if len(rest) != 2 + 2 * count:
        raise ProtocolError("NBD_OPT_GO data of the wrong length")
    return name, list(struct.unpack(f">{count}H", rest[2:]))


def decode_meta_context(data: bytes) -> tuple[str, list[str]]:
    """NBD_OPT_LIST/SET_META_CONTEXT data: the export name and the queries."""
    name, rest = _name(data)
    if len(rest) < 4:
        raise ProtocolError("short meta context data")
    (count,) = struct.unpack(">I", rest[:4])
    rest = rest[4:]
    queries = []
    for _ in range(count):
        query, rest = _name(rest)
        queries.append(query)
    if rest:
        raise ProtocolError("meta context data of the wrong length")
    return name, queries


def meta_context(context_id: int, name: str) -> bytes:
    return struct.pack(">I", context_id) + name.encode()


def simple_reply(cookie: int, error: int = 0) -> bytes:
    return struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, error, cookie)


def structured_header(cookie: int, kind: int, length: int, *, done: bool) -> bytes:
    flags = REPLY_FLAG_DONE if done else 0
    return struct.pack(">IHHQI", STRUCTURED_REPLY_MAGIC, flags, kind, cookie, length)


def offset_data_header(cookie: int, offset: int, length: int, *, done: bool) -> bytes:
    """A structured NBD_REPLY_TYPE_OFFSET_DATA chunk's header; ``length`` bytes follow."""
    head = structured_header(cookie, REPLY_TYPE_OFFSET_DATA, 8 + length, done=done)
    return head + struct.pack(">Q", offset)


def structured_error(cookie: int, error: int, message: str = "") -> bytes:
    raw = message.encode()[:4096]
    payload = struct.pack(">IH", error, len(raw)) + raw
    return structured_header(cookie, REPLY_TYPE_ERROR, len(payload), done=True) + payload


def block_status(cookie: int, context_id: int, extents: Iterable[tuple[int, int]]) -> bytes:
    """A final NBD_REPLY_TYPE_BLOCK_STATUS chunk: (length, state flags) descriptors."""
    payload = struct.pack(">I", context_id) + b"".join(struct.pack(">II", n, f) for n, f in extents)
    return structured_header(cookie, REPLY_TYPE_BLOCK_STATUS, len(payload), done=True) + payload


def _name(data: bytes) -> tuple[str, bytes]:
    """A u32-length-prefixed UTF-8 string, and what follows it."""
    if len(data) < 4:
        raise ProtocolError("short string")
    (n,) = struct.unpack(">I", data[:4])
    if len(data) < 4 + n:
        raise ProtocolError("string past the end of the option data")
    try:
        return data[4 : 4 + n].decode(), data[4 + n :]
    except UnicodeDecodeError as exc:
        raise ProtocolError("a name that is not UTF-8") from exc
