"""Tests for aiocache_inode.policies: a contract suite over every policy, then specifics."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from aiocache_inode.policies import (
    DEFAULT_POLICY,
    POLICIES,
    S3FIFO_MAX_FREQ,
    ClockPolicy,
    EvictionPolicy,
    LRUPolicy,
    S3FIFOPolicy,
    S3FIFOStatistics,
    make_policy,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

POLICY_NAMES = sorted(POLICIES)
# A small key space, so inserts, hits, removals and ghost hits collide often.
KEYS = st.integers(min_value=0, max_value=15)


def _stateful_settings() -> settings:
    """The loaded profile, with enough steps per run to cycle keys through every queue."""
    return settings(stateful_step_count=max(settings().stateful_step_count, 100))


def _recorder(answer: bool) -> tuple[list[int], Callable[[int], bool]]:
    """A ``can_evict`` that records what it was asked and always gives ``answer``."""
    asked: list[int] = []

    def can_evict(key: int) -> bool:
        asked.append(key)
        return answer

    return asked, can_evict


def _evict_all(policy: EvictionPolicy[int]) -> list[int]:
    """Pop every key with nothing pinned, in the order the policy gives them."""
    victims: list[int] = []
    while len(policy):
        victim = policy.pop_victim(lambda _key: True)
        if victim is not None:
            victims.append(victim)
    return victims


def simulate(policy: EvictionPolicy[int], trace: Iterable[int], capacity: int) -> list[bool]:
    """Drive ``policy`` as a cache of ``capacity`` keys would; return hit or miss per request.

    Insert then evict, as the store does (a fill lands, then the evictor restores the budget).
    """
    resident: set[int] = set()
    hits: list[bool] = []
    for key in trace:
        if key in resident:
            policy.access(key)
            hits.append(True)
            continue
        hits.append(False)
        policy.insert(key)
        resident.add(key)
        while len(resident) > capacity:
            victim = policy.pop_victim(lambda _key: True)
            if victim is not None:
                resident.remove(victim)
    return hits


# ----------------------------------------------------------------------------------------------
# The contract, over every policy
# ----------------------------------------------------------------------------------------------


class PolicyContractMachine(RuleBasedStateMachine):
    """Every policy against a plain set of resident keys (assumed perfect)."""

    policy_name: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.policy: EvictionPolicy[int] = make_policy(self.policy_name)
        self.model: set[int] = set()

    @rule(key=KEYS)
    def insert(self, key: int) -> None:
        note(f"insert({key})")
        self.policy.insert(key)
        self.model.add(key)

    @rule(key=KEYS)
    def access(self, key: int) -> None:
        note(f"access({key}) resident={key in self.model}")
        self.policy.access(key)

    @rule(key=KEYS)
    def remove(self, key: int) -> None:
        note(f"remove({key}) resident={key in self.model}")
        self.policy.remove(key)
        self.model.discard(key)

    @rule(pinned=st.frozensets(KEYS), max_scan=st.integers(min_value=0, max_value=100))
    def pop_victim(self, pinned: frozenset[int], max_scan: int) -> None:
        asked: list[int] = []

        def can_evict(key: int) -> bool:
            # The policy only ever asks about resident keys.
            assert key in self.model, f"can_evict({key}) on a non-resident key"
            asked.append(key)
            return key not in pinned

        victim = self.policy.pop_victim(can_evict, max_scan)
        note(f"pop_victim(pinned={sorted(pinned)}, max_scan={max_scan}) -> {victim}")
        assert len(asked) <= max_scan, "examined more than max_scan keys"
        if victim is None:
            # Every policy finds a victim within a few revolutions: S3-FIFO's worst case is
            # every key in S promoted, then three passes of M decrementing 2-bit counters.
            if self.model - pinned:
                assert max_scan < 5 * len(self.model) + 1, "a victim existed but none returned"
            return
        assert victim in self.model, "returned a non-resident key"
        assert victim not in pinned, "returned a key can_evict refused"
        assert victim in asked, "returned a key without asking can_evict"
        self.model.remove(victim)

    @rule(pinned=st.frozensets(KEYS))
    def pop_until_found(self, pinned: frozenset[int]) -> None:
        """The store's loop: a None is not final; calling again makes progress."""
        evictable = self.model - pinned
        for _ in range(5 * len(self.model) + 1):
            victim = self.policy.pop_victim(lambda key: key not in pinned, 1)
            if victim is not None:
                assert victim in evictable
                self.model.remove(victim)
                note(f"pop_until_found(pinned={sorted(pinned)}) -> {victim}")
                return
        assert not evictable, "one-key scans never reached an evictable key"

    @invariant()
    def resident_set_matches_model(self) -> None:
        assert set(self.policy.keys()) == self.model
        assert len(list(self.policy.keys())) == len(self.model)
        assert len(self.policy) == len(self.model)
        for key in range(16):
            assert (key in self.policy) == (key in self.model)

    @invariant()
    def internal_invariants_hold(self) -> None:
        self.policy.check_invariants()


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_policy_contract(name: str) -> None:
    machine = type(f"PolicyContract_{name}", (PolicyContractMachine,), {"policy_name": name})
    run_state_machine_as_test(machine, settings=_stateful_settings())


class LRUOrderMachine(RuleBasedStateMachine):
    """LRU against an exact recency list (coldest first)."""

    def __init__(self) -> None:
        super().__init__()
        self.policy: LRUPolicy[int] = LRUPolicy()
        self.model: list[int] = []

    def _touch(self, key: int) -> None:
        self.model.remove(key)
        self.model.append(key)

    @rule(key=KEYS)
    def insert(self, key: int) -> None:
        note(f"insert({key})")
        self.policy.insert(key)
        if key in self.model:
            self._touch(key)
        else:
            self.model.append(key)

    @rule(key=KEYS)
    def access(self, key: int) -> None:
        note(f"access({key})")
        self.policy.access(key)
        if key in self.model:
            self._touch(key)

    @rule(key=KEYS)
    def remove(self, key: int) -> None:
        note(f"remove({key})")
        self.policy.remove(key)
        if key in self.model:
            self.model.remove(key)

    @precondition(lambda self: bool(self.model))
    @rule(pinned=st.frozensets(KEYS), max_scan=st.integers(min_value=0, max_value=20))
    def pop_victim(self, pinned: frozenset[int], max_scan: int) -> None:
        expected = None
        for _ in range(min(max_scan, len(self.model))):
            key = self.model[0]
            if key not in pinned:
                expected = self.model.pop(0)
                break
            self._touch(key)  # a skipped key is treated as referenced
        victim = self.policy.pop_victim(lambda key: key not in pinned, max_scan)
        note(f"pop_victim(pinned={sorted(pinned)}, max_scan={max_scan}) -> {victim}")
        assert victim == expected

    @invariant()
    def order_matches_model(self) -> None:
        assert list(self.policy.keys()) == self.model
        self.policy.check_invariants()


def test_lru_order_matches_model() -> None:
    run_state_machine_as_test(LRUOrderMachine, settings=_stateful_settings())


# ----------------------------------------------------------------------------------------------
# Small contract cases, over every policy
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", POLICY_NAMES)
class TestEveryPolicy:
    def test_empty(self, name: str) -> None:
        policy = make_policy(name)
        assert len(policy) == 0
        assert list(policy.keys()) == []
        assert policy.pop_victim(lambda _key: True) is None
        policy.check_invariants()

    def test_unknown_keys_are_no_ops(self, name: str) -> None:
        policy: EvictionPolicy[int] = make_policy(name)
        policy.insert(1)
        policy.access(2)
        policy.remove(3)
        assert list(policy.keys()) == [1]
        assert 2 not in policy
        policy.check_invariants()

    def test_reinsert_keeps_one_entry(self, name: str) -> None:
        policy: EvictionPolicy[int] = make_policy(name)
        for _ in range(5):
            policy.insert(7)
        assert len(policy) == 1
        assert _evict_all(policy) == [7]

    def test_max_scan_zero_examines_nothing(self, name: str) -> None:
        policy: EvictionPolicy[int] = make_policy(name)
        policy.insert(1)

        def never_asked(key: int) -> bool:
            raise AssertionError(f"asked about {key}")

        assert policy.pop_victim(never_asked, max_scan=0) is None
        assert 1 in policy

    def test_all_pinned_returns_none_and_keeps_keys(self, name: str) -> None:
        policy: EvictionPolicy[int] = make_policy(name)
        for key in range(10):
            policy.insert(key)
        for _ in range(5):
            assert policy.pop_victim(lambda _key: False, max_scan=1000) is None
        assert set(policy.keys()) == set(range(10))
        policy.check_invariants()

    def test_fully_pinned_scan_asks_each_key_at_most_twice(self, name: str) -> None:
        policy: EvictionPolicy[int] = make_policy(name)
        for key in range(10):
            policy.insert(key)
        asked, refuse = _recorder(False)
        assert policy.pop_victim(refuse, max_scan=1000) is None
        assert len(asked) <= 2 * 10

    def test_skipped_keys_are_not_rescanned_first(self, name: str) -> None:
        policy: EvictionPolicy[int] = make_policy(name)
        for key in range(100):
            policy.insert(key)
        first, refuse_first = _recorder(False)
        assert policy.pop_victim(refuse_first, max_scan=10) is None
        second, refuse_second = _recorder(False)
        assert policy.pop_victim(refuse_second, max_scan=10) is None
        assert first
        assert second
        assert not set(first) & set(second)

    def test_can_evict_raising_leaves_policy_consistent(self, name: str) -> None:
        policy: EvictionPolicy[int] = make_policy(name)
        for key in range(20):
            policy.insert(key)

        def boom(key: int) -> bool:
            raise RuntimeError(key)

        with pytest.raises(RuntimeError):
            policy.pop_victim(boom)
        policy.check_invariants()
        assert set(policy.keys()) == set(range(20))

    def test_keys_is_a_snapshot(self, name: str) -> None:
        policy: EvictionPolicy[int] = make_policy(name)
        for key in range(5):
            policy.insert(key)
        snapshot = policy.keys()
        for key in snapshot:
            policy.remove(key)
        assert len(policy) == 0

    def test_tuple_keys(self, name: str) -> None:
        policy: EvictionPolicy[tuple[int, int]] = make_policy(name)
        policy.insert((1, 0))
        policy.insert((1, 1))
        policy.access((1, 0))
        assert (1, 1) in policy
        assert sorted(policy.keys()) == [(1, 0), (1, 1)]

    def test_slots_and_name(self, name: str) -> None:
        policy = make_policy(name)
        assert type(policy).name == name
        assert not hasattr(policy, "__dict__")


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------


def test_policies_table() -> None:
    assert {"lru", "s3fifo", "clock"} <= set(POLICIES)
    assert DEFAULT_POLICY in POLICIES
    assert make_policy("lru") is not make_policy("lru")
    assert isinstance(make_policy("lru"), LRUPolicy)
    assert isinstance(make_policy("clock"), ClockPolicy)
    assert isinstance(make_policy("s3fifo"), S3FIFOPolicy)


def test_make_policy_unknown_name_lists_names() -> None:
    with pytest.raises(ValueError, match=r"'arc'.*clock, lru, s3fifo"):
        make_policy("arc")


def test_classes_satisfy_the_protocol() -> None:
    # Checked by mypy: each assignment fails type-checking if a class drifts from the protocol.
    policies: list[EvictionPolicy[int]] = [LRUPolicy(), ClockPolicy(), S3FIFOPolicy()]
    assert [p.name for p in policies] == ["lru", "clock", "s3fifo"]


# ----------------------------------------------------------------------------------------------
# LRU and CLOCK specifics
# ----------------------------------------------------------------------------------------------


def test_lru_evicts_least_recently_used() -> None:
    policy: LRUPolicy[int] = LRUPolicy()
    for key in range(4):
        policy.insert(key)
    policy.access(0)
    policy.insert(1)  # re-insert counts as an access
    assert _evict_all(policy) == [2, 3, 0, 1]


def test_lru_skipped_key_moves_to_mru_end() -> None:
    policy: LRUPolicy[int] = LRUPolicy()
    for key in range(3):
        policy.insert(key)
    assert policy.pop_victim(lambda key: key != 0) == 1
    assert list(policy.keys()) == [2, 0]


def test_clock_second_chance() -> None:
    policy: ClockPolicy[int] = ClockPolicy()
    for key in range(4):
        policy.insert(key)
    policy.access(0)
    policy.access(2)
    # The hand clears 0, evicts 1; then 2 is cleared, 3 evicted; then 0 and 2, in ring order.
    assert _evict_all(policy) == [1, 3, 0, 2]


def test_clock_reinsert_sets_referenced_bit() -> None:
    policy: ClockPolicy[int] = ClockPolicy()
    policy.insert(0)
    policy.insert(1)
    policy.insert(0)
    assert policy.pop_victim(lambda _key: True) == 1


def test_clock_pinned_key_passed_over() -> None:
    policy: ClockPolicy[int] = ClockPolicy()
    for key in range(3):
        policy.insert(key)
    assert policy.pop_victim(lambda key: key != 0) == 1
    assert list(policy.keys()) == [2, 0]


# ----------------------------------------------------------------------------------------------
# S3-FIFO specifics
# ----------------------------------------------------------------------------------------------


def _queues(policy: S3FIFOPolicy[int]) -> S3FIFOStatistics:
    policy.check_invariants()
    return policy.statistics()


class TestS3FIFO:
    def test_new_keys_enter_small(self) -> None:
        policy: S3FIFOPolicy[int] = S3FIFOPolicy()
        for key in range(10):
            policy.insert(key)
        assert _queues(policy) == S3FIFOStatistics(small=10, main=0, ghost=0)

    def test_one_hit_wonder_goes_to_ghost_and_returns_to_main(self) -> None:
        policy: S3FIFOPolicy[int] = S3FIFOPolicy()
        for key in range(20):
            policy.insert(key)
        assert policy.pop_victim(lambda _key: True) == 0
        assert _queues(policy) == S3FIFOStatistics(small=19, main=0, ghost=1)
        policy.insert(0)  # a ghost hit: straight into main
        assert _queues(policy) == S3FIFOStatistics(small=19, main=1, ghost=0)

    def test_frequent_small_key_is_promoted(self) -> None:
        policy: S3FIFOPolicy[int] = S3FIFOPolicy()
        for key in range(20):
            policy.insert(key)
        policy.access(0)
        policy.insert(0)  # re-insert counts as an access: two hits
        assert policy.pop_victim(lambda _key: True) == 1
        assert _queues(policy) == S3FIFOStatistics(small=18, main=1, ghost=1)

    def test_single_hit_is_not_enough_for_promotion(self) -> None:
        policy: S3FIFOPolicy[int] = S3FIFOPolicy()
        for key in range(20):
            policy.insert(key)
        policy.access(0)
        assert policy.pop_victim(lambda _key: True) == 0

    def test_promote_threshold_is_tunable(self) -> None:
        policy: S3FIFOPolicy[int] = S3FIFOPolicy(promote_threshold=1)
        for key in range(20):
            policy.insert(key)
        policy.access(0)
        assert policy.pop_victim(lambda _key: True) == 1

    def test_pinned_small_key_is_promoted(self) -> None:
        policy: S3FIFOPolicy[int] = S3FIFOPolicy()
        for key in range(20):
            policy.insert(key)
        assert policy.pop_victim(lambda key: key != 0) == 1
        assert _queues(policy).main == 1

    def test_main_counter_caps_at_three(self) -> None:
        policy: S3FIFOPolicy[int] = S3FIFOPolicy()
        for key in range(20):
            policy.insert(key)
        policy.pop_victim(lambda _key: True)
        policy.insert(0)  # ghost hit: 0 is in main with counter 0
        for _ in range(10):
            policy.access(0)
        # Empty S by evicting everything else, leaving 0 alone in main.
        for key in range(1, 20):
            policy.remove(key)
        assert _queues(policy) == S3FIFOStatistics(small=0, main=1, ghost=0)
        asked, allow = _recorder(True)
        assert policy.pop_victim(allow) == 0
        # Three decrements (counter capped at S3FIFO_MAX_FREQ) before the key is asked about.
        assert asked == [0]
        assert S3FIFO_MAX_FREQ == 3

    def test_small_queue_share_once_main_fills(self) -> None:
        # Reuse fills M through promotions and ghost hits; then S holds its 10% share.
        policy: S3FIFOPolicy[int] = S3FIFOPolicy()
        rng = random.Random(7)
        simulate(policy, [rng.randrange(1000) for _ in range(20_000)], capacity=200)
        stats = _queues(policy)
        assert stats.small + stats.main == 200
        assert 0.1 * 200 - 1 <= stats.small <= 0.1 * 200 + 1
        assert stats.ghost == 200 - 20

    def test_small_queue_takes_what_main_does_not_need(self) -> None:
        # Only 50 keys are reused: M holds them, and S (evicted first) the rest of the cache,
        # as in the paper, where M grows only by promotion and ghost hits.
        policy: S3FIFOPolicy[int] = S3FIFOPolicy()
        rng = random.Random(7)
        trace = [rng.randrange(50) if rng.random() < 0.7 else 1000 + i for i in range(5000)]
        simulate(policy, trace, capacity=200)
        assert _queues(policy) == S3FIFOStatistics(small=150, main=50, ghost=180)

    def test_ghost_bounded_by_main_target(self) -> None:
        policy: S3FIFOPolicy[int] = S3FIFOPolicy()
        simulate(policy, range(10_000), capacity=100)
        assert _queues(policy).ghost <= 90
        for key in list(policy.keys())[:60]:
            policy.remove(key)
        assert _queues(policy).ghost <= 40 - int(40 * 0.1)

    def test_remove_forgets_ghost(self) -> None:
        policy: S3FIFOPolicy[int] = S3FIFOPolicy()
        for key in range(20):
            policy.insert(key)
        assert policy.pop_victim(lambda _key: True) == 0
        policy.remove(0)
        policy.insert(0)
        assert _queues(policy) == S3FIFOStatistics(small=20, main=0, ghost=0)

    def test_pinned_main_does_not_starve_small(self) -> None:
        policy: S3FIFOPolicy[int] = S3FIFOPolicy()
        for key in range(100):
            policy.insert(key)
            policy.access(key)
            policy.access(key)
        for key in range(100, 110):
            policy.insert(key)
        # One pass promotes 0..99 to main, then evicts 100.
        assert policy.pop_victim(lambda _key: True, max_scan=1000) == 100
        assert _queues(policy) == S3FIFOStatistics(small=9, main=100, ghost=1)
        # Main is pinned and S is under its 10% share: eviction must still reach S.
        victims = [policy.pop_victim(lambda key: key >= 100, max_scan=64) for _ in range(4)]
        assert 101 in victims
        policy.check_invariants()

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"small_ratio": 0.0}, "small_ratio"),
            ({"small_ratio": 1.0}, "small_ratio"),
            ({"promote_threshold": 0}, "promote_threshold"),
            ({"promote_threshold": 4}, "promote_threshold"),
        ],
    )
    def test_bad_tunables(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            S3FIFOPolicy(**kwargs)


# ----------------------------------------------------------------------------------------------
# Scan resistance
# ----------------------------------------------------------------------------------------------


def _hot_hit_ratio_after_scan(factory: Callable[[], EvictionPolicy[int]]) -> float:
    """Warm a hot set, run one long scan of cold keys, then measure one pass over the hot set."""
    rng = random.Random(2023)
    capacity = 200
    hot = list(range(100))
    trace: list[int] = list(range(10_000, 10_000 + 2 * capacity))  # fill with cold keys
    for _ in range(20):  # the hot set, accessed repeatedly in random order
        rng.shuffle(hot)
        trace += hot
    trace += range(20_000, 20_000 + 10 * capacity)  # one long scan, never reused
    rng.shuffle(hot)
    trace += hot  # the measured pass
    hits = simulate(factory(), trace, capacity)
    measured = hits[-len(hot) :]
    return sum(measured) / len(measured)


def test_s3fifo_is_scan_resistant_and_lru_is_not() -> None:
    s3fifo = _hot_hit_ratio_after_scan(S3FIFOPolicy)
    lru = _hot_hit_ratio_after_scan(LRUPolicy)
    assert s3fifo >= 0.9
    assert lru <= 0.1
    assert s3fifo > lru


def test_clock_is_not_scan_resistant() -> None:
    # Documented trade-off: a scan clears every bit in one revolution, then flushes the ring.
    assert _hot_hit_ratio_after_scan(ClockPolicy) <= 0.1
