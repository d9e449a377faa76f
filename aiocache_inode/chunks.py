"""Chunks and policy keys: the one home of the key arithmetic.

Eviction and policy bookkeeping work on file chunks of ``CHUNK_SIZE`` bytes (16 pages): fine
enough to keep hot data, coarse enough that a 1 MiB read touches 16 policy entries, not 256. A
policy key names one chunk of one inode: ``inode_id << KEY_SHIFT | chunk_index``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CHUNK_SHIFT", "CHUNK_SIZE", "KEY_SHIFT", "chunk_key", "split_key"]

CHUNK_SHIFT: Final = 16
CHUNK_SIZE: Final = 1 << CHUNK_SHIFT
#: Policy keys are ``inode_id << KEY_SHIFT | chunk_index``; chunk indices stay below 2**48.
KEY_SHIFT: Final = 48
_INDEX_MASK: Final = (1 << KEY_SHIFT) - 1


def chunk_key(inode_id: int, idx: int) -> int:
    """The policy key of chunk ``idx`` of inode ``inode_id``. Complexity: O(1)."""
    return inode_id << KEY_SHIFT | idx


def split_key(key: int) -> tuple[int, int]:
    """``(inode_id, chunk_index)`` of a policy key. Complexity: O(1)."""
    return key >> KEY_SHIFT, key & _INDEX_MASK
