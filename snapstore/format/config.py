"""The repository ``config`` file: canonical JSON (see docs/FORMAT.md, "config")."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from snapstore.chunkparams import validate
from snapstore.errors import CorruptError, UsageError
from snapstore.format import DELTA_VERSION, READABLE_VERSIONS
from snapstore.hashing import StreamHasher
from snapstore.model import ChunkerParams, CodecParams, Config

MAX_CONFIG_SIZE = 64 * 1024
MAX_QUOTA = 1 << 62
QUOTA_REPAIR_HINT = "repair it with 'snap config set quota SIZE' or 'snap config unset quota'"


def _canonical(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _checksum(doc: dict[str, Any]) -> str:
    """BLAKE3 of the canonical encoding of every other field."""
    hasher = StreamHasher()
    hasher.update(_canonical(doc))
    return hasher.digest().hex()


def check_quota(quota_bytes: int) -> None:
    """A quota the reader accepts and a commit can meet: 1 byte to MAX_QUOTA (a quota of 0
    would fail every commit)."""
    if not 1 <= quota_bytes <= MAX_QUOTA:
        raise UsageError(
            f"a quota of {quota_bytes} bytes is out of range",
            hint=f"give 1 byte to {MAX_QUOTA >> 60} EiB",
        )


def encode(config: Config) -> bytes:
    """The config's bytes; a quota out of range is refused (UsageError), never written."""
    if config.quota_bytes is not None:
        check_quota(config.quota_bytes)
    doc: dict[str, Any] = {
        "format_version": config.format_version,
        "repository_id": config.repository_id,
        "created": config.created,
        "chunker": {
            "algorithm": config.chunker.algorithm,
            "min_size": config.chunker.min_size,
            "avg_size": config.chunker.avg_size,
            "max_size": config.chunker.max_size,
            "zero_run": config.chunker.zero_run,
        },
        "hash": config.hash_name,
        "codec": {"name": config.codec.name, "level": config.codec.level},
        "pack_target_size": config.pack_target_size,
        "quota_bytes": config.quota_bytes,
        "shared": config.shared,
    }
    if config.format_version >= 2:
        doc["cipher"] = config.cipher
    if config.format_version >= DELTA_VERSION:
        doc["delta"] = config.delta
    doc["checksum"] = _checksum(doc)
    return _canonical(doc)


def _object(data: bytes) -> dict[str, Any]:
    """The config's JSON object, its size checked before it is parsed."""
    if len(data) > MAX_CONFIG_SIZE:
        raise CorruptError("config", f"{len(data)} bytes is too large")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CorruptError("config", f"not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise CorruptError("config", "not a JSON object")
    return doc


def peek_version(data: bytes) -> object:
    """The ``format_version`` field, read before anything else is trusted."""
    return _object(data).get("format_version")


def decode(data: bytes, *, ignore_bad_quota: bool = False) -> Config:
    """Parse a config of a version this snap reads (check :func:`peek_version` first).
    ``ignore_bad_quota``: a quota out of range reads as none (so that ``snap config`` can
    repair it) instead of making the config corrupt."""
    doc = _object(data)
    if "checksum" in doc:
        checksum = doc.pop("checksum")
        if checksum != _checksum(doc):
            raise CorruptError(
                "config",
                "checksum mismatch",
                hint="the file was damaged; if you edited it by hand, delete its checksum line",
            )
    try:
        chunker = doc["chunker"]
        codec = doc["codec"]
        config = Config(
            format_version=_int(doc["format_version"]),
            repository_id=str(doc["repository_id"]),
            created=str(doc["created"]),
            chunker=ChunkerParams(
                algorithm=str(chunker["algorithm"]),
                min_size=_int(chunker["min_size"]),
                avg_size=_int(chunker["avg_size"]),
                max_size=_int(chunker["max_size"]),
                zero_run=_int(chunker.get("zero_run", 0)),
            ),
            hash_name=str(doc["hash"]),
            codec=CodecParams(name=str(codec["name"]), level=_int(codec["level"])),
            pack_target_size=_int(doc["pack_target_size"]),
            quota_bytes=None if doc.get("quota_bytes") is None else _int(doc["quota_bytes"]),
            shared=bool(doc.get("shared", False)),
            cipher=str(doc.get("cipher", "none")),
            delta=_bool(doc.get("delta", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptError("config", f"missing or bad field {exc}") from exc
    if config.format_version not in READABLE_VERSIONS:
        raise CorruptError("config", f"format_version {config.format_version}")
    if config.cipher != "none" or (config.format_version < 2 and "cipher" in doc):
        raise CorruptError("config", f"unknown cipher {config.cipher!r}")
    if config.delta != (config.format_version >= DELTA_VERSION) or ("delta" in doc) != config.delta:
        raise CorruptError("config", f"delta {config.delta} in a config of format {config.format_version}")
    if config.hash_name != "blake3-256" or config.codec.name != "zstd":
        raise CorruptError("config", f"unknown hash {config.hash_name!r} or codec {config.codec.name!r}")
    if not 1 << 20 <= config.pack_target_size <= 1 << 32:
        raise CorruptError("config", f"pack_target_size {config.pack_target_size} out of range")
    if not 1 <= config.codec.level <= 22:
        raise CorruptError("config", f"zstd level {config.codec.level} out of range")
    if config.quota_bytes is not None and not 0 <= config.quota_bytes <= MAX_QUOTA:
        if not ignore_bad_quota:
            raise CorruptError(
                "config", f"quota_bytes {config.quota_bytes} out of range", hint=QUOTA_REPAIR_HINT
            )
        config = dataclasses.replace(config, quota_bytes=None)
    try:
        return dataclasses.replace(config, chunker=validate(config.chunker))
    except UsageError as exc:
        raise CorruptError("config", f"chunker: {exc.message}") from exc


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not a boolean")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value
