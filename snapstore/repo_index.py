"""Opening the index (the repository's own ``index/``, or a cache of a backend's objects) and
rebuilding it from pack records and manifests (docs/FORMAT.md, "index" and "the index as a
cache"); bringing it in line after a crash is recovery.py's."""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from snapstore import codec, recovery
from snapstore.errors import CorruptError, IntegrityError, RepositoryError, SnapstoreError, translate_os_error
from snapstore.format import index as fmt
from snapstore.format import pack as pack_fmt
from snapstore.hashing import chunk_id as hash_chunk
from snapstore.model import ChunkId, ChunkLocation, PackId, SnapshotId
from snapstore.recovery import BATCH, INDEX_BUILD
from snapstore.repo_trees import tree_loader
from snapstore.repo_verify_packs import incomplete_trailers
from snapstore.storage import fsio
from snapstore.storage.index import Index
from snapstore.storage.kinds import Packs, Snapshots

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RebuildReport:
    chunks: int  # chunk records indexed
    duplicates: int  # records of a chunk indexed elsewhere (put on the garbage list)
    damaged_packs: tuple[str, ...] = ()  # packs whose header is damaged (their records still count)
    damaged_manifests: tuple[SnapshotId, ...] = ()  # counted as far as they could be read
    rewritten_trailers: tuple[PackId, ...] = ()  # omitted a record the old index pointed at
    damaged_pack_ids: tuple[PackId, ...] = ()  # the packs of damaged_packs (repair rewrites their header)


def rebuild(index: Index, packs: Packs, snapshots: Snapshots) -> RebuildReport:
    """Fill an empty index from the packs alone, then count references from the manifests.

    A chunk found in more than one record keeps one location whose data matches its id (the
    first, unless only a later one does); the other records are put on the garbage list for
    gc only when the kept one was proven good, so no copy that might be the only good one is
    ever listed."""
    chunks = duplicates = 0
    damaged_packs = []
    damaged_ids = []
    for pack_id in packs.iter_pack_ids():
        try:
            packs.check_header(pack_id)
        except CorruptError as exc:
            damaged_packs.append(exc.message)
            damaged_ids.append(pack_id)
        scan = packs.records(pack_id)
        while batch := list(itertools.islice(scan, BATCH)):
            with index.write() as w:
                for offset, header in batch:
                    loc = ChunkLocation(pack_id, offset, header.stored_size, header.raw_size, header.codec, 0)
                    if header.codec == codec.CODEC_DELTA:
                        with_base = _with_base(packs, header.chunk_id, loc)
                        if with_base is None:
                            continue
                        loc = with_base
                    kept = w.get(header.chunk_id)
                    if kept is None:
                        w.put(header.chunk_id, loc)
                        chunks += 1
                        continue
                    duplicates += 1
                    if _chunk_ok(packs, header.chunk_id, kept):
                        w.put_garbage(pack_id, offset, header.record_size)
                    elif _chunk_ok(packs, header.chunk_id, loc):
                        w.put(header.chunk_id, loc)
    before = snapshots.load_tree
    snapshots.load_tree = tree_loader(index, packs)  # tree snapshots are counted through this index
    try:
        damaged_manifests = recovery.recount(index, snapshots)
    finally:
        snapshots.load_tree = before
    return RebuildReport(
        chunks, duplicates, tuple(damaged_packs), damaged_manifests, damaged_pack_ids=tuple(damaged_ids)
    )


def _with_base(packs: Packs, chunk_id: ChunkId, loc: ChunkLocation) -> ChunkLocation | None:
    """A delta record's location with its base, read from its payload (None: damaged, not
    indexed: without its base it cannot be counted right). A read that fails (an I/O error,
    no space) is not damage: it stops the rebuild, which would otherwise leave out a chunk
    that is there."""
    try:
        return replace(loc, base=pack_fmt.delta_base(loc.codec, packs.read_record(loc, chunk_id)))
    except (CorruptError, IntegrityError) as exc:
        log.warning("delta record of chunk %s not indexed: %s", chunk_id.hex()[:16], exc)
        return None


def _chunk_ok(packs: Packs, chunk_id: ChunkId, loc: ChunkLocation) -> bool:
    try:
        payload = packs.read_record(loc, chunk_id)
        if loc.codec == codec.CODEC_DELTA:
            return True  # (its base may not be indexed yet: verify checks it)
        data = codec.decode(loc.codec, payload, loc.raw_size)
    except SnapstoreError:
        return False
    return hash_chunk(data) == chunk_id


def build_index(
    root: Path, tmp: Path, file_mode: int, packs: Packs, snapshots: Snapshots, *, synced: bytes | None = None
) -> RebuildReport:
    """Build a new index in ``tmp/index-<random>/`` and move it to ``root/index/`` (replacing
    any there) only when it is whole: a killed build never leaves a partial index in place.
    ``root`` and ``tmp`` are pinned (storage/dirs.py) and on one file system. ``synced``: the
    generation token a cache built now is in step with (written into it before the move)."""
    build = tmp / f"{INDEX_BUILD}{secrets.token_hex(8)}"
    try:
        build.mkdir(mode=fsio.dir_mode(file_mode))
    except OSError as exc:
        raise translate_os_error(exc, fsio.shown(build)) from exc
    index = Index(build, mode=file_mode, create=True)
    try:
        report = rebuild(index, packs, snapshots)
        if synced is not None:
            mark_synced(index, synced)
    finally:
        index.close()
    target = root / "index"
    old = f"{INDEX_BUILD}old-{secrets.token_hex(8)}"
    try:
        fsio.fsync_dir(build)
        if os.path.lexists(target):  # whatever it is (a link is moved, not followed)
            os.rename(target, tmp / old)
        os.rename(build, target)
        fsio.fsync_dir(root)
        fsio.fsync_dir(tmp)
        tmp_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            recovery.remove_entry(tmp_fd, old)
        finally:
            os.close(tmp_fd)
    except OSError as exc:
        raise translate_os_error(exc, fsio.shown(target)) from exc
    return report


def temporary_index(packs: Packs, snapshots: Snapshots) -> tuple[Index, Path, RebuildReport]:
    """An index rebuilt from the packs in a private temp directory outside the repository
    (for readers, which never write to it); the caller closes it and removes the directory."""
    try:
        path = Path(tempfile.mkdtemp(prefix="snap-index-"))
    except OSError as exc:
        raise translate_os_error(exc, "a temporary index") from exc
    try:
        index = Index(path, mode=0o600, create=True)
        try:
            report = rebuild(index, packs, snapshots)
        except BaseException:
            index.close()
            raise
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return index, path, report


@dataclass
class OpenedIndex:
    """The index a repository opened: its own, or a temporary one rebuilt for a reader."""

    index: Index
    problem: str | None = None  # why a temporary index is used
    temporary: Path | None = None  # its directory, removed by close()
    report: RebuildReport | None = None  # when it was rebuilt

    def close(self) -> None:
        self.index.close()
        if self.temporary is not None:
            shutil.rmtree(self.temporary, ignore_errors=True)
            self.temporary = None


@dataclass(frozen=True)
class CacheState:
    """What a backend's ``generation`` object says to an index kept as a cache (docs/FORMAT.md,
    "the index as a cache")."""

    synced: bytes | None  # the token a cache in step with the backend holds; None: no cache
    # can be (a writer is at work, died, or the object is missing or unreadable)
    readers_rebuild: bool = True  # False: a reader that finds it behind uses a temporary
    # index (a repository directory's own index/, perhaps on read-only media)


def _open_if_synced(path: Path, file_mode: int, token: bytes, *, writes: bool) -> Index | None:
    """The index at ``path``, opened, if it is in step with the generation ``token``; None
    (closed again) if it is not, or cannot be read."""
    try:
        index = Index(path, mode=file_mode, create=False, readonly=not writes)
    except SnapstoreError:
        return None
    try:
        with index.read(chunks=False) as r:
            if r.get_meta(fmt.SYNCED) == token:
                return index
    except SnapstoreError:
        pass
    index.close()
    return None


def mark_synced(index: Index, token: bytes | None) -> None:
    with index.write() as w:
        if token is None:
            w.delete_meta(fmt.SYNCED)
        else:
            w.put_meta(fmt.SYNCED, token)


def open_index(
    root: Path,
    tmp: Path,
    file_mode: int,
    packs: Packs,
    snapshots: Snapshots,
    *,
    writes: bool,
    rebuild: bool,
    cache: CacheState | None = None,
) -> OpenedIndex:
    """The repository's index in ``root/index`` (``tmp``: where a new one is built). A
    missing one is rebuilt by writers (in place) and by readers (in a temporary directory: a
    reader never writes to the repository); a damaged one by readers the same way, by
    writers only when asked (``rebuild``: repair).

    ``cache``: the index is a cache of a backend's objects, in step with them only if it
    holds the token ``cache.synced``. One that is not is rebuilt in place (a cache is not
    the repository: readers rebuild it too), except by a reader while a writer is at work
    (no token): that reader uses a temporary index and leaves the cache to the writer."""
    path = root / "index"
    problem = "the index is missing"
    try:
        present = os.path.lexists(path / "data.mdb")
    except OSError as exc:
        raise translate_os_error(exc, str(path)) from exc
    if cache is not None and not rebuild:
        if present and cache.synced is not None:
            synced = _open_if_synced(path, file_mode, cache.synced, writes=writes)
            if synced is not None:
                return OpenedIndex(synced)
        if not writes and (cache.synced is None or not cache.readers_rebuild):
            index, temporary, report = temporary_index(packs, snapshots)
            return OpenedIndex(index, None, temporary, report)
        report = build_index(root, tmp, file_mode, packs, snapshots, synced=cache.synced)
        return OpenedIndex(Index(path, mode=file_mode, create=False, readonly=not writes), report=report)
    if present and not rebuild:
        try:
            return OpenedIndex(Index(path, mode=file_mode, create=False, readonly=not writes))
        except CorruptError as exc:
            if writes:
                raise
            problem = f"the index is damaged ({exc.detail})"
    if not writes:
        index, temporary, report = temporary_index(packs, snapshots)
        return OpenedIndex(index, problem, temporary, report)
    rewritten = rewrite_incomplete_trailers(path, file_mode, packs) if present else ()
    report = replace(build_index(root, tmp, file_mode, packs, snapshots), rewritten_trailers=rewritten)
    return OpenedIndex(Index(path, mode=file_mode, create=False), report=report)


def rewrite_incomplete_trailers(path: Path, file_mode: int, packs: Packs) -> tuple[PackId, ...]:
    """Before the index at ``path`` is replaced by one rebuilt from the pack trailers: a
    trailer that omits or misplaces a record this index points at would lose that chunk, so
    it is written again from a scan of its pack. Nothing is done if the index cannot be read."""
    try:
        old = Index(path, mode=file_mode, create=False, readonly=True)
    except SnapstoreError:
        return ()
    try:
        bad = incomplete_trailers(old, packs)
    except RepositoryError:  # damaged; a read that fails stops the rebuild
        bad = []
    finally:
        old.close()
    for pack_id in bad:
        log.warning("pack %s: its trailer omits indexed records; writing it again from a scan", pack_id.hex())
        packs.rewrite_trailer(pack_id)
    return tuple(bad)
