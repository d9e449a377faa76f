from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

from aiocache_inode.attrs import AttrMask, Attrs
from aiocache_inode.backing import BackingStats, MemoryBacking
from aiocache_inode.errors import ClosedError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fake clock: records every anyio.sleep delay and only checkpoints instead."""
    delays: list[float] = []

    async def fake_sleep(delay: float) -> None:
        delays.append(delay)
        await anyio.lowlevel.checkpoint()

    monkeypatch.setattr(anyio, "sleep", fake_sleep)
    return delays


def mv(data: bytes | bytearray) -> memoryview:
    return memoryview(data)


class TestConstructor:
    @pytest.mark.parametrize("latency", [-0.001, -1.0, math.nan, math.inf])
    def test_bad_latency(self, latency: float) -> None:
        with pytest.raises(ValueError, match="latency"):
            MemoryBacking(latency=latency)

    @pytest.mark.parametrize("bandwidth", [0.0, -5.0, math.nan])
    def test_bad_bandwidth(self, bandwidth: float) -> None:
        with pytest.raises(ValueError, match="bandwidth"):
            MemoryBacking(bandwidth=bandwidth)

    def test_defaults(self) -> None:
        backing = MemoryBacking(b"abc")
        assert backing.data == b"abc"
        assert backing.latency == 0.0
        assert backing.bandwidth is None
        assert backing.fd() == -1
        assert backing.stats == BackingStats()
        assert "size=3" in repr(backing)

    def test_data_is_a_copy(self) -> None:
        source = bytearray(b"abc")
        backing = MemoryBacking(bytes(source))
        snapshot = backing.data
        assert isinstance(snapshot, bytes)
        source[0] = 0
        assert backing.data == b"abc"

    async def test_attrs_kept_but_size_and_usage_derived(self) -> None:
        given = Attrs(size=999, usage=7, mode=0o4700, uid=5, gid=6, atime=1, mtime=2, ctime=3)
        backing = MemoryBacking(b"12345", attrs=given)
        got = await backing.get_attributes()
        assert got == given.with_(size=5, usage=5)

    async def test_default_times_are_now(self) -> None:
        from aiocache_inode.attrs import now_ns

        before = now_ns()
        got = await MemoryBacking().get_attributes()
        assert before <= got.atime == got.mtime == got.ctime <= now_ns()


class TestDelays:
    async def test_latency_per_request(self, sleeps: list[float]) -> None:
        backing = MemoryBacking(b"x" * 100, latency=0.25)
        await backing.read_into(0, [mv(bytearray(10))])
        await backing.write_from(0, [mv(b"abc")])
        await backing.get_attributes()
        await backing.set_attributes(AttrMask.MODE, Attrs(), False)
        await backing.allocate(0, 1000)
        await backing.sync()
        assert sleeps == [0.25] * 6

    async def test_bandwidth_adds_size_over_bandwidth(self, sleeps: list[float]) -> None:
        backing = MemoryBacking(b"x" * 1000, latency=0.5, bandwidth=100.0)
        await backing.read_into(0, [mv(bytearray(200)), mv(bytearray(50))])
        await backing.write_from(0, [mv(b"y" * 400)])
        await backing.sync()
        assert sleeps == pytest.approx([0.5 + 2.5, 0.5 + 4.0, 0.5])

    async def test_read_delay_counts_only_available_bytes(self, sleeps: list[float]) -> None:
        backing = MemoryBacking(b"x" * 100, bandwidth=10.0)
        await backing.read_into(90, [mv(bytearray(1000))])
        await backing.read_into(500, [mv(bytearray(1000))])
        assert sleeps == pytest.approx([1.0])  # 10 bytes at 10 B/s; the EOF read only checkpoints

    async def test_no_delay_still_checkpoints(self, sleeps: list[float]) -> None:
        backing = MemoryBacking(b"abc")
        await backing.read_into(0, [mv(bytearray(3))])
        assert sleeps == []

    async def test_concurrent_requests_overlap(self) -> None:
        # Real sleeps, but the assertion counts overlap, not time: with the delay applied before
        # the work, all requests are in progress at once.
        backing = MemoryBacking(bytes(1000), latency=0.02, bandwidth=1e6)
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(backing.read_into, i * 100, [mv(bytearray(100))])
        assert backing.stats.concurrent_peak == 10
        assert backing.stats.reads == 10
        backing._check_invariants()

    async def test_sequential_requests_do_not_overlap(self) -> None:
        backing = MemoryBacking(bytes(10), latency=0.001)
        for _ in range(3):
            await backing.sync()
        assert backing.stats.concurrent_peak == 1

    async def test_latency_really_waits(self) -> None:
        # A lower bound only (an upper bound could flake on a loaded machine); event loops may
        # wake a clock tick early, hence the margin.
        backing = MemoryBacking(b"abc", latency=0.05)
        start = anyio.current_time()
        await backing.sync()
        assert anyio.current_time() - start >= 0.04

    async def test_cancelled_during_delay_changes_nothing(self) -> None:
        backing = MemoryBacking(b"abc", latency=60.0)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await backing.write_from(0, [mv(b"XYZ")])
        assert scope.cancelled_caught
        with anyio.move_on_after(0.01):
            await backing.set_attributes(AttrMask.SIZE, Attrs(size=0), False)
        assert backing.data == b"abc"
        stats = backing.stats
        assert (stats.writes, stats.set_attributes, stats.written_bytes) == (0, 0, 0)
        assert stats.concurrent_peak == 1
        backing._check_invariants()
        assert backing._active == 0


class TestData:
    async def test_write_past_end_zero_fills(self) -> None:
        backing = MemoryBacking(b"ab")
        assert await backing.write_from(5, [mv(b"c"), mv(b"de")]) == 3
        assert backing.data == b"ab\0\0\0cde"

    async def test_overwrite_inside(self) -> None:
        backing = MemoryBacking(b"abcdef")
        await backing.write_from(1, [mv(b"XY")])
        assert backing.data == b"aXYdef"

    async def test_read_past_end(self) -> None:
        backing = MemoryBacking(b"abcdef")
        buf = bytearray(b"........")
        assert await backing.read_into(4, [mv(buf)]) == 2
        assert buf == bytearray(b"ef......")
        assert await backing.read_into(6, [mv(buf)]) == 0
        assert await backing.read_into(100, [mv(buf)]) == 0

    async def test_set_size_truncates_and_extends(self) -> None:
        backing = MemoryBacking(b"abcdef")
        await backing.set_attributes(AttrMask.SIZE, Attrs(size=2), False)
        assert backing.data == b"ab"
        await backing.set_attributes(AttrMask.SIZE, Attrs(size=4), False)
        assert backing.data == b"ab\0\0"

    async def test_other_fields_stored(self) -> None:
        backing = MemoryBacking(b"abc", attrs=Attrs(mode=0o600, uid=1, gid=2, links=1))
        mask = AttrMask.MODE | AttrMask.GID | AttrMask.CTIME | AttrMask.LINKS | AttrMask.USAGE
        new = Attrs(size=0, usage=99, mode=0o755, uid=50, gid=60, ctime=70, links=3)
        await backing.set_attributes(mask, new, False)
        got = await backing.get_attributes()
        assert (got.size, got.usage) == (3, 3)  # SIZE not named; USAGE derived
        assert (got.mode, got.uid, got.gid, got.ctime, got.links) == (0o755, 1, 60, 70, 3)

    async def test_allocate(self) -> None:
        backing = MemoryBacking(b"abc")
        await backing.allocate(1, 1)
        assert backing.data == b"abc"
        await backing.allocate(2, 3)
        assert backing.data == b"abc\0\0"

    async def test_read_does_not_pin_the_bytearray(self) -> None:
        # The read copies through a memoryview of the bytearray; a leaked export would make the
        # next resize fail with BufferError.
        backing = MemoryBacking(b"abcdef")
        await backing.read_into(0, [mv(bytearray(3)), mv(bytearray(3))])
        await backing.write_from(100, [mv(b"grow")])
        await backing.set_attributes(AttrMask.SIZE, Attrs(size=1), False)
        assert backing.data == b"a"


class TestStats:
    async def test_counters(self) -> None:
        backing = MemoryBacking(b"0123456789")
        await backing.read_into(8, [mv(bytearray(5))])
        await backing.read_into(0, [mv(bytearray(3)), mv(bytearray(1))])
        await backing.write_from(20, [mv(b"abc"), mv(b"de")])
        await backing.sync()
        await backing.sync()
        await backing.set_attributes(AttrMask.NONE, Attrs(), False)
        await backing.allocate(0, 1)
        await backing.get_attributes()
        assert backing.stats == BackingStats(
            reads=2,
            writes=1,
            syncs=2,
            set_attributes=1,
            allocates=1,
            get_attributes=1,
            read_bytes=6,
            written_bytes=5,
            concurrent_peak=1,
        )

    def test_stats_is_mutable_and_slotted(self) -> None:
        stats = BackingStats()
        stats.reads += 1
        assert stats.reads == 1
        with pytest.raises(AttributeError):
            stats.unknown = 1  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        "call",
        [
            lambda b: b.read_into(-1, []),
            lambda b: b.write_from(-1, []),
            lambda b: b.allocate(-1, 0),
        ],
    )
    async def test_rejected_requests_are_not_counted(
        self, call: Callable[[MemoryBacking], Awaitable[object]]
    ) -> None:
        backing = MemoryBacking(b"abc")
        with pytest.raises(ValueError, match="negative"):
            await call(backing)
        assert backing.stats == BackingStats()


class TestClose:
    async def test_closed_refuses_but_data_stays_readable(self) -> None:
        states = []
        async with MemoryBacking(b"abc") as backing:
            states.append(backing.closed)
        states.append(backing.closed)
        assert states == [False, True]
        assert backing.data == b"abc"
        with pytest.raises(ClosedError):
            await backing.allocate(0, 10)
        with pytest.raises(ClosedError):
            await backing.set_attributes(AttrMask.SIZE, Attrs(), False)
        assert "closed" in repr(backing)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_requests_are_checkpoints() -> None:
    from trio.testing import assert_checkpoints

    backing = MemoryBacking(b"abc")
    with assert_checkpoints():
        await backing.read_into(0, [mv(bytearray(1))])
    with assert_checkpoints():
        await backing.read_into(10, [mv(bytearray(1))])
    with assert_checkpoints():
        await backing.write_from(0, [mv(b"x")])
    with assert_checkpoints():
        await backing.get_attributes()
    with assert_checkpoints():
        await backing.sync()
    with assert_checkpoints():
        await backing.aclose()
