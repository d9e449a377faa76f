"""Backing stores: the protocol and its implementations.

``S3Object`` is imported on first use: it needs the ``s3`` extra (aiobotocore), which the rest
of the package does not, and aiobotocore takes most of a second to import.
"""

from typing import TYPE_CHECKING, Any

from .base import BackingFile as BackingFile
from .base import Revalidating as Revalidating
from .delegating import DelegatingBacking as DelegatingBacking
from .faults import FaultInjector as FaultInjector
from .faults import FaultStats as FaultStats
from .local import LocalFile as LocalFile
from .memory import BackingStats as BackingStats
from .memory import MemoryBacking as MemoryBacking

if TYPE_CHECKING:
    from .s3 import S3Object as S3Object

__all__ = [
    "BackingFile",
    "BackingStats",
    "DelegatingBacking",
    "FaultInjector",
    "FaultStats",
    "LocalFile",
    "MemoryBacking",
    "Revalidating",
    "S3Object",
]


def __getattr__(name: str) -> Any:
    if name == "S3Object":
        from .s3 import S3Object

        return S3Object
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
