"""Test helpers shipped for backend authors: fault injection and model-based state machines.

``DelayedCopyBacking`` (a backing that takes a request's bytes when it starts and answers after
a delay, as a network store does), ``CancellingBacking`` and ``OutOfBandBacking`` (a file the
test changes behind the cache) are importable from here; the state
machines live in :mod:`.stateful` (one task at a time) and :mod:`.concurrent` (many at once).
"""

from .backings import CancellingBacking as CancellingBacking
from .backings import DelayedCopyBacking as DelayedCopyBacking
from .backings import OutOfBandBacking as OutOfBandBacking

__all__ = ["CancellingBacking", "DelayedCopyBacking", "OutOfBandBacking"]
