"""snap nbd against the real NBD clients (nbdinfo, nbdcopy from libnbd-bin; qemu-img, qemu-io
from qemu-utils) and a raw protocol client for what they never send (writes, bad requests)."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapstore import nbdwire as w
from tests.conftest import SNAP, have
from tests.helpers import init_repo, text_bytes, write_sparse

SIZE = 24 * 1024 * 1024
needs_nbd = pytest.mark.skipif(not (have("nbdinfo") and have("nbdcopy")), reason="libnbd-bin not installed")
needs_qemu = pytest.mark.skipif(not (have("qemu-img") and have("qemu-io")), reason="qemu-utils not installed")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("nbd")
    src = tmp / "vm.img"
    write_sparse(
        src, SIZE, [(0, text_bytes(2_000_000, 3)), (10 << 20, os.urandom(3_000_000)), (SIZE - 5, b"tail!")]
    )
    repo = init_repo(tmp / "repo")
    subprocess.run([*SNAP, "commit", str(src), "-r", str(repo)], check=True, capture_output=True, timeout=300)
    return repo, src


@pytest.fixture
def export(image: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    repo, _ = image
    sock = tmp_path / "nbd.sock"
    proc = subprocess.Popen(
        [*SNAP, "nbd", "latest", "--socket", str(sock), "-r", str(repo)], stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not sock.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the export did not start"
        time.sleep(0.05)
    yield f"nbd+unix:///?socket={sock}", proc, sock
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@needs_nbd
def test_nbdcopy_reads_the_snapshot_byte_for_byte_and_skips_zero_runs(
    image: tuple[Path, Path], export: tuple[str, subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    _, src = image
    uri, _, _ = export
    info = subprocess.run(["nbdinfo", "--json", uri], capture_output=True, text=True, timeout=60, check=True)
    assert f'"export-size": {SIZE}' in info.stdout and '"is_read_only": true' in info.stdout
    mapped = subprocess.run(["nbdinfo", "--map", uri], capture_output=True, text=True, timeout=60, check=True)
    assert "hole,zero" in mapped.stdout  # base:allocation reports the zero runs
    out = tmp_path / "copy.img"
    subprocess.run(["nbdcopy", uri, str(out)], check=True, timeout=120)
    assert out.read_bytes() == src.read_bytes()


@needs_qemu
def test_qemu_sees_the_same_disk_and_an_overlay_on_it_takes_writes(
    image: tuple[Path, Path], export: tuple[str, subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    _, src = image
    uri, _, _ = export
    same = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "raw", uri, str(src)], capture_output=True, timeout=120
    )
    assert same.returncode == 0, same.stdout + same.stderr
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", uri, "-F", "raw", str(overlay)],
        check=True,
        timeout=60,
    )
    steps = ["write -P 0xab 4096 65536", "read -P 0xab 4096 65536", f"read -v {SIZE - 5} 5"]
    cmd = ["qemu-io", *(arg for step in steps for arg in ("-c", step)), str(overlay)]
    io = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert io.returncode == 0 and "Pattern verification failed" not in io.stdout, io.stdout + io.stderr
    assert "74 61 69 6c 21" in io.stdout  # "tail!": the last bytes come through the backing export


def _connect(sock: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock))
    s.settimeout(30)
    return s


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        got = s.recv(n - len(buf))
        assert got, "the server closed the connection"
        buf += got
    return buf


def test_the_export_refuses_writes_and_requests_past_its_end(
    export: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    _, _, sock = export
    with _connect(sock) as s:
        assert _recv(s, len(w.GREETING)) == w.GREETING
        s.sendall(struct.pack(">I", w.FLAG_FIXED_NEWSTYLE | w.FLAG_NO_ZEROES))
        s.sendall(w.OPTION_HEADER.pack(w.IHAVEOPT, w.OPT_EXPORT_NAME, 0))
        size, flags = struct.unpack(">QH", _recv(s, 10))
        assert size == SIZE and flags & w.TFLAG_READ_ONLY
        s.sendall(w.REQUEST.pack(w.REQUEST_MAGIC, 0, w.CMD_WRITE, 7, 0, 4) + b"evil")
        assert struct.unpack(">IIQ", _recv(s, 16)) == (w.SIMPLE_REPLY_MAGIC, w.EPERM, 7)
        s.sendall(w.REQUEST.pack(w.REQUEST_MAGIC, 0, w.CMD_READ, 8, SIZE - 2, 4))
        assert struct.unpack(">IIQ", _recv(s, 16)) == (w.SIMPLE_REPLY_MAGIC, w.EINVAL, 8)
        s.sendall(w.REQUEST.pack(w.REQUEST_MAGIC, 0, w.CMD_READ, 9, SIZE - 5, 5))
        assert struct.unpack(">IIQ", _recv(s, 16)) == (w.SIMPLE_REPLY_MAGIC, 0, 9)
        assert _recv(s, 5) == b"tail!"
        s.sendall(w.REQUEST.pack(w.REQUEST_MAGIC, 0, w.CMD_DISC, 10, 0, 0))
    with _connect(sock) as s:  # an unknown export name: NBD_REP_ERR_UNKNOWN, then the client may go on
        _recv(s, len(w.GREETING))
        s.sendall(struct.pack(">I", w.FLAG_FIXED_NEWSTYLE | w.FLAG_NO_ZEROES))
        data = struct.pack(">I", 5) + b"other" + struct.pack(">H", 0)
        s.sendall(w.OPTION_HEADER.pack(w.IHAVEOPT, w.OPT_GO, len(data)) + data)
        magic, option, reply, _ = struct.unpack(">QIII", _recv(s, 20))
        assert (magic, option, reply) == (w.OPTION_REPLY_MAGIC, w.OPT_GO, w.REP_ERR_UNKNOWN)


def test_sigterm_stops_the_export_and_removes_its_socket(
    export: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    _, proc, sock = export
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not sock.exists()


def test_an_existing_socket_path_is_refused(image: tuple[Path, Path], tmp_path: Path) -> None:
    repo, _ = image
    taken = tmp_path / "taken"
    taken.write_text("mine")
    res = subprocess.run(
        [*SNAP, "nbd", "latest", "--socket", str(taken), "-r", str(repo)], capture_output=True, timeout=60
    )
    assert res.returncode == 2 and b"exists" in res.stderr and taken.read_text() == "mine"


def test_protocol_decoding_refuses_malformed_options() -> None:
    with pytest.raises(w.ProtocolError):
        w.decode_go(struct.pack(">I", 10) + b"abc")
    with pytest.raises(w.ProtocolError):
        w.decode_go(struct.pack(">I", 0) + struct.pack(">H", 2) + b"\0\0")
    with pytest.raises(w.ProtocolError):
        w.decode_request(b"\0" * w.REQUEST.size)
    name, queries = w.decode_meta_context(
        struct.pack(">II", 0, 1) + struct.pack(">I", 15) + b"base:allocation"
    )
    assert (name, queries) == ("", ["base:allocation"])
