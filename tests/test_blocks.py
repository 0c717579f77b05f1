"""Read-buffer blocks (ops/blocks.py): a dropped pool's blocks are unmapped at once, not at the
next cyclic garbage collection (a tree commit makes a pool per large file)."""

from __future__ import annotations

import gc
import weakref

from snapstore.ops.blocks import BlockPool


def test_a_dropped_pool_frees_its_blocks_without_the_cyclic_gc() -> None:
    gc.disable()
    try:
        pool = BlockPool(2, 1 << 20)
        taken = pool.try_take()
        assert taken is not None
        taken.unpin()  # back in the pool
        mappings = [weakref.ref(b.buf) for b in pool.free]
        del pool, taken
        assert [m() for m in mappings] == [None, None]  # unmapped
    finally:
        gc.enable()


def test_a_block_released_after_its_pool_is_gone_is_dropped_quietly() -> None:
    pool = BlockPool(1, 1 << 16)
    block = pool.try_take()
    assert block is not None
    del pool
    block.unpin()  # no pool to give it back to: nothing happens
