"""The stores a repository is made of, local or over a backend: each kind has two classes
with the same methods (the local one keeps the fast paths of a local disk: descriptors,
renames, holes, read-ahead hints)."""

from __future__ import annotations

from snapstore.storage.objpacks import ObjectPackStore, ObjectPackWriter
from snapstore.storage.objpins import ObjectPinStore
from snapstore.storage.objsnapshots import ObjectManifestWriter, ObjectSnapshotStore
from snapstore.storage.packstore import PackStore, PackWriter
from snapstore.storage.pins import PinStore
from snapstore.storage.snapshots import ManifestWriter, SnapshotStore

Packs = PackStore | ObjectPackStore
PackWriting = PackWriter | ObjectPackWriter
Snapshots = SnapshotStore | ObjectSnapshotStore
ManifestWriting = ManifestWriter | ObjectManifestWriter
Pins = PinStore | ObjectPinStore
