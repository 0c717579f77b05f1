"""What a commit reports about its work (CommitResult's figures), counted as it goes."""

from __future__ import annotations

from dataclasses import dataclass

from snapstore.ops.workers import Kind, Outcome


@dataclass(slots=True)
class CommitStats:
    new_chunks: int = 0  # chunks stored by this commit
    new_raw: int = 0  # their plaintext bytes
    new_stored: int = 0  # the bytes they take in packs
    zero_bytes: int = 0  # bytes recorded as zero runs
    confirmed: int = 0  # previous chunks and zero runs confirmed in place
    read_bytes: int = 0  # bytes read from the input (holes are not read)
    chunked_bytes: int = 0  # bytes the chunker scanned (not confirmed in place)

    def count_new(self, outcome: Outcome, raw_size: int) -> None:
        """Count a chunk a worker stored (also one taken back: it stays stored)."""
        if outcome.kind is Kind.NEW and outcome.stored:
            self.new_chunks += 1
            self.new_raw += raw_size
            self.new_stored += outcome.stored
