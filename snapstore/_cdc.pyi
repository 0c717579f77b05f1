"""Types of the optional C scanner (snapstore/_cdc.c)."""

from collections.abc import Sequence

from snapstore.model import Buffer

def set_gear(table: Sequence[int]) -> bool: ...
def next_cut(
    data: Buffer, start: int, end: int, min_size: int, max_size: int, cs: int, mask_s: int, mask_l: int
) -> int: ...
def is_zero(data: Buffer) -> bool: ...
