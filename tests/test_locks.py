"""Tests for ``aiocache_inode.locks.RWLock`` on asyncio and trio.

Unit tests per promise (exclusivity, writer preference, reader batches, FIFO writers, the
``*_nowait`` twins, ownership, cancellation, checkpoints, statistics), then a Hypothesis
``RuleBasedStateMachine`` that drives real tasks through a blocking portal and compares every
step with a plain model of the scheduling policy.
"""

from __future__ import annotations

import dataclasses
import random
from contextlib import ExitStack
from typing import TYPE_CHECKING, Literal

import anyio
import pytest
from anyio import CancelScope, create_task_group, fail_after, wait_all_tasks_blocked
from anyio.from_thread import start_blocking_portal
from anyio.lowlevel import checkpoint
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from aiocache_inode.errors import WouldBlock
from aiocache_inode.locks import RWLock, RWLockStatistics

if TYPE_CHECKING:
    from anyio import TaskInfo
    from anyio.from_thread import BlockingPortal

Kind = Literal["r", "w"]
State = Literal["new", "waiting", "holding", "done"]


class Actor:
    """A task that takes one side of the lock, holds it until released or cancelled, then exits.

    ``state`` walks new -> waiting -> holding -> done (or waiting -> done when cancelled while
    queued). ``log`` records the order in which actors got the lock.
    """

    def __init__(self, lock: RWLock, name: str, kind: Kind, log: list[str]) -> None:
        self.lock = lock
        self.name = name
        self.kind = kind
        self.log = log
        self.state: State = "new"
        self.scope = CancelScope()
        self.gate = anyio.Event()
        self.task: TaskInfo | None = None
        # Set by the driver: cancel this scope in the same step as our release.
        self.then_cancel: CancelScope | None = None

    def release(self) -> None:
        self.gate.set()

    async def run(self) -> None:
        self.task = anyio.get_current_task()
        try:
            with self.scope:
                self.state = "waiting"
                if self.kind == "r":
                    await self.lock.acquire_read()
                else:
                    await self.lock.acquire_write()
                self.state = "holding"
                self.log.append(self.name)
                try:
                    await self.gate.wait()
                finally:
                    # The release and the cancellation of another waiter happen in one
                    # synchronous step: the "granted while cancelled" race.
                    if self.kind == "r":
                        self.lock.release_read()
                    else:
                        self.lock.release_write()
                    if self.then_cancel is not None:
                        self.then_cancel.cancel()
        finally:
            self.state = "done"


def state(actor: Actor) -> State:
    """Read an actor's state afresh (a call, so the type checker does not narrow it)."""
    return actor.state


def stats(lock: RWLock) -> tuple[int, bool, int, int]:
    s = lock.statistics()
    return s.readers, s.writer is not None, s.waiting_readers, s.waiting_writers


async def settle(lock: RWLock) -> None:
    await wait_all_tasks_blocked()
    lock._check_invariants()


# ---------------------------------------------------------------------------------------------
# Exclusivity and sharing
# ---------------------------------------------------------------------------------------------


class TestExclusion:
    async def test_many_readers_hold_at_once(self) -> None:
        lock = RWLock()
        log: list[str] = []
        actors = [Actor(lock, f"r{i}", "r", log) for i in range(10)]
        async with create_task_group() as tg:
            for actor in actors:
                tg.start_soon(actor.run)
            await settle(lock)
            assert all(a.state == "holding" for a in actors)
            assert lock.readers == 10
            assert not lock.writer_active
            for actor in actors:
                actor.release()
        assert stats(lock) == (0, False, 0, 0)

    async def test_writer_excludes_readers_and_writers(self) -> None:
        lock = RWLock()
        log: list[str] = []
        writer = Actor(lock, "w", "w", log)
        others = [Actor(lock, "r", "r", log), Actor(lock, "w2", "w", log)]
        async with create_task_group() as tg:
            tg.start_soon(writer.run)
            await settle(lock)
            for actor in others:
                tg.start_soon(actor.run)
            await settle(lock)
            assert [a.state for a in others] == ["waiting", "waiting"]
            assert stats(lock) == (0, True, 1, 1)
            writer.release()
            await settle(lock)
            assert state(others[0]) == "holding"
            others[0].release()
            await settle(lock)
            assert state(others[1]) == "holding"
            others[1].release()
        assert log == ["w", "r", "w2"]

    @pytest.mark.parametrize("seed", range(6))
    async def test_random_workload_never_overlaps(self, seed: int) -> None:
        """Readers never see a writer; a writer never sees anyone else (shared counters)."""
        lock = RWLock()
        rng = random.Random(seed)
        active = {"r": 0, "w": 0}
        peak_readers = 0
        done = {"r": 0, "w": 0}

        async def hold(kind: Kind) -> None:
            nonlocal peak_readers
            if kind == "w":
                assert active == {"r": 0, "w": 0}
            else:
                assert active["w"] == 0
            active[kind] += 1
            peak_readers = max(peak_readers, active["r"])
            for _ in range(rng.randrange(4)):
                await checkpoint()
                if kind == "w":
                    assert active == {"r": 0, "w": 1}
                else:
                    assert active["w"] == 0
            active[kind] -= 1
            done[kind] += 1

        async def worker() -> None:
            for _ in range(25):
                if rng.random() < 0.25:
                    async with lock.write_locked():
                        await hold("w")
                else:
                    async with lock.read_locked():
                        await hold("r")
                lock._check_invariants()
                for _ in range(rng.randrange(3)):
                    await checkpoint()

        with fail_after(10):
            async with create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(worker)
        assert done["r"] + done["w"] == 8 * 25
        assert done["w"] > 0
        assert peak_readers > 1, "the workload never shared the lock"
        assert stats(lock) == (0, False, 0, 0)


# ---------------------------------------------------------------------------------------------
# Scheduling policy
# ---------------------------------------------------------------------------------------------


class TestPolicy:
    async def test_waiting_writer_blocks_new_readers(self) -> None:
        lock = RWLock()
        log: list[str] = []
        r1, w, r2 = (
            Actor(lock, "r1", "r", log),
            Actor(lock, "w", "w", log),
            Actor(lock, "r2", "r", log),
        )
        async with create_task_group() as tg:
            tg.start_soon(r1.run)
            await settle(lock)
            tg.start_soon(w.run)
            await settle(lock)
            assert state(w) == "waiting"
            with pytest.raises(WouldBlock):
                lock.acquire_read_nowait()
            tg.start_soon(r2.run)
            await settle(lock)
            assert state(r2) == "waiting", "a reader overtook a waiting writer"
            assert stats(lock) == (1, False, 1, 1)
            r1.release()
            await settle(lock)
            assert (w.state, r2.state) == ("holding", "waiting")
            w.release()
            await settle(lock)
            assert state(r2) == "holding"
            r2.release()
        assert log == ["r1", "w", "r2"]

    async def test_writer_release_admits_all_waiting_readers_before_next_writer(self) -> None:
        lock = RWLock()
        log: list[str] = []
        w1 = Actor(lock, "w1", "w", log)
        r1, r2 = Actor(lock, "r1", "r", log), Actor(lock, "r2", "r", log)
        w2 = Actor(lock, "w2", "w", log)
        r3, r4 = Actor(lock, "r3", "r", log), Actor(lock, "r4", "r", log)
        async with create_task_group() as tg:
            for actor in (w1, r1, r2, w2, r3):
                tg.start_soon(actor.run)
                await settle(lock)
            assert stats(lock) == (0, True, 3, 1)
            w1.release()
            await settle(lock)
            # Every reader waiting at the release gets in, even r3 which queued behind w2.
            assert [a.state for a in (r1, r2, r3)] == ["holding"] * 3
            assert state(w2) == "waiting"
            assert stats(lock) == (3, False, 0, 1)
            # A reader arriving now waits: w2 is queued (writer preference again).
            tg.start_soon(r4.run)
            await settle(lock)
            assert state(r4) == "waiting"
            for actor in (r1, r2):
                actor.release()
            await settle(lock)
            assert state(w2) == "waiting"
            r3.release()
            await settle(lock)
            assert (w2.state, r4.state) == ("holding", "waiting")
            w2.release()
            await settle(lock)
            assert state(r4) == "holding"
            r4.release()
        assert log[0] == "w1"
        assert sorted(log[1:4]) == ["r1", "r2", "r3"]
        assert log[4:] == ["w2", "r4"]

    async def test_writers_are_fifo(self) -> None:
        lock = RWLock()
        log: list[str] = []
        first = Actor(lock, "w0", "w", log)
        writers = [Actor(lock, f"w{i}", "w", log) for i in range(1, 7)]
        async with create_task_group() as tg:
            tg.start_soon(first.run)
            await settle(lock)
            for writer in writers:
                writer.release()  # each releases as soon as it holds
                tg.start_soon(writer.run)
                await settle(lock)
            assert lock.statistics().waiting_writers == 6
            first.release()
        assert log == [f"w{i}" for i in range(7)]

    async def test_last_reader_hands_over_to_writer(self) -> None:
        lock = RWLock()
        lock.acquire_read_nowait()
        lock.acquire_read_nowait()
        log: list[str] = []
        w = Actor(lock, "w", "w", log)
        async with create_task_group() as tg:
            tg.start_soon(w.run)
            await settle(lock)
            lock.release_read()
            await settle(lock)
            assert state(w) == "waiting"
            lock.release_read()
            # The grant is made by the releaser, synchronously: nobody can slip in.
            assert lock.writer_active
            with pytest.raises(WouldBlock):
                lock.acquire_read_nowait()
            await settle(lock)
            assert state(w) == "holding"
            w.release()
        assert stats(lock) == (0, False, 0, 0)


# ---------------------------------------------------------------------------------------------
# *_nowait twins and ownership
# ---------------------------------------------------------------------------------------------


class TestNowaitAndOwnership:
    async def test_nowait_paths(self) -> None:
        lock = RWLock()
        lock.acquire_read_nowait()
        lock.acquire_read_nowait()
        assert lock.readers == 2
        with pytest.raises(WouldBlock):
            lock.acquire_write_nowait()
        lock.release_read()
        lock.release_read()
        lock.acquire_write_nowait()
        assert lock.writer_active
        assert lock.owned_by_current_task()
        with pytest.raises(WouldBlock):
            lock.acquire_read_nowait()

        errors: list[BaseException] = []

        async def other() -> None:
            assert not lock.owned_by_current_task()
            for attempt in (lock.acquire_write_nowait, lock.acquire_read_nowait):
                try:
                    attempt()
                except WouldBlock as exc:
                    errors.append(exc)

        async with create_task_group() as tg:
            tg.start_soon(other)
        assert len(errors) == 2
        lock.release_write()
        assert stats(lock) == (0, False, 0, 0)
        lock._check_invariants()

    async def test_nowait_write_fails_while_writers_queued(self) -> None:
        lock = RWLock()
        lock.acquire_read_nowait()
        log: list[str] = []
        w = Actor(lock, "w", "w", log)
        async with create_task_group() as tg:
            tg.start_soon(w.run)
            await settle(lock)
            lock.release_read()
            await settle(lock)
            w.release()
            await settle(lock)
            # Free again: nothing was left queued.
            lock.acquire_write_nowait()
            lock.release_write()

    async def test_release_write_by_non_owner_raises(self) -> None:
        lock = RWLock()
        await lock.acquire_write()
        errors: list[BaseException] = []

        async def intruder() -> None:
            try:
                lock.release_write()
            except RuntimeError as exc:
                errors.append(exc)

        async with create_task_group() as tg:
            tg.start_soon(intruder)
        assert len(errors) == 1
        assert lock.owned_by_current_task()
        lock.release_write()
        with pytest.raises(RuntimeError):
            lock.release_write()

    async def test_release_read_without_hold_raises(self) -> None:
        lock = RWLock()
        with pytest.raises(RuntimeError):
            lock.release_read()
        assert lock.readers == 0
        lock._check_invariants()

    async def test_read_hold_may_be_released_by_another_task(self) -> None:
        lock = RWLock()
        await lock.acquire_read()

        async def helper() -> None:
            lock.release_read()

        async with create_task_group() as tg:
            tg.start_soon(helper)
        assert stats(lock) == (0, False, 0, 0)

    async def test_reacquire_write_by_owner_raises(self) -> None:
        lock = RWLock()
        await lock.acquire_write()
        with fail_after(5):
            with pytest.raises(RuntimeError):
                await lock.acquire_write()
            with pytest.raises(RuntimeError):
                lock.acquire_write_nowait()
            with pytest.raises(RuntimeError):
                await lock.acquire_read()
        # The failed attempts left nothing queued; the write hold is intact.
        assert stats(lock) == (0, True, 0, 0)
        assert lock.owned_by_current_task()
        lock.release_write()
        assert stats(lock) == (0, False, 0, 0)

    async def test_reacquire_while_writers_queued_raises(self) -> None:
        lock = RWLock()
        await lock.acquire_write()
        log: list[str] = []
        w = Actor(lock, "w", "w", log)
        async with create_task_group() as tg:
            tg.start_soon(w.run)
            await settle(lock)
            with fail_after(5), pytest.raises(RuntimeError):
                await lock.acquire_write()
            assert stats(lock) == (0, True, 0, 1)
            lock.release_write()
            w.release()
        assert log == ["w"]

    async def test_context_managers(self) -> None:
        lock = RWLock()
        async with lock.read_locked():
            assert lock.readers == 1
            async with lock.read_locked():
                assert lock.readers == 2
        assert lock.readers == 0

        async def fail_while_writing() -> None:
            async with lock.write_locked():
                assert lock.owned_by_current_task()
                raise KeyError("boom")

        with pytest.raises(KeyError):
            await fail_while_writing()
        assert stats(lock) == (0, False, 0, 0)
        # The managers are shared objects: no allocation per use.
        assert lock.read_locked() is lock.read_locked()
        assert lock.write_locked() is lock.write_locked()


# ---------------------------------------------------------------------------------------------
# Cancellation
# ---------------------------------------------------------------------------------------------


class TestCancellation:
    async def test_cancel_waiting_reader(self) -> None:
        lock = RWLock()
        await lock.acquire_write()
        log: list[str] = []
        r1, r2 = Actor(lock, "r1", "r", log), Actor(lock, "r2", "r", log)
        async with create_task_group() as tg:
            tg.start_soon(r1.run)
            tg.start_soon(r2.run)
            await settle(lock)
            assert stats(lock) == (0, True, 2, 0)
            r1.scope.cancel()
            await settle(lock)
            assert state(r1) == "done"
            assert stats(lock) == (0, True, 1, 0)
            lock.release_write()
            await settle(lock)
            assert state(r2) == "holding"
            assert stats(lock) == (1, False, 0, 0)
            r2.release()
        assert log == ["r2"]
        assert stats(lock) == (0, False, 0, 0)

    async def test_cancel_all_waiting_readers(self) -> None:
        lock = RWLock()
        await lock.acquire_write()
        log: list[str] = []
        readers = [Actor(lock, f"r{i}", "r", log) for i in range(3)]
        async with create_task_group() as tg:
            for actor in readers:
                tg.start_soon(actor.run)
            await settle(lock)
            tg.cancel_scope.cancel()
        assert stats(lock) == (0, True, 0, 0)
        lock._check_invariants()
        lock.release_write()
        assert log == []
        assert stats(lock) == (0, False, 0, 0)

    async def test_cancel_waiting_writer(self) -> None:
        lock = RWLock()
        await lock.acquire_read()
        log: list[str] = []
        w1, w2 = Actor(lock, "w1", "w", log), Actor(lock, "w2", "w", log)
        async with create_task_group() as tg:
            for actor in (w1, w2):
                tg.start_soon(actor.run)
                await settle(lock)
            assert stats(lock) == (1, False, 0, 2)
            w1.scope.cancel()
            await settle(lock)
            assert state(w1) == "done"
            assert stats(lock) == (1, False, 0, 1)
            lock.release_read()
            await settle(lock)
            assert state(w2) == "holding"
            w2.release()
        assert log == ["w2"]
        assert stats(lock) == (0, False, 0, 0)

    async def test_cancel_only_waiting_writer_admits_readers_behind_it(self) -> None:
        lock = RWLock()
        await lock.acquire_read()
        log: list[str] = []
        w, r = Actor(lock, "w", "w", log), Actor(lock, "r", "r", log)
        async with create_task_group() as tg:
            tg.start_soon(w.run)
            await settle(lock)
            tg.start_soon(r.run)
            await settle(lock)
            assert stats(lock) == (1, False, 1, 1)
            w.scope.cancel()
            await settle(lock)
            # No release happened, yet the reader must not be left waiting.
            assert state(r) == "holding"
            assert stats(lock) == (2, False, 0, 0)
            r.release()
        lock.release_read()
        assert log == ["r"]
        assert stats(lock) == (0, False, 0, 0)

    # Two orders within one synchronous step. "cancel_first": the waiter's cancellation is
    # delivered, then a release grants to it before it runs; this reaches the "granted while
    # cancelled" branch of acquire_* on both backends. "grant_first": the grant comes first; the
    # backend then lets the waiter return from acquire_* holding the lock, and the cancellation
    # lands at its next checkpoint. Either way nothing may leak and the next waiter gets in.

    @pytest.mark.parametrize("order", ["cancel_first", "grant_first"])
    async def test_writer_granted_and_cancelled_in_same_step_passes_lock_on(
        self, order: str
    ) -> None:
        lock = RWLock()
        await lock.acquire_write()
        log: list[str] = []
        w1, w2 = Actor(lock, "w1", "w", log), Actor(lock, "w2", "w", log)
        async with create_task_group() as tg:
            for actor in (w1, w2):
                actor.release()  # each gives the lock back as soon as it holds it
                tg.start_soon(actor.run)
                await settle(lock)
            assert stats(lock) == (0, True, 0, 2)
            if order == "cancel_first":
                w1.scope.cancel()
            lock.release_write()  # hands the lock to w1, before w1 can run
            assert lock.statistics().writer == w1.task
            if order == "grant_first":
                w1.scope.cancel()
            await settle(lock)
            assert state(w1) == "done"
            assert state(w2) == "done"
        if order == "cancel_first":
            assert log == ["w2"], "a cancelled acquire_write returned holding the lock"
        else:
            assert log[-1] == "w2"
        assert stats(lock) == (0, False, 0, 0)
        lock._check_invariants()

    @pytest.mark.parametrize("order", ["cancel_first", "grant_first"])
    async def test_reader_granted_and_cancelled_in_same_step_gives_hold_back(
        self, order: str
    ) -> None:
        lock = RWLock()
        await lock.acquire_write()
        log: list[str] = []
        r1, r2 = Actor(lock, "r1", "r", log), Actor(lock, "r2", "r", log)
        w = Actor(lock, "w", "w", log)
        async with create_task_group() as tg:
            for actor in (r1, r2, w):
                tg.start_soon(actor.run)
                await settle(lock)
            assert stats(lock) == (0, True, 2, 1)
            if order == "cancel_first":
                r1.scope.cancel()
            lock.release_write()  # admits r1 and r2 together, before either can run
            assert stats(lock) == (2, False, 0, 1)
            if order == "grant_first":
                r1.scope.cancel()
            await settle(lock)
            assert state(r1) == "done"
            assert state(r2) == "holding"
            assert stats(lock) == (1, False, 0, 1)
            r2.release()
            await settle(lock)
            assert state(w) == "holding"
            w.release()
        if order == "cancel_first":
            assert "r1" not in log, "a cancelled acquire_read returned holding the lock"
        assert stats(lock) == (0, False, 0, 0)

    @pytest.mark.parametrize("order", ["cancel_first", "grant_first"])
    async def test_last_reader_granted_and_cancelled_in_same_step(self, order: str) -> None:
        lock = RWLock()
        await lock.acquire_write()
        log: list[str] = []
        r = Actor(lock, "r", "r", log)
        w = Actor(lock, "w", "w", log)
        w.release()
        async with create_task_group() as tg:
            for actor in (r, w):
                tg.start_soon(actor.run)
                await settle(lock)
            if order == "cancel_first":
                r.scope.cancel()
            lock.release_write()
            if order == "grant_first":
                r.scope.cancel()
            await settle(lock)
            assert (state(r), state(w)) == ("done", "done")
        assert log[-1] == "w"
        assert stats(lock) == (0, False, 0, 0)

    @pytest.mark.parametrize("side", ["read", "write"])
    async def test_native_cancel_during_uncontended_acquire_leaves_no_hold(
        self, anyio_backend: str, side: str
    ) -> None:
        """A plain asyncio ``Task.cancel()`` landing in the shielded post-acquire yield."""
        if anyio_backend != "asyncio":
            pytest.skip("native task cancellation is asyncio's")
        import asyncio

        lock = RWLock()
        acquire = lock.acquire_read if side == "read" else lock.acquire_write
        task = asyncio.ensure_future(acquire())
        await asyncio.sleep(0)  # the task takes the lock and parks in its shielded yield
        assert lock.readers == 1 or lock.writer_active
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert stats(lock) == (0, False, 0, 0)
        lock._check_invariants()

    @pytest.mark.parametrize("side", ["read", "write"])
    async def test_uncontended_acquire_in_cancelled_scope_raises(self, side: str) -> None:
        lock = RWLock()
        acquire = lock.acquire_read if side == "read" else lock.acquire_write
        reached = False
        with CancelScope() as scope:
            scope.cancel()
            await acquire()
            reached = True
        assert not reached, "an uncontended acquire is still a checkpoint"
        assert scope.cancelled_caught
        assert stats(lock) == (0, False, 0, 0)
        lock._check_invariants()

    async def test_cancel_holder_releases(self) -> None:
        lock = RWLock()
        log: list[str] = []
        w, r = Actor(lock, "w", "w", log), Actor(lock, "r", "r", log)
        async with create_task_group() as tg:
            tg.start_soon(w.run)
            await settle(lock)
            tg.start_soon(r.run)
            await settle(lock)
            w.scope.cancel()
            await settle(lock)
            assert state(r) == "holding"
            r.scope.cancel()
        assert stats(lock) == (0, False, 0, 0)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


class TestCheckpoints:
    async def test_uncontended_acquires_are_checkpoints(self, anyio_backend: str) -> None:
        if anyio_backend != "trio":
            pytest.skip("trio.testing.assert_checkpoints needs the trio backend")
        from trio.testing import assert_checkpoints, assert_no_checkpoints

        lock = RWLock()
        with assert_checkpoints():
            await lock.acquire_read()
        with assert_checkpoints():
            await lock.acquire_read()
        with assert_no_checkpoints():
            lock.release_read()
            lock.release_read()
        with assert_checkpoints():
            await lock.acquire_write()
        with assert_no_checkpoints():
            lock.release_write()
        with assert_checkpoints():
            await lock.read_locked().__aenter__()
        with assert_no_checkpoints():
            await lock.read_locked().__aexit__(None, None, None)
        with assert_checkpoints():
            await lock.write_locked().__aenter__()
        with assert_no_checkpoints():
            await lock.write_locked().__aexit__(None, None, None)
        assert stats(lock) == (0, False, 0, 0)

    async def test_contended_acquires_are_checkpoints(self, anyio_backend: str) -> None:
        if anyio_backend != "trio":
            pytest.skip("trio.testing.assert_checkpoints needs the trio backend")
        from trio.testing import assert_checkpoints

        lock = RWLock()
        log: list[str] = []
        w = Actor(lock, "w", "w", log)
        async with create_task_group() as tg:
            tg.start_soon(w.run)
            await settle(lock)
            tg.start_soon(_release_soon, w)
            with assert_checkpoints():
                await lock.acquire_read()
            lock.release_read()
            lock.acquire_read_nowait()
            tg.start_soon(_release_read_soon, lock)
            with assert_checkpoints():
                await lock.acquire_write()
            lock.release_write()


async def _release_soon(actor: Actor) -> None:
    await wait_all_tasks_blocked()
    actor.release()


async def _release_read_soon(lock: RWLock) -> None:
    await wait_all_tasks_blocked()
    lock.release_read()


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


class TestStatistics:
    async def test_statistics(self) -> None:
        lock = RWLock()
        assert lock.statistics() == RWLockStatistics(
            readers=0, writer=None, waiting_readers=0, waiting_writers=0
        )
        await lock.acquire_write()
        s = lock.statistics()
        assert s.writer == anyio.get_current_task()
        assert (s.readers, s.waiting_readers, s.waiting_writers) == (0, 0, 0)
        log: list[str] = []
        actors = [Actor(lock, "r", "r", log), Actor(lock, "w", "w", log)]
        async with create_task_group() as tg:
            for actor in actors:
                tg.start_soon(actor.run)
            await settle(lock)
            s = lock.statistics()
            assert (s.readers, s.waiting_readers, s.waiting_writers) == (0, 1, 1)
            lock.release_write()
            s = lock.statistics()
            assert s == RWLockStatistics(
                readers=1, writer=None, waiting_readers=0, waiting_writers=1
            )
            actors[0].release()
            await settle(lock)
            assert lock.statistics().writer == actors[1].task
            assert lock.writer_active
            assert not lock.owned_by_current_task()
            actors[1].release()
        assert not lock.writer_active

    def test_statistics_is_frozen_and_slotted(self) -> None:
        s = RWLockStatistics(readers=1, writer=None, waiting_readers=0, waiting_writers=0)
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.readers = 2  # type: ignore[misc]
        assert not hasattr(s, "__dict__")
        assert not hasattr(RWLock(), "__dict__")

    def test_repr(self) -> None:
        assert repr(RWLock()) == (
            "<RWLock readers=0 writer=None waiting_readers=0 waiting_writers=0>"
        )


# ---------------------------------------------------------------------------------------------
# Model-based: random schedules of real tasks against a plain model of the policy
# ---------------------------------------------------------------------------------------------


class Model:
    """The scheduling policy, written out as plainly as possible."""

    def __init__(self) -> None:
        self.readers: set[str] = set()
        self.writer: str | None = None
        self.read_waiting: list[str] = []
        self.write_waiting: list[str] = []
        self.done: set[str] = set()

    def state(self, name: str) -> State:
        if name in self.done:
            return "done"
        if name in self.readers or name == self.writer:
            return "holding"
        return "waiting"

    def arrive(self, name: str, kind: Kind) -> None:
        if kind == "r":
            if self.writer is None and not self.write_waiting:
                self.readers.add(name)
            else:
                self.read_waiting.append(name)
        elif self.writer is None and not self.readers and not self.write_waiting:
            self.writer = name
        else:
            self.write_waiting.append(name)

    def release(self, name: str) -> None:
        self.done.add(name)
        if name == self.writer:
            self.writer = None
            if self.read_waiting:
                self.readers.update(self.read_waiting)
                self.read_waiting.clear()
            elif self.write_waiting:
                self.writer = self.write_waiting.pop(0)
        else:
            self.readers.remove(name)
            if not self.readers and self.write_waiting:
                self.writer = self.write_waiting.pop(0)

    def cancel(self, name: str) -> None:
        if self.state(name) == "holding":
            self.release(name)
            return
        self.done.add(name)
        if name in self.read_waiting:
            self.read_waiting.remove(name)
            return
        self.write_waiting.remove(name)
        if self.writer is None and not self.write_waiting and self.read_waiting:
            self.readers.update(self.read_waiting)
            self.read_waiting.clear()


class RWLockMachine(RuleBasedStateMachine):
    """Start readers and writers, release and cancel them; after each step compare with Model."""

    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.exits = ExitStack()
        self.portal: BlockingPortal = self.exits.enter_context(start_blocking_portal(self.backend))
        self.lock = RWLock()
        self.model = Model()
        self.actors: dict[str, Actor] = {}
        self.log: list[str] = []

    def teardown(self) -> None:
        def cancel_all() -> None:
            for actor in self.actors.values():
                actor.scope.cancel()

        try:
            self.portal.call(cancel_all)
            self.portal.call(self._settle)
            assert all(a.state == "done" for a in self.actors.values())
            assert stats(self.lock) == (0, False, 0, 0)
        finally:
            self.exits.close()

    async def _settle(self) -> None:
        # wait_all_tasks_blocked() polls every 0.1 s on asyncio; instead run scheduling rounds
        # until the lock and every actor have been still for a while.
        still = 0
        last: object = None
        for _ in range(1000):
            await checkpoint()
            snapshot = (self.lock.statistics(), [a.state for a in self.actors.values()])
            if snapshot == last:
                still += 1
                if still == 10:
                    return
            else:
                still = 0
                last = snapshot
        raise AssertionError("the tasks never settled")

    def _names(self, state: State) -> list[str]:
        return sorted(n for n in self.actors if self.model.state(n) == state)

    def _start(self, kind: Kind) -> None:
        name = f"{kind}{len(self.actors)}"
        note(f"start {name}")
        # Created in the loop thread: CancelScope and Event need a running backend.
        actor = self.portal.call(Actor, self.lock, name, kind, self.log)
        self.actors[name] = actor
        self.model.arrive(name, kind)
        self.portal.start_task_soon(actor.run)
        self.portal.call(self._settle)

    @rule()
    def start_reader(self) -> None:
        self._start("r")

    @rule()
    def start_writer(self) -> None:
        self._start("w")

    @precondition(lambda self: bool(self._names("holding")))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self._names("holding")), label="holder")
        note(f"release {name}")
        self.model.release(name)
        self.portal.call(self.actors[name].release)
        self.portal.call(self._settle)

    @precondition(lambda self: bool(self._names("holding") or self._names("waiting")))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        name = data.draw(
            st.sampled_from(self._names("holding") + self._names("waiting")), label="victim"
        )
        note(f"cancel {name} ({self.model.state(name)})")
        self.model.cancel(name)
        self.portal.call(self.actors[name].scope.cancel)
        self.portal.call(self._settle)

    @precondition(lambda self: bool(self._names("holding") and self._names("waiting")))
    @rule(data=st.data())
    def release_and_cancel(self, data: st.DataObject) -> None:
        """Release a holder and, in the same step, cancel a waiter it may be granting to."""
        holder = data.draw(st.sampled_from(self._names("holding")), label="holder")
        victim = data.draw(st.sampled_from(self._names("waiting")), label="victim")
        note(f"release {holder} and cancel {victim} in one step")
        self.model.release(holder)
        self.model.cancel(victim)
        actor = self.actors[holder]
        actor.then_cancel = self.actors[victim].scope
        self.portal.call(actor.release)
        self.portal.call(self._settle)

    @invariant()
    def matches_model(self) -> None:
        def check() -> None:
            self.lock._check_invariants()
            s = self.lock.statistics()
            model = self.model
            assert s.readers == len(model.readers)
            assert s.waiting_readers == len(model.read_waiting)
            assert s.waiting_writers == len(model.write_waiting)
            if model.writer is None:
                assert s.writer is None
            else:
                assert s.writer == self.actors[model.writer].task
            for name, actor in self.actors.items():
                assert state(actor) == model.state(name), name

        self.portal.call(check)


class RWLockMachineTrio(RWLockMachine):
    backend = "trio"


@pytest.mark.parametrize("machine", [RWLockMachine, RWLockMachineTrio], ids=["asyncio", "trio"])
def test_rwlock_state_machine(machine: type[RWLockMachine]) -> None:
    run_state_machine_as_test(machine)
