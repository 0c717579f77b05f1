"""Hostile input: hand-crafted manifests, packs and configs (with valid ids and checksums
where an attacker could compute them) give clear errors: the documented exit code, one line
on stderr, no traceback, no hang (timeout), no memory blow-up (each command runs under a
512 MiB data limit), and nothing written outside the checkout target. Repository files are
created 0600 and directories 0700, or 0644/0755 with ``snap init --shared`` (as the umask
allows).
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import blake3
import pytest

from snapstore import Mode, Repository, commit_file
from snapstore.format import FORMAT_VERSION
from snapstore.format import manifest as mf
from snapstore.format import pack as pack_fmt
from snapstore.model import EntryEnd, EntryStart, ManifestRecord, ZeroRun
from tests.conftest import SMALL_CHUNKER
from tests.helpers import one_error_line, snap_limited

MEMORY_LIMIT = 512 << 20
TIMEOUT = 60


def snap(
    *args: str | Path, cwd: Path | None = None, umask: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    """The real command, under a memory limit and a timeout."""
    return snap_limited(
        *args, timeout=TIMEOUT, rlimits={resource.RLIMIT_DATA: MEMORY_LIMIT}, umask=umask, cwd=cwd
    )


def clean_error(res: subprocess.CompletedProcess[bytes], *codes: int) -> str:
    assert res.returncode in codes, f"exit {res.returncode}: {res.stderr.decode()}"
    return one_error_line(res.stderr.decode())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    Repository.init(root, chunker=SMALL_CHUNKER, pack_target_size=1 << 20).close()
    src = tmp_path / "honest.img"
    src.write_bytes(os.urandom(100_000))
    with Repository.open(root, Mode.WRITE) as r:
        commit_file(r, src)
    src.unlink()
    return root


def plant(repo: Path, data: bytes) -> str:
    """Publish hand-made manifest bytes under their true snapshot id."""
    sid = blake3.blake3(data).hexdigest()
    (repo / "snapshots" / sid).write_bytes(data)
    return sid


def trailer(**fields: object) -> bytes:
    doc = {
        "name": "evil",
        "created": "2024-01-01T00:00:00.000000Z",
        "message": "",
        "size": 5,
        "entries": 1,
        "chunk_refs": 0,
        "hostname": "h",
        "source": "/x",
    }
    doc.update(fields)
    body = json.dumps(doc).encode()
    return b"T" + body + struct.pack("<I", len(body)) + mf.END_MAGIC


def entry(body: bytes, length: int | None = None) -> bytes:
    return b"F" + struct.pack("<I", len(body) if length is None else length) + body


def entry_json(path: object = "disk.img", **fields: object) -> bytes:
    doc = {"kind": "file", "mode": 0o644, "mtime_ns": 0, "path": path, **fields}
    return json.dumps(doc).encode()


def manifest(*parts: bytes) -> bytes:
    return mf.encode_header() + b"".join(parts)


ZERO5 = b"Z" + struct.pack("<Q", 5)
END5 = b"E" + struct.pack("<Q", 5) + blake3.blake3(bytes(5)).digest()


def tree(root: Path, skip: set[Path]) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (but ``skip``) with its size and mtime."""
    found = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(directory, d) not in skip]
        for name in files:
            st = os.lstat(Path(directory, name))
            found[str(Path(directory, name))] = (st.st_size, st.st_mtime_ns)
    return found


# -- manifests -------------------------------------------------------------------------------------

UNSAFE_PATHS = [
    "../x",
    "/etc/passwd",
    "a/../../b",
    "a\0b",
    "",
    ".",
    "..",
    "a//b",
    "./a",
    "a/.",
    "x/../../../../tmp/pwn",
]


@pytest.mark.parametrize("path", UNSAFE_PATHS)
def test_manifest_paths_cannot_escape(repo: Path, tmp_path: Path, path: str) -> None:
    sid = plant(repo, manifest(entry(entry_json(path)), ZERO5, END5, trailer()))
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    before = tree(tmp_path, {repo})
    passwd = os.stat("/etc/passwd").st_mtime_ns if os.path.exists("/etc/passwd") else None
    out = sandbox / "out.img"
    line = clean_error(snap("checkout", sid, "-o", out, "-r", repo, cwd=sandbox), 4)
    assert "unsafe entry path" in line, line
    clean_error(snap("show", sid, "-r", repo, cwd=sandbox), 4)
    line = clean_error(snap("verify", "-r", repo, cwd=sandbox), 5)
    assert tree(tmp_path, {repo}) == before, "something was written outside the repository"
    assert not out.exists() and os.listdir(sandbox) == []
    if passwd is not None:
        assert os.stat("/etc/passwd").st_mtime_ns == passwd


HOSTILE_MANIFESTS: dict[str, tuple[bytes, str]] = {
    "entry length 4 GiB": (
        manifest(entry(b"{}", 0xFFFFFFFF), b"x" * 64, trailer()),
        "implausible entry length",
    ),
    "entry length 1 MiB + 1": (manifest(entry(b"{}", (1 << 20) + 1), trailer()), "implausible entry length"),
    "chunk size 4 GiB": (
        manifest(entry(entry_json()), b"C" + bytes(32) + struct.pack("<I", 0xFFFFFFFF), END5, trailer()),
        "implausible chunk size",
    ),
    "zero run 2^64-1": (
        manifest(entry(entry_json()), b"Z" + struct.pack("<Q", (1 << 64) - 1), END5, trailer()),
        "implausible zero run",
    ),
    "sizes do not add up": (
        manifest(entry(entry_json()), ZERO5, b"E" + struct.pack("<Q", 6) + bytes(32), trailer()),
        "add up",
    ),
    "entry JSON bomb (nesting)": (
        manifest(entry(b'{"mode": ' + b"[" * 400_000 + b"]" * 400_000 + b"}"), ZERO5, END5, trailer()),
        "bad entry",
    ),
    "entry number 1e999": (
        manifest(entry(entry_json(mode=float("inf")).replace(b"Infinity", b"1e999")), ZERO5, END5, trailer()),
        "bad entry",
    ),
    "entry number of 500k digits": (
        manifest(
            entry(entry_json(mtime_ns=0).replace(b'"mtime_ns": 0', b'"mtime_ns": ' + b"9" * 500_000)),
            ZERO5,
            END5,
            trailer(),
        ),
        "bad entry",
    ),
    "entry kind": (manifest(entry(entry_json(kind="symlink")), ZERO5, END5, trailer()), "unknown entry kind"),
    "record tag": (manifest(entry(entry_json()), b"Q" * 40, trailer()), "unknown record tag"),
    "two entries": (
        manifest(
            entry(entry_json()), ZERO5, END5, entry(entry_json("b")), ZERO5, END5, trailer(entries=2, size=10)
        ),
        "several entries",
    ),
}
TRAILER_BOMBS: dict[str, tuple[bytes, str]] = {
    "trailer length 4 GiB": (
        manifest(entry(entry_json()), ZERO5, END5, b"T{}" + struct.pack("<I", 0xFFFFFFF0) + mf.END_MAGIC),
        "implausible trailer length",
    ),
    "trailer JSON bomb": (
        manifest(
            entry(entry_json()),
            ZERO5,
            END5,
            b"T" + b"[" * 500_000 + b"]" * 500_000 + struct.pack("<I", 1_000_000) + mf.END_MAGIC,
        ),
        "bad trailer",
    ),
    "trailer size 10^30": (
        manifest(entry(entry_json()), ZERO5, END5, trailer(size=10**30)),
        "implausible size",
    ),
    "trailer date": (manifest(entry(entry_json()), ZERO5, END5, trailer(created="yesterday")), "bad trailer"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MANIFESTS))
def test_hostile_manifests(repo: Path, tmp_path: Path, case: str) -> None:
    data, expected = HOSTILE_MANIFESTS[case]
    sid = plant(repo, data)
    out = tmp_path / "out.img"
    line = clean_error(snap("checkout", sid, "-o", out, "-r", repo), 4, 5)
    assert expected in line, line
    assert not out.exists()
    clean_error(snap("verify", "-r", repo), 5)
    assert not [p for p in tmp_path.iterdir() if ".snap-tmp-" in p.name]


@pytest.mark.parametrize("case", sorted(TRAILER_BOMBS))
def test_hostile_trailers(repo: Path, tmp_path: Path, case: str) -> None:
    """The trailer is what 'snap log' reads without the rest: it fails cleanly; checkout of
    the honest snapshot still works; naming the hostile one gives its error."""
    data, expected = TRAILER_BOMBS[case]
    sid = plant(repo, data)
    assert expected in clean_error(snap("log", "-r", repo), 4)
    assert expected in clean_error(snap("checkout", sid, "-o", tmp_path / "x", "-r", repo), 4)
    honest = next(p.name for p in (repo / "snapshots").iterdir() if p.name != sid)
    res = snap("checkout", honest, "-o", tmp_path / "ok", "-r", repo)
    assert res.returncode == 0, res.stderr.decode()
    clean_error(snap("verify", "-r", repo), 5)


def test_a_4_eib_zero_run_does_not_hang(repo: Path, tmp_path: Path) -> None:
    """Within the format's limits (2^62), so not corrupt; an output filesystem that cannot
    hold it refuses at once and checkout stops (exit 11, naming the output)."""
    size = 1 << 62
    probe = tmp_path / "probe"
    try:
        with open(probe, "wb") as f:
            f.truncate(size)
    except OSError:
        pass
    else:
        pytest.skip("this filesystem takes a 4 EiB file: the checkout would hash 4 EiB of zeros")
    records: list[ManifestRecord] = [EntryStart("big"), ZeroRun(size), EntryEnd(size, bytes(32))]
    body = b"".join(mf.encode_record(r) for r in records)
    created = datetime(2024, 1, 1, tzinfo=UTC)
    data = (
        mf.encode_header()
        + body
        + mf.encode_trailer(
            name="big",
            created=created,
            message="",
            size=size,
            entries=1,
            chunk_refs=0,
            hostname="h",
            source="/x",
        )
    )
    sid = plant(repo, data)
    out = tmp_path / "out.img"
    line = clean_error(snap("checkout", sid, "-o", out, "-r", repo), 11)
    assert str(out) in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".snap-tmp-" in p.name]


# -- packs -----------------------------------------------------------------------------------------


def test_packs_with_huge_size_fields(repo: Path, tmp_path: Path) -> None:
    """Records whose (checksummed) headers claim 4 GiB or run past the end of the pack are
    never indexed: repair, verify and checkout stay within the memory limit."""
    header = pack_fmt.encode_pack_header(FORMAT_VERSION)
    huge = struct.pack("<4s32sB3xII", b"SNCK", b"\1" * 32, 0, 0xFFFFFFFF, 0xFFFFFFFF)
    huge += struct.pack("<I", zlib.crc32(huge))
    torn = pack_fmt.encode_record_header(b"\2" * 32, 0, 60 << 20, 60 << 20) + b"only this"
    for i, body in enumerate((huge * 3 + b"\0" * 100, torn, huge + torn)):
        pack = repo / "packs" / "ee" / f"ee{i:030d}.pack"
        pack.parent.mkdir(exist_ok=True)
        pack.write_bytes(header + body)
    for args in (["repair", "--read-data"], ["verify", "--read-data"], ["gc"], ["verify", "--read-data"]):
        res = snap(*args, "-r", repo)
        assert res.returncode == 0, f"{args}: {res.stderr.decode()}"
    honest = next(p.name for p in (repo / "snapshots").iterdir())
    assert snap("checkout", honest, "-o", tmp_path / "out", "-r", repo).returncode == 0
    with Repository.open(repo) as r, r._index.read() as t:
        assert {cid for cid, _ in t.iter_locations()}.isdisjoint({b"\1" * 32, b"\2" * 32})


# -- config ----------------------------------------------------------------------------------------


def _config_edit(change: Callable[[dict[str, object]], None]) -> Callable[[Path], bytes]:
    def edit(repo: Path) -> bytes:
        doc = json.loads((repo / "config").read_bytes())
        del doc["checksum"]  # as a hand-edited config
        change(doc)
        return json.dumps(doc).encode()

    return edit


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    def change(doc: dict[str, object]) -> None:
        doc[key] = value

    return change


def _chunker(**values: object) -> Callable[[dict[str, object]], None]:
    def change(doc: dict[str, object]) -> None:
        doc["chunker"] = {**doc["chunker"], **values}  # type: ignore[dict-item]

    return change


HOSTILE_CONFIGS: dict[str, Callable[[Path], bytes]] = {
    "pack size 10^30": _config_edit(_set("pack_target_size", 10**30)),
    "pack size -1": _config_edit(_set("pack_target_size", -1)),
    "quota -1": _config_edit(_set("quota_bytes", -1)),
    "quota 2^100": _config_edit(_set("quota_bytes", 2**100)),
    "zstd level 10^9": _config_edit(_set("codec", {"name": "zstd", "level": 10**9})),
    "chunker min -5": _config_edit(_chunker(min_size=-5)),
    "chunker max 2^70": _config_edit(_chunker(max_size=2**70)),
    "chunker avg 0": _config_edit(_chunker(avg_size=0)),
    "format version 10^100": _config_edit(_set("format_version", 10**100)),
    "version as a string": _config_edit(_set("format_version", "1")),
    "a float": _config_edit(_set("pack_target_size", 1e300)),
    "10 MB": lambda repo: b'{"format_version": 1, "pad": "' + b"x" * 10_000_000 + b'"}',
    "nested": lambda repo: b"[" * 100_000 + b"]" * 100_000,
    "checksum of other bytes": lambda repo: (
        (repo / "config").read_bytes().replace(b'"shared": false', b'"shared": true')
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CONFIGS))
def test_hostile_configs(repo: Path, tmp_path: Path, case: str) -> None:
    (repo / "config").write_bytes(HOSTILE_CONFIGS[case](repo))
    src = tmp_path / "new.img"
    src.write_bytes(b"data" * 1000)
    for args in (["log"], ["commit", str(src)], ["verify"], ["repair"]):
        clean_error(snap(*args, "-r", repo), 4)


# -- file modes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shared", "umask", "file_mode", "dir_mode"),
    [
        (False, 0o022, 0o600, 0o700),
        (True, 0o022, 0o644, 0o755),
        (False, 0o000, 0o600, 0o700),
        (True, 0o077, 0o600, 0o700),
    ],
    ids=["private", "shared", "private-umask-0", "shared-umask-077"],
)
def test_file_modes(tmp_path: Path, shared: bool, umask: int, file_mode: int, dir_mode: int) -> None:
    repo = tmp_path / "repo"
    assert snap("init", repo, *(["--shared"] if shared else []), umask=umask).returncode == 0
    src = tmp_path / "disk.img"
    for _i in range(3):
        src.write_bytes(os.urandom(300_000) + bytes(200_000))
        assert snap("commit", src, "-r", repo, umask=umask).returncode == 0
    ids = [p.name for p in (repo / "snapshots").iterdir()]
    for args in (["pin", ids[0]], ["rm", ids[1]], ["gc"], ["repair"], ["verify", "--read-data"]):
        res = snap(*args, "-r", repo, umask=umask)
        assert res.returncode == 0, f"{args}: {res.stderr.decode()}"
    seen = {"file": 0, "dir": 0}
    wrong = []
    for directory, dirs, files in os.walk(repo):
        for name, kind, expected in [(d, "dir", dir_mode) for d in dirs] + [
            (f, "file", file_mode) for f in files
        ]:
            mode = os.lstat(Path(directory, name)).st_mode & 0o777
            seen[kind] += 1
            if mode != expected:
                wrong.append(f"{Path(directory, name).relative_to(repo)}: {mode:o}")
    assert os.lstat(repo).st_mode & 0o777 == dir_mode
    assert not wrong, f"expected {file_mode:o}/{dir_mode:o}: {wrong}"
    names = {p.name for p in repo.rglob("*")}
    assert {"config", "reserve", "data.mdb", "lock.mdb", "write", "data", ids[0]} <= names
    assert any(n.endswith(".pack") for n in names) and seen["file"] >= 10
