"""Parsing and resolving user-given snapshot ids (pure)."""

from __future__ import annotations

import string
from collections.abc import Iterable

from snapstore.errors import AmbiguousIdError, UnknownSnapshotError, UsageError
from snapstore.model import SnapshotInfo

MIN_PREFIX = 4
LATEST = "latest"
_HEX = set(string.hexdigits.lower())


def short(snapshot_id: bytes) -> str:
    """The id as shown in listings: its first 12 hex characters."""
    return snapshot_id.hex()[:12]


def resolve(ref: str, snapshots: Iterable[SnapshotInfo], *, name: str | None = None) -> SnapshotInfo:
    """Find the one snapshot ``ref`` names: a full id, a unique prefix, or ``latest``.

    ``latest`` is the newest snapshot (of ``name`` when given). A prefix must have at least
    :data:`MIN_PREFIX` hex characters.
    """
    ref = ref.strip().lower()
    candidates = [s for s in snapshots if name is None or s.name == name]
    if ref == LATEST:
        if not candidates:
            raise UnknownSnapshotError(ref if name is None else f"latest of {name}")
        return max(candidates, key=lambda s: s.order)
    if len(ref) < MIN_PREFIX or not set(ref) <= _HEX:
        raise UsageError(
            f"{ref!r} is not a snapshot id",
            hint=f"give 'latest' or at least {MIN_PREFIX} hex characters of an id",
        )
    matches = [s for s in candidates if s.hex.startswith(ref)]
    if not matches:
        raise UnknownSnapshotError(ref)
    if len(matches) > 1:
        raise AmbiguousIdError(ref, sorted(s.hex for s in matches))
    return matches[0]
