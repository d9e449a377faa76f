"""Backing stores: the protocol and its implementations."""

from .base import BackingFile as BackingFile
from .faults import FaultInjector as FaultInjector
from .faults import FaultStats as FaultStats
from .local import LocalFile as LocalFile
from .memory import BackingStats as BackingStats
from .memory import MemoryBacking as MemoryBacking

__all__ = [
    "BackingFile",
    "BackingStats",
    "FaultInjector",
    "FaultStats",
    "LocalFile",
    "MemoryBacking",
]
