"""``snap nbd``: a read-only NBD export of a file snapshot, served from its chunks.

One thread per connection; each answers its requests in order. Reads come from a
:class:`~snapstore.ops.snapread.SnapshotReader` (verified chunks, a cache, read-ahead), and
block status tells clients where the snapshot has zero runs (``base:allocation``), so
``nbdcopy`` and ``qemu-img convert`` skip them. Writes are refused (EPERM): the export is
read-only, and a qcow2 overlay takes the writes of a VM booted from it.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable

from snapstore import nbdwire as w
from snapstore.errors import SnapstoreError
from snapstore.model import Buffer
from snapstore.ops.snapread import SnapshotReader

log = logging.getLogger("snapstore")

MAX_REQUEST = 32 * 1024 * 1024  # the largest read answered (and announced as the block size limit)
MAX_EXTENTS = 4096  # block status descriptors per reply
_CONTEXT_ID = 1  # the id of base:allocation on every connection
_IOV_MAX = 1024  # buffers per sendmsg (Linux IOV_MAX)
_FLAGS = w.TFLAG_HAS_FLAGS | w.TFLAG_READ_ONLY | w.TFLAG_CAN_MULTI_CONN


def serve(listener: socket.socket, reader: SnapshotReader, name: str, stop: threading.Event) -> None:
    """Accept clients on ``listener`` until ``stop`` is set; each is served in a thread."""
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        threading.Thread(target=_Connection(conn, reader, name).run, name="snap-nbd", daemon=True).start()


class _Connection:
    def __init__(self, sock: socket.socket, reader: SnapshotReader, name: str) -> None:
        self.sock = sock
        self.reader = reader
        self.name = name
        self.structured = False
        self.allocation = False  # base:allocation selected

    def run(self) -> None:
        try:
            with self.sock:
                if self._handshake():
                    self._transmission()
        except (w.ProtocolError, ConnectionError, OSError) as exc:
            log.debug("nbd client gone: %s", exc)

    # -- handshake ------------------------------------------------------------------------------

    def _handshake(self) -> bool:
        """Options until the client starts transmission (True) or leaves (False)."""
        self.sock.sendall(w.GREETING)
        (client_flags,) = struct.unpack(">I", self._recv(4))
        no_zeroes = bool(client_flags & w.FLAG_NO_ZEROES)
        while True:
            magic, option, length = w.OPTION_HEADER.unpack(self._recv(w.OPTION_HEADER.size))
            if magic != w.IHAVEOPT or length > w.MAX_OPTION_DATA:
                raise w.ProtocolError("bad option header")
            data = self._recv(length)
            if option == w.OPT_EXPORT_NAME:
                if data.decode(errors="replace") not in ("", self.name):
                    return False  # the protocol has no error reply here: close
                self.sock.sendall(w.export_name_reply(self.reader.size, _FLAGS, no_zeroes=no_zeroes))
                return True
            if option == w.OPT_ABORT:
                self.sock.sendall(w.option_reply(option, w.REP_ACK))
                return False
            if self._option(option, data):
                return True

    def _option(self, option: int, data: bytes) -> bool:
        """Answer one option; True when it starts transmission (NBD_OPT_GO)."""
        send = self.sock.sendall
        try:
            if option == w.OPT_LIST:
                send(w.option_reply(option, w.REP_SERVER, w.server_entry(self.name)))
            elif option in (w.OPT_INFO, w.OPT_GO):
                name, wanted = w.decode_go(data)
                if name not in ("", self.name):
                    send(w.option_reply(option, w.REP_ERR_UNKNOWN, b"no such export"))
                    return False
                send(w.option_reply(option, w.REP_INFO, w.info_export(self.reader.size, _FLAGS)))
                if w.INFO_BLOCK_SIZE in wanted:
                    send(w.option_reply(option, w.REP_INFO, w.info_block_size(1, 4096, MAX_REQUEST)))
                if w.INFO_NAME in wanted:
                    send(w.option_reply(option, w.REP_INFO, w.info_name(self.name)))
                send(w.option_reply(option, w.REP_ACK))
                return option == w.OPT_GO
            elif option == w.OPT_STRUCTURED_REPLY:
                if data:
                    send(w.option_reply(option, w.REP_ERR_INVALID))
                else:
                    self.structured = True
                    send(w.option_reply(option, w.REP_ACK))
            elif option in (w.OPT_LIST_META_CONTEXT, w.OPT_SET_META_CONTEXT):
                self._meta_context(option, data)
            else:  # STARTTLS and what this server does not know
                send(w.option_reply(option, w.REP_ERR_UNSUP))
        except w.ProtocolError:
            send(w.option_reply(option, w.REP_ERR_INVALID))
        return False

    def _meta_context(self, option: int, data: bytes) -> None:
        name, queries = w.decode_meta_context(data)
        setting = option == w.OPT_SET_META_CONTEXT
        if setting and not self.structured:
            self.sock.sendall(w.option_reply(option, w.REP_ERR_INVALID))
            return
        if name not in ("", self.name):
            self.sock.sendall(w.option_reply(option, w.REP_ERR_UNKNOWN))
            return
        listing = not queries and not setting
        wanted = listing or any(q in ("base:", w.BASE_ALLOCATION) for q in queries)
        if setting:
            self.allocation = wanted
        if wanted:
            reply = w.meta_context(_CONTEXT_ID, w.BASE_ALLOCATION)
            self.sock.sendall(w.option_reply(option, w.REP_META_CONTEXT, reply))
        self.sock.sendall(w.option_reply(option, w.REP_ACK))

    # -- transmission ---------------------------------------------------------------------------

    def _transmission(self) -> None:
        handlers: dict[int, Callable[[w.Request], None]] = {
            w.CMD_READ: self._read,
            w.CMD_BLOCK_STATUS: self._block_status,
            w.CMD_FLUSH: self._ok,
            w.CMD_CACHE: self._ok,
        }
        while True:
            req = w.decode_request(self._recv(w.REQUEST.size))
            if req.type == w.CMD_DISC:
                return
            if req.type == w.CMD_WRITE:
                self._discard(req.length)  # its payload follows the request
            handler = handlers.get(req.type)
            if handler is None:
                writes = (w.CMD_WRITE, w.CMD_TRIM, w.CMD_WRITE_ZEROES)
                self._error(req, w.EPERM if req.type in writes else w.EINVAL, "read-only export")
            elif req.offset + req.length > self.reader.size:
                self._error(req, w.EINVAL, "request past the end of the export")
            elif req.type == w.CMD_READ and req.length > MAX_REQUEST:
                self._error(req, w.EINVAL, "read larger than the block size maximum")
            else:
                try:
                    handler(req)
                except SnapstoreError as exc:  # a damaged chunk: that read fails, the export stays
                    log.warning("nbd: %s", exc)
                    self._error(req, w.EIO, str(exc))

    def _read(self, req: w.Request) -> None:
        parts = list(self.reader.iter_read(req.offset, req.length))
        if self.structured:
            head = w.offset_data_header(req.cookie, req.offset, req.length, done=True)
        else:
            head = w.simple_reply(req.cookie)
        self._sendv([head, *parts])

    def _block_status(self, req: w.Request) -> None:
        if not (self.structured and self.allocation):
            self._error(req, w.EINVAL, "base:allocation was not negotiated")
            return
        extents = self.reader.extents(req.offset, req.length)[:MAX_EXTENTS]
        if req.flags & w.CMD_FLAG_REQ_ONE:
            extents = extents[:1]
        flags = w.STATE_HOLE | w.STATE_ZERO
        self.sock.sendall(
            w.block_status(req.cookie, _CONTEXT_ID, [(e.length, flags if e.zero else 0) for e in extents])
        )

    def _ok(self, req: w.Request) -> None:
        self.sock.sendall(w.simple_reply(req.cookie))

    def _error(self, req: w.Request, error: int, message: str) -> None:
        if self.structured and req.type in (w.CMD_READ, w.CMD_BLOCK_STATUS):
            self.sock.sendall(w.structured_error(req.cookie, error, message))
        else:
            self.sock.sendall(w.simple_reply(req.cookie, error))

    def _sendv(self, parts: list[Buffer]) -> None:
        """Send the parts in order without joining them in memory."""
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        while views:
            sent = self.sock.sendmsg(views[:_IOV_MAX])
            while views and sent >= len(views[0]):
                sent -= len(views.pop(0))
            if sent:
                views[0] = views[0][sent:]

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            got = self.sock.recv(n - len(buf))
            if not got:
                raise ConnectionError("client closed the connection")
            buf += got
        return bytes(buf)

    def _discard(self, n: int) -> None:
        while n > 0:
            n -= len(self._recv(min(n, 1 << 20)))
