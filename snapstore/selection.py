"""Tags and host names of snapshots, and the filter that selects snapshots by them (pure).

restic's meaning: ``snap commit --tag a --tag b,c`` records the tags a, b and c. A filter
given ``--tag a,b --tag c`` matches a snapshot that has both a and b, or has c (each option
is a set of tags that must all be there; the options are alternatives); ``--host h1 --host
h2`` matches a snapshot taken on h1 or on h2. No tag and no host option: every snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from snapstore.errors import UsageError
from snapstore.model import SnapshotInfo

MAX_TAG_LENGTH = 128  # characters
MAX_HOST_LENGTH = 255  # characters (a DNS name's limit)


def check_tag(tag: str) -> str:
    """``tag`` if it is a valid tag: non-empty, printable, no comma, at most 128 characters."""
    if not tag:
        raise UsageError("empty tag", hint="a tag has at least one character")
    if "," in tag:
        raise UsageError(f"tag {tag!r} has a comma", hint="commas separate tags: --tag a,b")
    if not tag.isprintable():
        raise UsageError(f"tag {tag!r} has a control character", hint="tags are printable text")
    if len(tag) > MAX_TAG_LENGTH:
        raise UsageError(f"tag {tag[:20]!r}... is longer than {MAX_TAG_LENGTH} characters")
    return tag


def check_host(host: str) -> str:
    """``host`` if it is a valid host name to record or filter by: non-empty, printable, no
    comma, at most 255 characters."""
    if not host:
        raise UsageError("empty host name")
    if "," in host or not host.isprintable():
        raise UsageError(f"host name {host!r} has a comma or a control character")
    if len(host) > MAX_HOST_LENGTH:
        raise UsageError(f"host name {host[:20]!r}... is longer than {MAX_HOST_LENGTH} characters")
    return host


def parse_tags(options: Iterable[str]) -> tuple[str, ...]:
    """The tags of repeated ``--tag`` options, each a comma-separated list: sorted, each once."""
    return tuple(sorted({check_tag(tag) for option in options for tag in option.split(",")}))


def normal_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Checked tags, sorted, each once (the order the manifest records them in)."""
    return tuple(sorted({check_tag(tag) for tag in tags}))


@dataclass(frozen=True)
class SnapshotFilter:
    """Which snapshots a command looks at: ``tags``, alternatives each of tags that must all
    be there; ``hosts``, the host names allowed (empty: any)."""

    tags: tuple[frozenset[str], ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_options(cls, tags: Sequence[str] = (), hosts: Sequence[str] = ()) -> SnapshotFilter:
        """From the CLI's repeated ``--tag a,b`` and ``--host NAME`` options."""
        return cls(
            tuple(frozenset(check_tag(t) for t in option.split(",")) for option in tags),
            frozenset(check_host(h) for h in hosts),
        )

    @property
    def empty(self) -> bool:
        return not (self.tags or self.hosts)

    def matches(self, snapshot: SnapshotInfo) -> bool:
        if self.hosts and snapshot.hostname not in self.hosts:
            return False
        return not self.tags or any(wanted <= set(snapshot.tags) for wanted in self.tags)

    def select(self, snapshots: Iterable[SnapshotInfo]) -> list[SnapshotInfo]:
        """The snapshots that match, in the order given."""
        return [s for s in snapshots if self.matches(s)]


EVERY_SNAPSHOT = SnapshotFilter()
