"""aiocache_inode: caching inodes over one byte-budgeted memory pool, on anyio.

General layout, bottom up (each layer imports only the ones above it in this list, type-only
imports included; ``make lint`` checks it with import-linter, see ``pyproject.toml``):

- ``ranges``; ``errors``, ``attrs``, ``stats``, ``tunables``, ``chunks``: values, exceptions,
  counters, the knobs, the policy-key arithmetic.
- ``segments``: the one ordered range map; ``cache``, ``dirty``, ``mappings``, ``refs`` on it.
- ``pool``: the pool of anonymous-mmap arenas; ``locks``: the reader-writer lock; ``policies``:
  replacement policies by name; ``backing``: the BackingFile protocol and its implementations.
- ``services``: the seam, what a store lends its inodes and what it may ask of them.
- ``parts``: the concerns of one inode (fills, writes, write-back runs, views, attributes,
  drops, the host-FD mapper) over their shared core.
- ``inode``: CachingInode, the table of contents (the lock order is stated there, once).
- ``eviction``, ``writeback``: the Evictor and the Flusher; ``metrics``: Prometheus.
- ``store``: CacheStore, which owns all of it.
- ``asgi``, ``testing``: the gateway adapter; fault-injecting helpers and model-based state
  machines for backend authors.
"""

from .attrs import AttrMask as AttrMask
from .attrs import Attrs as Attrs
from .attrs import TimeSpec as TimeSpec
from .backing import BackingFile as BackingFile
from .backing import FaultInjector as FaultInjector
from .backing import LocalFile as LocalFile
from .backing import MemoryBacking as MemoryBacking
from .backing import Revalidating as Revalidating
from .errors import BackendError as BackendError
from .errors import BackingError as BackingError
from .errors import CacheError as CacheError
from .errors import ClosedError as ClosedError
from .errors import ConflictError as ConflictError
from .errors import NotFoundError as NotFoundError
from .errors import WouldBlock as WouldBlock
from .errors import WritebackError as WritebackError
from .eviction import BudgetPressure as BudgetPressure
from .eviction import CgroupPressure as CgroupPressure
from .eviction import PsiPressure as PsiPressure
from .inode import CachingInode as CachingInode
from .inode import TranslateError as TranslateError
from .inode import Translation as Translation
from .ranges import PAGE_SIZE as PAGE_SIZE
from .ranges import Range as Range
from .store import CacheStore as CacheStore
from .tunables import Tunables as Tunables

__all__ = [
    "PAGE_SIZE",
    "AttrMask",
    "Attrs",
    "BackendError",
    "BackingError",
    "BackingFile",
    "BudgetPressure",
    "CacheError",
    "CacheStore",
    "CachingInode",
    "CgroupPressure",
    "ClosedError",
    "ConflictError",
    "FaultInjector",
    "LocalFile",
    "MemoryBacking",
    "NotFoundError",
    "PsiPressure",
    "Range",
    "Revalidating",
    "TimeSpec",
    "TranslateError",
    "Translation",
    "Tunables",
    "WouldBlock",
    "WritebackError",
]
