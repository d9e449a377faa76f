"""Test helpers shipped for backend authors: fault injection and model-based state machines.

``DelayedCopyBacking`` (a backing that takes a request's bytes when it starts and answers after
a delay, as a network store does) and ``CancellingBacking`` are importable from here; the state
machines live in :mod:`.stateful` (one task at a time) and :mod:`.concurrent` (many at once).
"""

from .backings import CancellingBacking as CancellingBacking
from .backings import DelayedCopyBacking as DelayedCopyBacking

__all__ = ["CancellingBacking", "DelayedCopyBacking"]
