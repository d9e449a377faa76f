"""Replacement policies: which resident cache chunk to evict next.

A policy orders opaque hashable keys; the store uses ``inode_id << 48 | chunk_index`` for
64 KiB file chunks. It never sees sizes, capacities or data: the store tells it what became resident
(:meth:`~EvictionPolicy.insert`), what was hit (:meth:`~EvictionPolicy.access`), what vanished for
other reasons (:meth:`~EvictionPolicy.remove`), and asks it for victims
(:meth:`~EvictionPolicy.pop_victim`) until the pool is back under its low watermark. Pure,
synchronous code: no I/O and no locks; the caller serialises calls (one event-loop thread).

Policies are data, looked up by name in :data:`POLICIES` (as diskcache looks up
``EVICTION_POLICY``). The trade-offs, measured by ``python -m benchmarks.hit_ratio``
(``benchmarks/results/hit_ratio.txt``):

``"lru"`` (:class:`LRUPolicy`)
    Exact recency. Every hit relinks the key to the MRU end (one C-level ``move_to_end``), and
    eviction never scans past pinned keys more than once. Not scan-resistant: one pass over more
    chunks than the cache holds (a backup, a ``cat`` of a big file, a listing job) evicts the whole
    hot set. A loop slightly larger than the cache hits nothing. Use it as the baseline, or when
    recency really is the signal (small caches, no scans).

``"clock"`` (:class:`ClockPolicy`)
    CLOCK / second chance (Corbató 1968, the textbook page-replacement clock): a ring and a
    referenced bit. A hit only sets the bit, and not even that when it is already set: no
    relinking, which is what makes CLOCK cheap in C kernels; in CPython all three policies' hits
    cost about the same (60-80 ns, a method call dominates). It approximates LRU, with slightly
    more hits (1-5% on the benchmark's Zipf traces), and shares its weakness: a scan clears every
    bit in one revolution and then flushes the ring. Eviction may look at up to two revolutions
    of keys when everything is referenced (bounded per call by ``max_scan``).

``"s3fifo"`` (:class:`S3FIFOPolicy`, the default)
    S3-FIFO (Yang et al., SOSP '23, "FIFO queues are all you need for cache eviction"): a small
    FIFO takes new keys, a main FIFO with 2-bit counters holds keys that proved themselves, and a
    ghost FIFO remembers keys recently evicted from the small queue so they go straight to main
    when they return. Most keys are read once (one-hit wonders) and leave through the small
    queue without touching main, so a scan cannot flush the hot set. A hit is a counter bump
    (capped at 3). It costs more metadata than the other two (a counter per key plus a ghost of
    up to ~90% of the resident count) and it adapts more slowly when the working set shifts
    abruptly (a new hot key must earn promotion). Behaves best on skewed (Zipf) traffic with
    scans mixed in, which is what an object-store gateway sees. Measured: 1-55% more hits than
    LRU on Zipf 0.8-1.2 (most at small caches and low skew), 11-19% more with scans mixed in,
    and about 82% hits on a loop 1.1x the cache, where LRU and CLOCK get none. CLOCK stays
    within 5% of LRU throughout.

Correlated references: call :meth:`~EvictionPolicy.access` once per read request per chunk, not
once per 4 KiB page. A single sequential read that touches a chunk's sixteen pages is one use of
that chunk; counting it sixteen times would make every scanned chunk look hot (LRU-K's
"correlated reference period", O'Neil et al. 1993).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Protocol, TypeVar, final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "S3FIFO_MAX_FREQ",
    "S3FIFO_PROMOTE_THRESHOLD",
    "S3FIFO_SMALL_RATIO",
    "ClockPolicy",
    "EvictionPolicy",
    "LRUPolicy",
    "S3FIFOPolicy",
    "S3FIFOStatistics",
    "make_policy",
]

K = TypeVar("K", bound=Hashable)

# ----------------------------------------------------------------------------------------------
# Tunables (one table; S3-FIFO's values are the paper's and libCacheSim's S3FIFO.c defaults)
# ----------------------------------------------------------------------------------------------

#: Name of the policy a store uses when none is configured.
DEFAULT_POLICY: Final = "s3fifo"
#: S3-FIFO small queue's target share of the resident keys; the paper chose 10% on 10 traces and
#: found it generalises.
S3FIFO_SMALL_RATIO: Final = 0.10
#: Hits a key needs while in the small queue to be promoted to main rather than evicted
#: (the paper's Algorithm 1 ``freq > 1``; libCacheSim ``move-to-main-threshold=2``). Measured
#: with benchmarks/hit_ratio.py: 1 gains under 2 points on Zipf at 10% capacity and loses 6 to
#: 16 points on loops; 2 also tolerates a store that counts one read as two hits.
S3FIFO_PROMOTE_THRESHOLD: Final = 2
#: Cap of the per-key access counter: two bits.
S3FIFO_MAX_FREQ: Final = 3


# ----------------------------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------------------------


class EvictionPolicy(Protocol[K]):
    """What the store needs from a replacement policy.

    Keys are opaque and hashable. ``can_evict`` callbacks passed to :meth:`pop_victim` must not
    call back into the policy; if one raises, the policy is left consistent and the exception
    propagates.
    """

    #: The name :data:`POLICIES` knows the policy by.
    name: ClassVar[str]

    def insert(self, key: K) -> None:
        """Record that ``key`` became resident; inserting a resident key counts as an access."""
        ...

    def access(self, key: K) -> None:
        """Record a hit on ``key``; a no-op for a key that is not resident.

        Hot path: called on every cache hit, so O(1) and allocation-free.
        """
        ...

    def remove(self, key: K) -> None:
        """Forget ``key`` dropped by other means (truncate, forget); a no-op if absent."""
        ...

    def pop_victim(self, can_evict: Callable[[K], bool], max_scan: int = 64) -> K | None:
        """Remove and return the next key to evict, in policy order.

        Keys for which ``can_evict(key)`` is false (pinned, being written back) stay resident and
        get the treatment the policy gives a referenced key, so the next call does not rescan
        them first. At most ``max_scan`` keys are examined.

        Returns:
            The evicted key, or None when the policy is empty or no victim was found within
            ``max_scan`` keys. None is not "nothing is evictable": the scan has moved the hand
            on, and calling again continues where it stopped.
        """
        ...

    def __len__(self) -> int: ...

    def __contains__(self, key: object) -> bool: ...

    def keys(self) -> Iterator[K]:
        """Iterate over the resident keys (a snapshot; order is policy-specific)."""
        ...

    def check_invariants(self) -> None:
        """Raise AssertionError if the internal structures disagree (for the stateful tests)."""
        ...


# ----------------------------------------------------------------------------------------------
# LRU
# ----------------------------------------------------------------------------------------------


@final
class LRUPolicy(Generic[K]):
    """Least recently used: evict the key whose last use is oldest.

    One ``OrderedDict`` in recency order, coldest first. A skipped (unevictable) key is moved to
    the MRU end, as a hit would move it. See the module docstring for the trade-off: exact
    recency, cheap O(1) hits, no scan resistance.

    Complexity: insert, access, remove O(1); pop_victim O(s), s <= min(max_scan, n) keys
    examined; memory one ordered-dict entry per key.
    """

    __slots__ = ("_order",)

    name: ClassVar[str] = "lru"

    def __init__(self) -> None:
        # Resident keys, least recently used first; values unused.
        # Invariant: every key appears once (an OrderedDict guarantees it).
        self._order: OrderedDict[K, None] = OrderedDict()

    def insert(self, key: K) -> None:
        """Make ``key`` resident and most recently used. Complexity: O(1)."""
        order = self._order
        if key in order:
            order.move_to_end(key)
        else:
            order[key] = None

    def access(self, key: K) -> None:
        """Mark ``key`` most recently used; no-op if not resident.

        Hot path: one C-level relink, no allocation on a hit (about 60 ns in CPython 3.11); an
        unknown key pays for a raised KeyError (about 200 ns), which the store never causes
        because it calls access() only on hits.
        Complexity: O(1).
        """
        # Not `contextlib.suppress`: a context manager per hit costs more than the relink, and
        # `try` is free on the hit path (CPython 3.11+); only an unknown key pays for the raise.
        try:
            self._order.move_to_end(key)
        except KeyError:
            return  # Unknown key: a no-op by contract.

    def remove(self, key: K) -> None:
        """Forget ``key``; no-op if absent. Complexity: O(1)."""
        self._order.pop(key, None)

    def pop_victim(self, can_evict: Callable[[K], bool], max_scan: int = 64) -> K | None:
        """Evict the least recently used evictable key.

        Skipped keys move to the MRU end, so each key is examined at most once per call.
        Complexity: O(s), s <= min(max_scan, n).
        """
        order = self._order
        for _ in range(min(max_scan, len(order))):
            key = next(iter(order))
            if can_evict(key):
                del order[key]
                return key
            order.move_to_end(key)
        return None

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._order

    def keys(self) -> Iterator[K]:
        """Resident keys, least recently used first (a snapshot). Complexity: O(n)."""
        return iter(tuple(self._order))

    def check_invariants(self) -> None:
        """Check the recency list. Complexity: O(n)."""
        assert all(value is None for value in self._order.values())


# ----------------------------------------------------------------------------------------------
# CLOCK
# ----------------------------------------------------------------------------------------------


@final
class ClockPolicy(Generic[K]):
    """CLOCK (second chance): a ring of keys with a referenced bit each.

    The ring is an ``OrderedDict`` whose first key is under the hand; "advancing past" a key
    moves it to the end, which is the position just behind the hand (FIFO-reinsertion, which is
    CLOCK without a fixed-size array). New keys enter behind the hand with the bit clear, as
    libCacheSim's Clock does, so a key read once is evicted on the hand's first visit.

    A hit sets the bit. The hand clears a set bit and moves on; it evicts the first key whose bit
    is clear and that ``can_evict`` allows. An unevictable key is passed over (with its bit clear,
    as any key the hand passes). See the module docstring for the trade-off: hits that never
    relink, approximate recency, no scan resistance.

    Complexity: insert, access, remove O(1); pop_victim O(s), s <= min(max_scan, 2n) keys
    examined (two revolutions when every bit is set); memory one ordered-dict entry per key.
    """

    __slots__ = ("_ring",)

    name: ClassVar[str] = "clock"

    def __init__(self) -> None:
        # Key -> referenced bit, in hand order (the hand is at the first key).
        # Invariant: all(isinstance(bit, bool) for bit in self._ring.values()).
        self._ring: OrderedDict[K, bool] = OrderedDict()

    def insert(self, key: K) -> None:
        """Add ``key`` behind the hand, unreferenced; set its bit if resident. Complexity: O(1)."""
        ring = self._ring
        if key in ring:
            ring[key] = True
        else:
            ring[key] = False

    def access(self, key: K) -> None:
        """Set the referenced bit of ``key``; no-op if not resident.

        Hot path: one lookup, and a store only when the bit was clear (a hot key's bit usually
        is set already). No allocation.
        Complexity: O(1).
        """
        ring = self._ring
        if ring.get(key) is False:
            ring[key] = True

    def remove(self, key: K) -> None:
        """Forget ``key``; no-op if absent. Complexity: O(1)."""
        self._ring.pop(key, None)

    def pop_victim(self, can_evict: Callable[[K], bool], max_scan: int = 64) -> K | None:
        """Advance the hand to the first unreferenced evictable key and evict it.

        Stops early after a full revolution of unevictable, unreferenced keys (nothing can be
        evicted), so a fully pinned ring costs one ``can_evict`` call per key, not ``max_scan``.
        Complexity: O(s), s <= min(max_scan, 2n).
        """
        ring = self._ring
        n = len(ring)
        # Consecutive unevictable keys passed since the hand last changed a bit. When it
        # reaches n, the last n keys examined were every key, all clear and all unevictable.
        skipped = 0
        for _ in range(max_scan):
            if skipped >= n:
                return None
            key = next(iter(ring))
            if ring[key]:
                ring[key] = False
                ring.move_to_end(key)
                skipped = 0
            elif can_evict(key):
                del ring[key]
                return key
            else:
                ring.move_to_end(key)
                skipped += 1
        return None

    def __len__(self) -> int:
        return len(self._ring)

    def __contains__(self, key: object) -> bool:
        return key in self._ring

    def keys(self) -> Iterator[K]:
        """Resident keys in hand order (a snapshot). Complexity: O(n)."""
        return iter(tuple(self._ring))

    def check_invariants(self) -> None:
        """Check the referenced bits. Complexity: O(n)."""
        assert all(type(bit) is bool for bit in self._ring.values())


# ----------------------------------------------------------------------------------------------
# S3-FIFO
# ----------------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class S3FIFOStatistics:
    """Queue lengths of an :class:`S3FIFOPolicy`, for metrics and tests."""

    small: int
    main: int
    ghost: int


@final
class S3FIFOPolicy(Generic[K]):
    """S3-FIFO: small, main and ghost FIFO queues with 2-bit access counters.

    After Yang et al., SOSP '23, and libCacheSim's ``S3FIFO.c``:

    - A new key enters the small queue S with counter 0, unless the ghost queue G remembers it,
      in which case it enters the main queue M directly.
    - A hit increments the key's counter, capped at :data:`S3FIFO_MAX_FREQ` (3).
    - Evicting from S: the oldest key moves to M (counter reset) if it was hit at least
      :data:`S3FIFO_PROMOTE_THRESHOLD` times, else it is evicted and remembered in G.
    - Evicting from M: FIFO-reinsertion; the oldest key with a non-zero counter is reinserted with
      the counter decremented, the first with counter 0 is evicted.

    Adaptations (the paper's cache knows its capacity; this policy does not, and it has pinning):

    - S is sized against the *current* resident count n: the victim comes from S while
      ``len(S) >= S3FIFO_SMALL_RATIO * n`` (or M is empty), else from M. The store evicts only
      when the pool is full, so n tracks the capacity in keys.
    - G holds at most as many keys as M's target size, ``n - int(S3FIFO_SMALL_RATIO * n)``
      (the paper: "G stores the same number of entries as M").
    - A key ``can_evict`` refuses gets a referenced key's treatment: in S it is promoted to M, in
      M it is reinserted at the back. Once a full revolution of M has been refused since M last
      changed (a promotion, ghost hit, decrement, eviction or removal), victims come from S even
      below its target share, so a mostly pinned M cannot starve eviction (not in the paper,
      which has no pins).
    - :meth:`remove` also forgets a ghost entry: the key's data is gone (truncate, forget), so
      its history should not buy it a place in M.

    Trade-off (see the module docstring): scan-resistant and filters one-hit wonders, at the cost
    of a counter per key and a ghost of up to ~0.9 n keys.

    Complexity: access O(1); insert, remove O(1) amortized (ghost trimming); pop_victim O(s)
    amortized, s <= max_scan keys examined; memory three dict entries per resident key at most
    (queue, counter, ghost), i.e. about three times LRU's.
    """

    __slots__ = ("_freq", "_ghost", "_main", "_main_skips", "_promote", "_ratio", "_small")

    name: ClassVar[str] = "s3fifo"

    def __init__(
        self,
        small_ratio: float = S3FIFO_SMALL_RATIO,
        promote_threshold: int = S3FIFO_PROMOTE_THRESHOLD,
    ) -> None:
        """Create an empty policy.

        Args:
            small_ratio: the small queue's target share of the resident keys, in (0, 1).
            promote_threshold: hits in S needed for promotion to M, 1 to S3FIFO_MAX_FREQ.

        Raises:
            ValueError: a parameter is out of range.
        """
        if not 0.0 < small_ratio < 1.0:
            raise ValueError(f"small_ratio must be in (0, 1), not {small_ratio!r}")
        if not 1 <= promote_threshold <= S3FIFO_MAX_FREQ:
            raise ValueError(
                f"promote_threshold must be in [1, {S3FIFO_MAX_FREQ}], not {promote_threshold!r}"
            )
        # Immutable after __init__.
        self._ratio = small_ratio
        self._promote = promote_threshold
        # Resident key -> access counter.
        # Invariant: self._freq.keys() == self._small.keys() | self._main.keys() (disjoint).
        # Invariant: all(0 <= f <= S3FIFO_MAX_FREQ for f in self._freq.values()).
        self._freq: dict[K, int] = {}
        # The FIFO queues, oldest first; values unused.
        self._small: OrderedDict[K, None] = OrderedDict()
        self._main: OrderedDict[K, None] = OrderedDict()
        # Keys recently evicted from S, oldest first; values are True (so pop() tests membership).
        # Invariant: not (self._ghost.keys() & self._freq.keys()).
        # Invariant: len(self._ghost) <= self._ghost_limit().
        self._ghost: OrderedDict[K, bool] = OrderedDict()
        # Keys of M passed over as unevictable since M last changed; >= len(M) means "M looks
        # fully pinned, take the victim from S".
        # Invariant: self._main_skips >= 0.
        self._main_skips = 0

    def _ghost_limit(self) -> int:
        """M's target size, which bounds G. Complexity: O(1)."""
        n = len(self._freq)
        return n - int(n * self._ratio)

    def _trim_ghost(self) -> None:
        """Drop the oldest ghosts beyond the limit. Complexity: O(1) amortized."""
        ghost = self._ghost
        limit = self._ghost_limit()
        while len(ghost) > limit:
            ghost.popitem(last=False)

    def insert(self, key: K) -> None:
        """Make ``key`` resident: into M if G remembers it, else into S.

        Inserting a resident key counts as an access.
        Complexity: O(1).
        """
        freq = self._freq
        f = freq.get(key)
        if f is not None:
            if f < S3FIFO_MAX_FREQ:
                freq[key] = f + 1
            return
        freq[key] = 0
        if self._ghost.pop(key, False):
            self._main[key] = None
            self._main_skips = 0
        else:
            self._small[key] = None

    def access(self, key: K) -> None:
        """Count a hit on ``key`` (capped at 3); no-op if not resident.

        Hot path: one lookup and at most one store of a small int (cached, no allocation); the
        queues are not touched, which is S3-FIFO's point (a hit is an increment, not a relink).
        Complexity: O(1).
        """
        freq = self._freq
        f = freq.get(key)
        if f is not None and f < 3:  # S3FIFO_MAX_FREQ, inlined: a global load costs more here.
            freq[key] = f + 1

    def remove(self, key: K) -> None:
        """Forget ``key`` (resident or ghost); no-op if absent. Complexity: O(1) amortized."""
        if self._freq.pop(key, None) is None:
            self._ghost.pop(key, None)
            return
        if key in self._small:
            del self._small[key]
        else:
            del self._main[key]
            self._main_skips = 0
        self._trim_ghost()

    def pop_victim(self, can_evict: Callable[[K], bool], max_scan: int = 64) -> K | None:
        """Evict from S if it is over its share (or M is empty or looks pinned), else from M.

        As in the paper, a pass over S continues (promoting) until it evicts or S is empty, then
        falls through to M; a pass over M continues (reinserting) until it evicts, or until M
        looks fully pinned, then falls through to S. Every key looked at counts against
        ``max_scan``.
        Complexity: O(s) amortized, s <= max_scan.
        """
        freq = self._freq
        small = self._small
        main = self._main
        promote = self._promote
        from_small = bool(small) and (
            not main or len(small) >= self._ratio * len(freq) or self._main_skips >= len(main)
        )
        budget = max_scan
        # Consecutive refusals in M during this call since M last changed; reaching len(M)
        # means every key of M was refused just now (self._main_skips may be stale: hits
        # between calls do not reset it).
        skipped = 0
        while budget > 0:
            # Switching queues examines no key and happens at most once between two
            # examinations (only when the current queue is empty, or after a skip in M).
            if from_small:
                if not small:
                    if not main:
                        return None
                    from_small = False
                    continue
                key = next(iter(small))
                budget -= 1
                if freq[key] >= promote or not can_evict(key):
                    # Referenced (or unevictable): promote to M with the counter cleared.
                    del small[key]
                    main[key] = None
                    freq[key] = 0
                    self._main_skips = skipped = 0
                    continue
                del small[key]
                del freq[key]
                self._ghost[key] = True
                self._trim_ghost()
                return key
            if not main:
                if not small:
                    return None
                from_small = True
                continue
            key = next(iter(main))
            budget -= 1
            f = freq[key]
            if f:
                # Referenced: reinsert with one bit fewer (2-bit CLOCK).
                freq[key] = f - 1
                main.move_to_end(key)
                self._main_skips = skipped = 0
            elif can_evict(key):
                del main[key]
                del freq[key]
                self._main_skips = 0
                self._trim_ghost()
                return key
            else:
                main.move_to_end(key)
                self._main_skips += 1
                skipped += 1
                if small and self._main_skips >= len(main):
                    from_small = True
                elif skipped >= len(main):
                    return None  # S is empty and all of M refused: nothing is evictable now.
        return None

    def __len__(self) -> int:
        return len(self._freq)

    def __contains__(self, key: object) -> bool:
        return key in self._freq

    def keys(self) -> Iterator[K]:
        """Resident keys: S oldest first, then M oldest first (a snapshot). Complexity: O(n)."""
        return iter((*self._small, *self._main))

    def statistics(self) -> S3FIFOStatistics:
        """Current queue lengths. Complexity: O(1)."""
        return S3FIFOStatistics(len(self._small), len(self._main), len(self._ghost))

    def check_invariants(self) -> None:
        """Check the queues, counters and ghost against each other. Complexity: O(n)."""
        small = self._small.keys()
        main = self._main.keys()
        assert not (small & main), "a key is in both S and M"
        assert len(small) + len(main) == len(self._freq)
        assert (small | main) == self._freq.keys()
        assert all(0 <= f <= S3FIFO_MAX_FREQ for f in self._freq.values())
        assert not (self._ghost.keys() & self._freq.keys()), "a resident key is a ghost"
        assert len(self._ghost) <= self._ghost_limit()
        assert self._main_skips >= 0


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------

#: Policy factories by name (diskcache's ``EVICTION_POLICY``). Each call makes a fresh, empty
#: policy with the default tunables.
POLICIES: Final[dict[str, Callable[[], EvictionPolicy[Any]]]] = {
    LRUPolicy.name: LRUPolicy,
    ClockPolicy.name: ClockPolicy,
    S3FIFOPolicy.name: S3FIFOPolicy,
}


def make_policy(name: str) -> EvictionPolicy[Any]:
    """Create an empty policy by name (see :data:`POLICIES`).

    Raises:
        ValueError: no policy has that name; the message lists the known names.
    """
    try:
        factory = POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown eviction policy {name!r}; known policies: {known}") from None
    return factory()
