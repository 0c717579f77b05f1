"""Storage backends: where a repository's objects are kept (docs/BACKENDS.md)."""

from snapstore.backends.base import AppendWriter, Backend, Capabilities, check_name, check_prefix
from snapstore.backends.faulty import Fault, FaultyBackend
from snapstore.backends.local import LocalBackend
from snapstore.backends.memory import MemoryBackend

__all__ = [
    "AppendWriter",
    "Backend",
    "Capabilities",
    "Fault",
    "FaultyBackend",
    "LocalBackend",
    "MemoryBackend",
    "check_name",
    "check_prefix",
]
