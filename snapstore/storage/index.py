"""The LMDB index (the only lmdb importer): chunk id -> location and reference count, the
set of snapshots whose references are counted (or being counted), gc's garbage list, and
the snapshots whose manifest could not be read whole (gc frees nothing while there are any).

The index is derived data: it can be rebuilt from packs and manifests (see repair). Each
write transaction is atomic and durable when it commits.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import lmdb

from snapstore.errors import CorruptError, NoSpaceError, StorageIOError, translate_os_error
from snapstore.format import index as fmt
from snapstore.gcplan import record_span
from snapstore.model import ChunkId, ChunkLocation, PackId, SnapshotId
from snapstore.storage import fsio, lmdb_file

CHUNK_ID_SIZE = 32
_MAX_META = 64

MAP_SIZE = 1 << 40  # address space only; the file grows as used
_DBS = (b"chunks", b"counted", b"garbage", b"meta", b"lost", b"damaged", b"exclusive")
_OPTIONAL = (
    b"garbage",
    b"lost",
    b"damaged",
    b"exclusive",
)  # a reader of an index without them finds them empty


def _translate(exc: lmdb.Error, where: str) -> Exception:
    text = str(exc)
    if "No space" in text or "Disk quota" in text or "MDB_MAP_FULL" in text:
        return NoSpaceError(where)
    if isinstance(
        exc,
        lmdb.CorruptedError
        | lmdb.InvalidError
        | lmdb.VersionMismatchError
        | lmdb.PageNotFoundError
        | lmdb.IncompatibleError
        | lmdb.BadDbiError,
    ):
        return CorruptError(where, text, hint=fmt.REPAIR_HINT)
    error = StorageIOError(where, text)
    if isinstance(exc, lmdb.TxnFullError):
        error.hint = "transactions are batched to stay far below this limit; 'snap repair' rebuilds the index"
    return error


# py-lmdb allows one Environment per path per process: opens of the same index share it.
# Keyed by the directory's (device, inode); each holds the directory's descriptor.
_OPEN: dict[tuple[int, int], tuple[Any, dict[bytes, Any], int, int]] = {}
_OPEN_LOCK = threading.Lock()
# The chunk table is most of the index (about 110 bytes a chunk): its pages are checked when a
# transaction first needs it, not when the index is opened, so that readers of the small tables
# alone (snap log, stats, a quota plan) take time that does not grow with the chunk count.
_LARGE = frozenset({b"chunks"})
_WHOLE: set[tuple[int, int]] = set()  # environments whose every page has been checked
_UNCHECKED = object()  # stands for a table not checked yet: LMDB refuses it (TypeError)
_LOCK_FILE = "lock.mdb"


def _acquire_env(
    path: Path, mode: int, create: bool, readonly: bool
) -> tuple[Any, dict[bytes, Any], tuple[int, int]]:
    """The process's environment of the index at ``path`` (shared: LMDB allows one per
    process), and its key. A read-only one never takes LMDB's writer mutex: a reader never
    waits for a writer's transaction, and works on a read-only filesystem.

    LMDB opens its files by name and follows links: the directory is opened here without
    following one and LMDB is given its pinned path; its two files are checked to be
    regular files (or absent) first, and the lock file is created here if missing
    (docs/FORMAT.md, "trust")."""
    try:
        dir_fd = fsio.open_dir(path, what="index directory")
    except OSError as exc:
        raise translate_os_error(exc, "index") from exc
    owned = True  # closed here unless shared or handed to _OPEN
    try:
        st = os.fstat(dir_fd)
        key = (st.st_dev, st.st_ino)
        with _OPEN_LOCK:
            if key in _OPEN:
                env, dbs, users, held = _OPEN[key]
                if env.flags()["readonly"] and not readonly:
                    raise StorageIOError("index", "it is open read-only in this process")
                _OPEN[key] = (env, dbs, users + 1, held)
                return env, dbs, key
            lockable = _check_files(dir_fd, mode, readonly)
            pinned = fsio.pinned(dir_fd)
            lmdb_file.check(pinned, fmt.REPAIR_HINT)  # before LMDB maps and trusts it
            try:
                env = lmdb.open(
                    str(pinned),
                    map_size=MAP_SIZE,
                    subdir=True,
                    max_dbs=len(_DBS),
                    create=create and not readonly,
                    readonly=readonly,
                    lock=lockable,
                    mode=mode,
                    readahead=False,
                    max_readers=256,
                )
                try:
                    _check_tree(env, pinned, whole=False)
                    dbs = _open_dbs(env, readonly)
                except BaseException:
                    env.close()
                    raise
            except lmdb.Error as exc:
                raise _translate(exc, "index") from exc
            _OPEN[key] = (env, dbs, 1, dir_fd)
            owned = False
            return env, dbs, key
    finally:
        if owned:
            with suppress(OSError):
                os.close(dir_fd)


def _check_files(dir_fd: int, mode: int, readonly: bool) -> bool:
    """Refuse an index whose data or lock file is not a regular file (a link out of the
    repository, a FIFO); create a missing lock file (never through a link). False when a
    reader cannot write the lock file (read-only media, another user's ``--shared``
    repository): LMDB then reads without it (a commit running meanwhile may make such a
    read fail, never return wrong data: every chunk read is checked against its id)."""
    for name in (lmdb_file.DATA_FILE, _LOCK_FILE):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise translate_os_error(exc, "index") from exc
        if not stat.S_ISREG(st.st_mode):
            raise CorruptError("index", f"{name} is not a regular file", hint=fmt.REPAIR_HINT)
    try:  # (an existing one was checked above)
        os.close(fsio.open_file(_LOCK_FILE, os.O_RDWR | os.O_CREAT, mode, what="index", dir_fd=dir_fd))
    except OSError as exc:
        if not readonly:
            raise translate_os_error(exc, "index") from exc
        return False  # a reader of a read-only repository, or of another user's
    return True


def _open_dbs(env: Any, readonly: bool) -> dict[bytes, Any]:
    """The tables; a writer creates those that do not exist yet, for a reader they are empty."""
    if not readonly:
        with env.begin(write=True) as txn:
            return {name: env.open_db(name, txn=txn) for name in _DBS}
    dbs = {}
    for name in _DBS:
        try:
            dbs[name] = env.open_db(name, create=False)
        except lmdb.NotFoundError as exc:
            if name not in _OPTIONAL:
                detail = f"the {name.decode()} table is missing"
                raise CorruptError("index", detail, hint=fmt.REPAIR_HINT) from exc
            dbs[name] = None
    return dbs


def _check_tree(env: Any, path: Path, *, whole: bool) -> None:
    """Walk every page the current state of the index uses (``whole``; else all but the
    chunk table's and the free list's), inside a read transaction (no writer can reuse those
    pages meanwhile), before any lookup trusts them."""
    skip = frozenset() if whole else _LARGE
    for _ in range(5):
        with env.begin() as txn:
            try:
                lmdb_file.check_tree(path, txn.id(), fmt.REPAIR_HINT, skip=skip, free=whole)
                return
            except lmdb_file.ConcurrentChange:
                continue  # a writer rewrote the meta page as it was read
    raise StorageIOError("index", "it kept changing while it was checked")


def _release_env(key: tuple[int, int]) -> None:
    with _OPEN_LOCK:
        env, dbs, users, dir_fd = _OPEN[key]
        if users > 1:
            _OPEN[key] = (env, dbs, users - 1, dir_fd)
        else:
            del _OPEN[key]
            _WHOLE.discard(key)
            env.close()
            os.close(dir_fd)


class Index:
    def __init__(self, path: Path, *, mode: int, create: bool, readonly: bool = False) -> None:
        self.path = path
        self._env, self._db, self._key = _acquire_env(path, mode, create, readonly)
        self._pinned = fsio.pinned(_OPEN[self._key][3])  # where LMDB opened it
        self._closed = False
        try:
            if create:
                with self.write() as w:
                    if w.get_meta(b"version") is None:
                        w.put_meta(b"version", fmt.encode_u64(fmt.INDEX_VERSION))
                        w.put_meta(fmt.TOTALS, fmt.encode_totals((0, 0, 0, 0)))
            with self.read(chunks=False) as r:
                version = r.get_meta(b"version")
            if version is None or fmt.decode_u64(version) not in fmt.READABLE_INDEX_VERSIONS:
                raise CorruptError("index", "missing or unknown index version", hint=fmt.REPAIR_HINT)
            self.version = fmt.decode_u64(version)  # 1: a writer's recovery upgrades it (a recount)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release_env(self._key)

    def _check_whole(self) -> None:
        """Check the pages left unchecked when the index was opened, once per process."""
        with _OPEN_LOCK:
            if self._key not in _WHOLE:
                try:
                    _check_tree(self._env, self._pinned, whole=True)
                except lmdb.Error as exc:
                    raise _translate(exc, "index") from exc
                _WHOLE.add(self._key)

    @contextmanager
    def read(self, *, chunks: bool = True) -> Iterator[IndexTxn]:
        """A read transaction; with ``chunks`` False one that does not read the chunk table
        (its pages need not be checked first: see _LARGE)."""
        if chunks:
            self._check_whole()
        # Buffers: a value's length is checked before its bytes are copied (lmdb_file.py).
        try:
            with self._env.begin(buffers=True) as txn:
                yield IndexTxn(txn, self._db, chunks=chunks)
        except lmdb.Error as exc:
            raise _translate(exc, "index") from exc

    @contextmanager
    def write(self) -> Iterator[IndexWriteTxn]:
        """A write transaction, committed (durably) when the block ends without error."""
        self._check_whole()
        try:
            with self._env.begin(write=True, buffers=True) as txn:
                w = IndexWriteTxn(txn, self._db)
                yield w
                w.flush_sizes()
        except lmdb.Error as exc:
            raise _translate(exc, "index") from exc
        lmdb_file.pad(self._pinned)


class IndexTxn:
    """Reads of one transaction. Keys and values come as buffers into LMDB's map: each is
    checked (length first) and copied before it is returned."""

    def __init__(self, txn: Any, dbs: dict[bytes, Any], *, chunks: bool = True) -> None:
        self._txn = txn
        self._chunks = dbs[b"chunks"] if chunks else _UNCHECKED
        self._chunks_record = dbs[b"chunks"]  # its entry count is in the main table, checked
        self._counted = dbs[b"counted"]
        self._garbage = dbs[b"garbage"]
        self._meta = dbs[b"meta"]
        self._lost = dbs[b"lost"]
        self._damaged = dbs[b"damaged"]
        self._exclusive = dbs[b"exclusive"]

    def get(self, chunk_id: ChunkId) -> ChunkLocation | None:
        if len(chunk_id) != CHUNK_ID_SIZE:  # LMDB refuses empty and over-long keys
            return None
        data = self._txn.get(chunk_id, db=self._chunks)
        return None if data is None else fmt.decode_location(data)

    def iter_locations(self) -> Iterator[tuple[ChunkId, ChunkLocation]]:
        with self._txn.cursor(db=self._chunks) as cur:
            for key, value in cur:
                yield _chunk_key(key), fmt.decode_location(value)

    def iter_entries(self) -> Iterator[tuple[ChunkId, ChunkLocation | CorruptError]]:
        """Every chunk entry, a damaged one as the error that decoding it raised (verify
        reports those and carries on)."""
        with self._txn.cursor(db=self._chunks) as cur:
            for key, value in cur:
                name = ChunkId(bytes(key) if len(key) <= 2 * CHUNK_ID_SIZE else bytes(key[:CHUNK_ID_SIZE]))
                entry: ChunkLocation | CorruptError
                try:
                    _chunk_key(key)
                    entry = fmt.decode_location(value)
                except CorruptError as exc:
                    entry = exc
                yield name, entry

    def chunk_count(self) -> int:
        return int(self._txn.stat(self._chunks_record)["entries"])

    def is_counted(self, snapshot_id: SnapshotId) -> bool:
        """Whether the snapshot's references are counted, wholly or (a count under way) in part."""
        if len(snapshot_id) != CHUNK_ID_SIZE:
            return False
        return self._txn.get(snapshot_id, db=self._counted) is not None

    def count_state(self, snapshot_id: SnapshotId) -> tuple[int, bytes] | bool:
        """False: not counted; True: counted; (sign, last chunk id): a count under way."""
        if len(snapshot_id) != CHUNK_ID_SIZE:
            return False
        value = self._txn.get(snapshot_id, db=self._counted)
        if value is None:
            return False
        state = fmt.decode_counted(bytes(value[:34]))  # a longer value is damage
        return True if state is None else state

    def iter_damaged(self) -> Iterator[SnapshotId]:
        """Published snapshots whose manifest could not be read whole when it was counted."""
        if self._damaged is None:
            return
        with self._txn.cursor(db=self._damaged) as cur:
            for key in cur.iternext(keys=True, values=False):
                yield _snapshot_key(key)

    def iter_counted(self) -> Iterator[SnapshotId]:
        with self._txn.cursor(db=self._counted) as cur:
            for key in cur.iternext(keys=True, values=False):
                yield _snapshot_key(key)

    def iter_garbage(self) -> Iterator[tuple[PackId, int, int]]:
        if self._garbage is None:
            return
        with self._txn.cursor(db=self._garbage) as cur:
            for key, value in cur:
                pack_id, offset = fmt.decode_garbage_key(key)
                yield pack_id, offset, fmt.decode_u64(value)

    def get_lost(self, chunk_id: ChunkId) -> tuple[int, bytes] | None:
        """(reference count, owners) of a chunk snapshots name but no pack holds (its data
        was lost or found damaged), or None."""
        if len(chunk_id) != CHUNK_ID_SIZE or self._lost is None:
            return None
        value = self._txn.get(chunk_id, db=self._lost)
        return None if value is None else fmt.decode_lost(bytes(value[:40]))

    def iter_lost(self) -> Iterator[tuple[ChunkId, int]]:
        if self._lost is None:
            return
        with self._txn.cursor(db=self._lost) as cur:
            for key, value in cur:
                yield _chunk_key(key), fmt.decode_lost(bytes(value[:40]))[0]

    def sizes_ready(self) -> bool:
        """Whether the exclusive sizes and totals are kept (index version 2, no recount
        under way): else they are computed from the manifests."""
        version = self.get_meta(b"version")
        return (
            version is not None
            and fmt.decode_u64(version) >= 2
            and self.get_meta(fmt.RECOUNT) is None
            and self.get_meta(fmt.TOTALS) is not None
        )

    def exclusive(self, snapshot_id: SnapshotId) -> int | None:
        """Pack bytes only this snapshot references (when :meth:`sizes_ready`)."""
        if len(snapshot_id) != CHUNK_ID_SIZE or self._exclusive is None:
            return None
        value = self._txn.get(snapshot_id, db=self._exclusive)
        return 0 if value is None else max(0, fmt.decode_i64(bytes(value[:9])))

    def totals(self) -> tuple[int, int, int, int] | None:
        """(live chunks, their raw bytes, their pack bytes, pack bytes of unreferenced
        chunks), when :meth:`sizes_ready`."""
        value = self.get_meta(fmt.TOTALS)
        return None if value is None else fmt.decode_totals(value)

    def get_meta(self, key: bytes) -> bytes | None:
        value = self._txn.get(key, db=self._meta)
        if value is None:
            return None
        if len(value) > _MAX_META:
            raise CorruptError("index", f"meta value of {len(value)} bytes", hint=fmt.REPAIR_HINT)
        return bytes(value)


def _id_key(key: Any) -> bytes:
    if len(key) != CHUNK_ID_SIZE:
        raise CorruptError("index", f"a key of {len(key)} bytes", hint=fmt.REPAIR_HINT)
    return bytes(key)


def _chunk_key(key: Any) -> ChunkId:
    return ChunkId(_id_key(key))


def _snapshot_key(key: Any) -> SnapshotId:
    return SnapshotId(_id_key(key))


class IndexWriteTxn(IndexTxn):
    """Writes of one transaction. Every change of a chunk entry goes through :meth:`_store`,
    which keeps the totals and the exclusive sizes (docs/FORMAT.md, "sizes") in step; they
    are written once, when the transaction ends (:meth:`flush_sizes`)."""

    def __init__(self, txn: Any, dbs: dict[bytes, Any]) -> None:
        super().__init__(txn, dbs)
        self._totals = [0, 0, 0, 0]  # deltas of the four totals
        self._excl: dict[bytes, int] = {}  # deltas of exclusive sizes, by owner (a snapshot id)
        self._uncounted: set[SnapshotId] = set()  # their exclusive entry goes

    def _store(self, chunk_id: ChunkId, old: ChunkLocation | None, new: ChunkLocation | None) -> None:
        for loc, sign in ((old, -1), (new, 1)):
            if loc is None:
                continue
            size = record_span(loc)
            if loc.refcount:
                self._totals[0] += sign
                self._totals[1] += sign * loc.raw_size
                self._totals[2] += sign * size
            else:
                self._totals[3] += sign * size
        if new is None:
            self._txn.delete(chunk_id, db=self._chunks)
        else:
            self._txn.put(chunk_id, fmt.encode_location(new), db=self._chunks)

    def _own(self, owner: bytes, size: int) -> None:
        self._excl[owner] = self._excl.get(owner, 0) + size

    def flush_sizes(self) -> None:
        """Write what this transaction changed of the totals and exclusive sizes."""
        if any(self._totals):
            value = self.get_meta(fmt.TOTALS)
            if value is not None:  # an index of version 1 has none until its recount
                old = fmt.decode_totals(value)
                new = tuple(max(0, a + b) for a, b in zip(old, self._totals, strict=True))
                self.put_meta(fmt.TOTALS, fmt.encode_totals((new[0], new[1], new[2], new[3])))
        for sid, delta in self._excl.items():
            if delta and sid not in self._uncounted and self._exclusive is not None:
                value = self._txn.get(sid, db=self._exclusive)
                total = delta + (0 if value is None else fmt.decode_i64(bytes(value[:9])))
                self._txn.put(sid, fmt.encode_i64(total), db=self._exclusive)
        for sid in self._uncounted:
            self._txn.delete(sid, db=self._exclusive)
        self._totals = [0, 0, 0, 0]
        self._excl.clear()
        self._uncounted.clear()

    def delete(self, chunk_id: ChunkId) -> None:
        self._store(chunk_id, self.get(chunk_id), None)

    def add_refs(
        self, chunk_ids: Iterable[ChunkId], delta: int, snapshot_id: SnapshotId, *, strict: bool = True
    ) -> None:
        """Add ``delta`` (+1 or -1) to the reference count of each (distinct) chunk id that
        ``snapshot_id`` names. A chunk missing from the index is an error when ``strict``;
        otherwise its count is kept in the lost table (recounting a damaged repository:
        verify reports it), so that a commit that stores the chunk again takes it over.

        The chunk's owners (XOR of the ids naming it) tell whose exclusive size changes: a
        chunk going from 1 to 2 references leaves its one owner's, from 2 to 1 joins the
        remaining owner's."""
        sid = int.from_bytes(snapshot_id, "little")
        for chunk_id in chunk_ids:
            loc = self.get(chunk_id)
            if loc is None:
                if strict:
                    raise CorruptError(
                        "index", f"no entry for referenced chunk {chunk_id.hex()[:16]}", hint=fmt.REPAIR_HINT
                    )
                if len(chunk_id) == CHUNK_ID_SIZE:
                    refs, owners = self.get_lost(chunk_id) or (0, bytes(32))
                    self.put_lost(chunk_id, max(0, refs + delta), fmt.xor_id(owners, snapshot_id))
                continue
            refs = loc.refcount + delta
            if refs < 0:
                continue  # counted twice down: nothing to take away
            owners = (int.from_bytes(loc.owners, "little") ^ sid).to_bytes(32, "little")
            if refs > 1 and loc.refcount > 1:  # the common case: no size changes hands
                self._txn.put(
                    chunk_id, fmt.encode_location(loc, refcount=refs, owners=owners), db=self._chunks
                )
                continue
            size = record_span(loc)
            if delta > 0 and loc.refcount == 0:
                self._own(snapshot_id, size)
            elif delta > 0 and loc.refcount == 1:
                self._own(loc.owners, -size)
            elif delta < 0 and refs == 0:
                self._own(snapshot_id, -size)
            elif delta < 0 and refs == 1:
                self._own(owners, size)
            self._store(chunk_id, loc, replace(loc, refcount=refs, owners=owners))

    def put(self, chunk_id: ChunkId, loc: ChunkLocation) -> None:
        """Index a chunk at ``loc``. A chunk indexed already keeps its count and owners (it was
        stored again: its old pack could not be read); one the lost table counts takes that
        count over."""
        old = self.get(chunk_id)
        if loc.base is not None:
            if self.get_meta(fmt.DELTAS) is None:
                self.put_meta(fmt.DELTAS, b"\x01")
            counted = old.refcount and old.base != loc.base if old is not None else self.get_lost(chunk_id)
            if counted:
                # (counted snapshots would not count the base: a writer stores it full)
                raise CorruptError("index", f"chunk {chunk_id.hex()[:16]} counted already, stored as a delta")
        if old is not None:
            loc = replace(loc, refcount=old.refcount, owners=old.owners)
        else:
            lost = self.get_lost(chunk_id)
            if lost is not None:
                self._txn.delete(chunk_id, db=self._lost)
                loc = replace(loc, refcount=lost[0], owners=lost[1])
                if lost[0] == 1:
                    self._own(lost[1], record_span(loc))
        self._store(chunk_id, old, loc)

    def drop(self, chunk_id: ChunkId) -> None:
        """Unindex a chunk whose data is damaged, keeping its count in the lost table."""
        loc = self.get(chunk_id)
        if loc is not None:
            if loc.refcount == 1:
                self._own(loc.owners, -record_span(loc))
            self._store(chunk_id, loc, None)
            self.put_lost(chunk_id, loc.refcount, loc.owners)

    def clear_lost(self) -> None:
        self._txn.drop(self._lost, delete=False)

    def put_lost(self, chunk_id: ChunkId, count: int, owners: bytes) -> None:
        if count:
            self._txn.put(chunk_id, fmt.encode_lost(count, owners), db=self._lost)
        else:
            self._txn.delete(chunk_id, db=self._lost)

    def set_counted(self, snapshot_id: SnapshotId, counted: bool) -> None:
        if counted:
            self._txn.put(snapshot_id, fmt.COUNTED, db=self._counted)
        else:
            self._txn.delete(snapshot_id, db=self._counted)
            self._uncounted.add(snapshot_id)

    def set_counting(self, snapshot_id: SnapshotId, sign: int, last: bytes) -> None:
        """Record how far a batched count of the snapshot got (see count_state)."""
        self._txn.put(snapshot_id, fmt.encode_counting(sign, last), db=self._counted)

    def clear_counted(self) -> None:
        self._txn.drop(self._counted, delete=False)

    def set_damaged(self, snapshot_id: SnapshotId, damaged: bool) -> None:
        if damaged:
            self._txn.put(snapshot_id, b"", db=self._damaged)
        else:
            self._txn.delete(snapshot_id, db=self._damaged)

    def clear_damaged(self) -> None:
        self._txn.drop(self._damaged, delete=False)

    def delete_meta(self, key: bytes) -> None:
        self._txn.delete(key, db=self._meta)

    def zero_refcounts(self, start: bytes, limit: int) -> bytes | None:
        """Set the reference count of at most ``limit`` chunks, from key ``start`` on, to 0;
        return the key to start the next batch at (None: done)."""
        keys: list[ChunkId] = []
        following: bytes | None = None
        with self._txn.cursor(db=self._chunks) as cur:
            found = cur.set_range(start) if start else cur.first()
            while found:
                if len(keys) >= limit:
                    following = bytes(cur.key())
                    break
                keys.append(ChunkId(bytes(cur.key())))
                found = cur.next()
        for key in keys:
            loc = self.get(key)
            if loc is not None:  # every entry written again: one of index version 1 gets owners
                self._store(key, loc, replace(loc, refcount=0, owners=bytes(32)))
        return following

    def reset_sizes(self) -> None:
        """Start the totals and exclusive sizes again from nothing counted (a recount, after
        every reference count was set to 0): every indexed chunk is unreferenced."""
        self._txn.drop(self._exclusive, delete=False)
        garbage = sum(record_span(loc) for _, loc in self.iter_locations())
        self.put_meta(fmt.TOTALS, fmt.encode_totals((0, 0, 0, garbage)))
        self._totals = [0, 0, 0, 0]

    def put_garbage(self, pack_id: PackId, offset: int, length: int) -> None:
        self._txn.put(fmt.encode_garbage_key(pack_id, offset), fmt.encode_u64(length), db=self._garbage)

    def delete_garbage(self, pack_id: PackId, offset: int) -> None:
        self._txn.delete(fmt.encode_garbage_key(pack_id, offset), db=self._garbage)

    def put_meta(self, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._meta)

    def clear(self) -> None:
        """Empty every table but meta (before a rebuild)."""
        for name in (self._chunks, self._counted, self._garbage, self._lost, self._damaged, self._exclusive):
            self._txn.drop(name, delete=False)
        self.put_meta(fmt.TOTALS, fmt.encode_totals((0, 0, 0, 0)))
        self._totals = [0, 0, 0, 0]
