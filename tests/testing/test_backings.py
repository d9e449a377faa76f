"""The test backings: CancellingBacking counts one task's calls; DelayedCopyBacking answers late;
OutOfBandBacking changes the file behind the cache and says so through the Revalidating hook."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

from aiocache_inode import AttrMask, Attrs, LocalFile, MemoryBacking, Revalidating
from aiocache_inode.testing import CancellingBacking, DelayedCopyBacking, OutOfBandBacking

if TYPE_CHECKING:
    from pathlib import Path


class Sleeps:
    """A ``sleep`` that records each delay and lets the test decide when it ends."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.release = anyio.Event()

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await self.release.wait()


class TestDelayedCopyBacking:
    async def test_write_takes_the_bytes_when_it_starts(self) -> None:
        sleeps = Sleeps()
        b = DelayedCopyBacking(b"\0" * 8, latency=1.0, seed=1, sleep=sleeps)
        buf = bytearray(b"old!")
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.write_from, 2, [memoryview(buf)])
            await anyio.wait_all_tasks_blocked()
            buf[:] = b"new!"  # the caller changes its buffer while the request is in flight
            assert b.data == b"\0" * 8  # not stored yet
            sleeps.release.set()
        assert b.data == b"\0\0old!\0\0"

    async def test_read_sees_the_data_of_its_start(self) -> None:
        sleeps = Sleeps()
        mem = MemoryBacking(b"abcdefgh")
        b = DelayedCopyBacking(mem, latency=1.0, seed=1, sleep=sleeps)
        out = bytearray(4)
        got: list[int] = []

        async def read() -> None:
            got.append(await b.read_into(2, [memoryview(out)]))

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            await mem.write_from(0, [memoryview(b"XXXXXXXX")])
            assert out == bytearray(4)  # nothing copied before the answer
            sleeps.release.set()
        assert got == [4]
        assert out == b"cdef"

    async def test_truncate_applies_before_the_answer(self) -> None:
        sleeps = Sleeps()
        b = DelayedCopyBacking(b"x" * 100, latency=1.0, seed=1, sleep=sleeps)
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.set_attributes, AttrMask.SIZE, Attrs(size=10), False)
            await anyio.wait_all_tasks_blocked()
            assert b.data == b"x" * 10
            sleeps.release.set()

    async def test_cancelled_write_stores_nothing(self) -> None:
        sleeps = Sleeps()
        b = DelayedCopyBacking(b"\0" * 4, latency=1.0, seed=1, sleep=sleeps)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(b.write_from, 0, [memoryview(b"abcd")])
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
        assert b.data == b"\0" * 4
        assert b.requests == 1

    async def test_delays_are_drawn_from_the_seed(self) -> None:
        runs = []
        for _ in range(2):
            sleeps = Sleeps()
            sleeps.release.set()
            b = DelayedCopyBacking(b"z" * 64, latency=0.5, seed=42, sleep=sleeps)
            for off in range(8):
                await b.read_into(off, [memoryview(bytearray(4))])
                await b.sync()
            runs.append(sleeps.delays)
            assert all(0 <= d < 0.5 for d in sleeps.delays)
        assert runs[0] == runs[1]
        assert len(set(runs[0])) > 1

    async def test_zero_latency_still_checkpoints(self) -> None:
        b = DelayedCopyBacking(b"abc", latency=0.0, seed=0)
        with anyio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await b.read_into(0, [memoryview(bytearray(3))])
        assert (await b.get_attributes()).size == 3
        assert b.fd() == -1
        await b.aclose()

    @pytest.mark.parametrize("latency", [-1.0, float("nan"), float("inf")])
    def test_latency_validated(self, latency: float) -> None:
        with pytest.raises(ValueError, match="latency"):
            DelayedCopyBacking(b"", latency=latency, seed=0)

    def test_data_needs_a_memory_backing(self) -> None:
        b = DelayedCopyBacking(CancellingBacking(MemoryBacking()), latency=0.0, seed=0)
        with pytest.raises(TypeError, match=r"no \.data"):
            _ = b.data


class TestCancellingBacking:
    async def test_counts_only_the_armed_tasks_calls(self) -> None:
        b = CancellingBacking(MemoryBacking(b"0123456789"))
        buf = memoryview(bytearray(1))
        with anyio.CancelScope() as scope:
            b.arm(scope, 2)

            async def other_task() -> None:
                for _ in range(5):  # a background task's calls do not move the point
                    await b.read_into(0, [buf])

            async with anyio.create_task_group() as tg:
                tg.start_soon(other_task)
            assert not b.fired
            await b.read_into(0, [buf])
            assert not b.fired
            await b.read_into(0, [buf])
            pytest.fail("the second call of the armed task must be cancelled")
        assert b.fired
        assert scope.cancelled_caught

    async def test_nth_call_counts_from_one(self) -> None:
        b = CancellingBacking(MemoryBacking())
        with pytest.raises(ValueError, match="from 1"):
            b.arm(anyio.CancelScope(), 0)


class TestOutOfBandBacking:
    async def test_a_change_is_reported_once(self) -> None:
        mem = MemoryBacking(b"old bytes")
        b = OutOfBandBacking(mem)
        assert isinstance(b, Revalidating)
        assert await b.refresh() is False
        await b.change_behind(b"new")
        assert mem.data == b"new"  # bytes and size
        assert (await b.get_attributes()).size == 3
        assert await b.refresh() is True
        assert await b.refresh() is False
        # Writes through the wrapper (the cache's own) are not a change.
        await b.write_from(0, [memoryview(b"N")])
        assert await b.refresh() is False

    async def test_a_failing_hook_consumes_nothing(self) -> None:
        b = OutOfBandBacking(MemoryBacking(b"x"))
        await b.change_behind(b"")
        b.refresh_error = OSError("store unreachable")
        with pytest.raises(OSError, match="unreachable"):
            await b.refresh()
        assert await b.refresh() is True  # the error was raised once, the change kept

    async def test_the_inner_hook_is_asked_too(self, tmp_path: Path) -> None:
        path = tmp_path / "f"
        path.write_bytes(b"abc")
        async with await LocalFile.open(path, writable=True) as lf:
            b = OutOfBandBacking(lf)
            await b.change_behind(b"through the wrapper")  # LocalFile's own write: not seen
            assert await b.refresh() is True  # but counted by the wrapper
            path.write_bytes(b"by someone else")
            assert await b.refresh() is True  # seen by LocalFile's hook
            assert await b.refresh() is False

    async def test_cancelling_backing_passes_the_hook_on(self) -> None:
        b = OutOfBandBacking(MemoryBacking(b"x"))
        c = CancellingBacking(b)
        await b.change_behind(b"y")
        assert await c.refresh() is True
        assert await CancellingBacking(MemoryBacking(b"x")).refresh() is False
