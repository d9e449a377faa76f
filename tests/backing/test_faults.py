from __future__ import annotations

import errno
import math
import random
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest
from prometheus_client import CollectorRegistry

from aiocache_inode import BackingError, CacheStore, Revalidating
from aiocache_inode.attrs import AttrMask, Attrs
from aiocache_inode.backing import FaultInjector, FaultStats, LocalFile, MemoryBacking

if TYPE_CHECKING:
    from pathlib import Path

DATA = bytes(range(256)) * 64  # 16 KiB


EIO = ("OSError", errno.EIO)


def mv(data: bytes | bytearray) -> memoryview:
    return memoryview(data)


async def run_script(injector: FaultInjector, steps: int) -> list[object]:
    """A fixed mix of calls; returns each call's outcome (a count, None, or an errno pair)."""
    script = random.Random(99)  # the workload, independent of the injector's seed
    outcomes: list[object] = []
    for _ in range(steps):
        op = script.randrange(4)
        offset = script.randrange(len(DATA))
        size = script.randrange(1, 3000)
        try:
            if op == 0:
                outcomes.append(await injector.read_into(offset, [mv(bytearray(size))]))
            elif op == 1:
                outcomes.append(await injector.write_from(offset, [mv(bytes(size))]))
            elif op == 2:
                outcomes.append((await injector.get_attributes()).size)
            else:
                await injector.sync()
                outcomes.append(None)
        except OSError as exc:
            outcomes.append(("OSError", exc.errno))
    return outcomes


def make(seed: int = 7, **rates: float) -> FaultInjector:
    return FaultInjector(MemoryBacking(DATA), seed=seed, **rates)


class TestConstructor:
    @pytest.mark.parametrize("name", ["error_rate", "short_io_rate"])
    @pytest.mark.parametrize("value", [-0.1, 1.01, math.nan])
    def test_rates_validated(self, name: str, value: float) -> None:
        with pytest.raises(ValueError, match=name):
            FaultInjector(MemoryBacking(), seed=0, **{name: value})

    @pytest.mark.parametrize("latency", [-1.0, math.nan, math.inf])
    def test_latency_validated(self, latency: float) -> None:
        with pytest.raises(ValueError, match="latency"):
            FaultInjector(MemoryBacking(), seed=0, latency=latency)

    def test_attributes(self) -> None:
        inner = MemoryBacking()
        injector = FaultInjector(inner, seed=3, error_rate=0.5, short_io_rate=1.0, latency=0.1)
        assert injector.inner is inner
        assert (injector.seed, injector.error_rate, injector.short_io_rate) == (3, 0.5, 1.0)
        assert injector.latency == 0.1
        assert injector.stats == FaultStats()
        assert "seed=3" in repr(injector)


class TestDeterminism:
    async def test_same_seed_same_faults(self) -> None:
        rates = {"error_rate": 0.3, "short_io_rate": 0.4}
        first = make(seed=11, **rates)
        second = make(seed=11, **rates)
        a = await run_script(first, 300)
        b = await run_script(second, 300)
        assert a == b
        assert first.stats == second.stats
        assert first.inner.data == second.inner.data  # type: ignore[attr-defined]
        # The script really exercised both kinds of fault.
        assert first.stats.errors_injected > 0
        assert first.stats.short_ios_injected > 0
        assert EIO in a

    async def test_different_seed_different_faults(self) -> None:
        rates = {"error_rate": 0.3, "short_io_rate": 0.4}
        a = await run_script(make(seed=1, **rates), 300)
        b = await run_script(make(seed=2, **rates), 300)
        assert a != b

    async def test_rates_do_not_shift_the_sequence(self) -> None:
        # Each call draws the same numbers whatever the rates, so turning short I/O on does not
        # move which calls fail.
        errors_only = make(seed=5, error_rate=0.3)
        with_short = make(seed=5, error_rate=0.3, short_io_rate=0.9)
        a = await run_script(errors_only, 200)
        b = await run_script(with_short, 200)
        assert [o == EIO for o in a] == [o == EIO for o in b]

    async def test_reseed_restarts_the_sequence(self) -> None:
        # A test reseeds per operation: what an operation meets then depends only on the seed,
        # not on how many calls came before it.
        rates = {"error_rate": 0.3, "short_io_rate": 0.4}
        fresh = await run_script(make(seed=3, **rates), 100)
        used = make(seed=99, **rates)
        await run_script(used, 57)
        used.reseed(3)
        assert used.seed == 3
        again = await run_script(used, 100)
        assert [o == EIO for o in again] == [o == EIO for o in fresh]
        assert EIO in fresh
        assert used.stats.calls == 157


class TestErrors:
    async def test_error_is_oserror_eio_and_inner_untouched(self) -> None:
        injector = make(error_rate=1.0)
        inner = injector.inner
        assert isinstance(inner, MemoryBacking)
        with pytest.raises(OSError, match="injected fault") as info:
            await injector.write_from(0, [mv(b"XXXX")])
        assert info.value.errno == errno.EIO
        for call in (
            injector.read_into(0, [mv(bytearray(4))]),
            injector.get_attributes(),
            injector.set_attributes(AttrMask.SIZE, Attrs(size=0), False),
            injector.allocate(0, 1 << 20),
            injector.sync(),
        ):
            with pytest.raises(OSError, match="injected fault"):
                await call
        assert inner.data == DATA
        assert inner.stats.reads == inner.stats.writes == inner.stats.syncs == 0
        assert injector.stats == FaultStats(calls=6, errors_injected=6, short_ios_injected=0)

    async def test_rates_changed_at_run_time_take_effect(self) -> None:
        injector = make()
        assert EIO not in await run_script(injector, 50)
        injector.error_rate = 1.0
        assert await run_script(injector, 50) == [EIO] * 50
        injector.error_rate = 0.0
        assert EIO not in await run_script(injector, 50)
        assert injector.stats.errors_injected == 50
        assert injector.stats.calls == 150

        injector.short_io_rate = 1.0
        assert await injector.read_into(0, [mv(bytearray(100))]) < 100
        injector.short_io_rate = 0.0
        assert await injector.read_into(0, [mv(bytearray(100))]) == 100
        assert injector.stats.short_ios_injected == 1


class TestShortIO:
    async def test_short_reads_never_zero_never_more_than_asked(self) -> None:
        injector = make(short_io_rate=1.0)
        sizes = random.Random(3)
        for _ in range(300):
            offset = sizes.randrange(len(DATA) - 5000)
            lengths = [sizes.randrange(0, 1500) for _ in range(sizes.randrange(1, 5))]
            wanted = sum(lengths)
            bufs = [bytearray(n) for n in lengths]
            n = await injector.read_into(offset, [mv(b) for b in bufs])
            if wanted >= 2:
                assert 1 <= n < wanted
            else:
                assert n == wanted  # nothing shorter exists that is not 0
            assert b"".join(bufs)[:n] == DATA[offset : offset + n]
            assert not any(b"".join(bufs)[n:])  # nothing past the count was touched

    async def test_short_writes_write_exactly_a_prefix(self) -> None:
        injector = make(short_io_rate=1.0)
        inner = injector.inner
        assert isinstance(inner, MemoryBacking)
        shadow = bytearray(DATA)
        pick = random.Random(4)
        for i in range(200):
            offset = pick.randrange(len(DATA) - 3000)
            parts = [bytes([i % 256]) * pick.randrange(0, 1000) for _ in range(3)]
            wanted = sum(map(len, parts))
            n = await injector.write_from(offset, [mv(p) for p in parts])
            assert 1 <= n < wanted or wanted < 2
            shadow[offset : offset + n] = b"".join(parts)[:n]
        assert inner.data == bytes(shadow)
        assert injector.stats.short_ios_injected > 150

    async def test_one_byte_request_is_never_shortened(self) -> None:
        injector = make(short_io_rate=1.0)
        buf = bytearray(1)
        for _ in range(20):
            assert await injector.read_into(5, [mv(buf)]) == 1
        assert injector.stats.short_ios_injected == 0

    async def test_short_read_at_eof_still_returns_inner_count(self) -> None:
        injector = make(short_io_rate=1.0)
        buf = bytearray(100)
        assert await injector.read_into(len(DATA), [mv(buf)]) == 0  # EOF, from inner
        n = await injector.read_into(len(DATA) - 3, [mv(buf)])
        assert 1 <= n <= 3

    async def test_non_byte_buffers_are_cut_in_bytes(self) -> None:
        injector = make(short_io_rate=1.0)
        buf = bytearray(64)
        n = await injector.read_into(0, [mv(buf).cast("I")])
        assert 1 <= n < 64
        assert bytes(buf[:n]) == DATA[:n]


class TestLatency:
    @pytest.fixture
    def sleeps(self, monkeypatch: pytest.MonkeyPatch) -> list[float]:
        delays: list[float] = []

        async def fake_sleep(delay: float) -> None:
            delays.append(delay)
            await anyio.lowlevel.checkpoint()

        monkeypatch.setattr(anyio, "sleep", fake_sleep)
        return delays

    async def test_latency_before_every_call(self, sleeps: list[float]) -> None:
        injector = make(latency=0.5)
        await run_script(injector, 10)
        assert sleeps == [0.5] * 10
        injector.latency = 0.0
        await run_script(injector, 10)
        assert len(sleeps) == 10

    async def test_latency_applies_to_injected_errors(self, sleeps: list[float]) -> None:
        injector = make(error_rate=1.0, latency=0.25)
        with pytest.raises(OSError, match="injected"):
            await injector.sync()
        assert sleeps == [0.25]

    async def test_cancelled_during_latency_skips_inner(self) -> None:
        injector = make(latency=60.0)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await injector.write_from(0, [mv(b"XYZ")])
        assert scope.cancelled_caught
        assert injector.inner.data == DATA  # type: ignore[attr-defined]


async def test_fd_passes_through(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    async with FaultInjector(await LocalFile.open(path), seed=0, error_rate=1.0) as injector:
        assert injector.fd() == injector.inner.fd() >= 0
    assert injector.fd() == -1  # aclose closed the inner file
    assert make().fd() == -1


async def test_aclose_without_inner_aclose() -> None:
    class Bare:
        def fd(self) -> int:
            return 42

    injector = FaultInjector(Bare(), seed=0)  # type: ignore[arg-type]
    await injector.aclose()
    assert injector.fd() == 42


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_injected_error_is_a_checkpoint() -> None:
    from trio.testing import assert_checkpoints

    injector = make(error_rate=1.0)
    with assert_checkpoints(), pytest.raises(OSError, match="injected"):
        await injector.sync()


class TestRevalidation:
    """The wrapper passes the Revalidating hook through: a wrapped file that changes on disk is
    still followed, and the hook can be faulted like any other call."""

    async def test_a_wrapped_local_file_is_revalidated(self, tmp_path: Path) -> None:
        path = tmp_path / "f"
        old, new = DATA, b"N" * (len(DATA) // 2 + 100)
        path.write_bytes(old)
        async with (
            FaultInjector(await LocalFile.open(path), seed=0) as injector,
            CacheStore(1 << 20, registry=CollectorRegistry(), readahead_max=0) as store,
            store.open("k", injector) as inode,
        ):
            assert isinstance(injector, Revalidating)
            assert await inode.read(0, len(old)) == old
            assert await inode.revalidate() is False
            path.write_bytes(new)  # same inode, rewritten at another size
            # Without the pass-through this answered False and kept serving the old bytes.
            assert await inode.revalidate() is True
            assert inode.size == len(new)
            assert await inode.read(0, len(old)) == new
            # An injected failure of the hook: the inode is told, nothing changes.
            cached = inode.cached_bytes
            path.write_bytes(old)
            injector.error_rate = 1.0
            with pytest.raises(BackingError, match="injected"):
                await inode.revalidate()
            assert injector.stats.errors_injected == 1
            assert inode.size == len(new)
            assert inode.cached_bytes == cached
            injector.error_rate = 0.0
            assert await inode.revalidate() is True
            assert await inode.read(0, len(old)) == old

    async def test_without_the_inner_hook_nothing_changed_and_nothing_is_drawn(self) -> None:
        rates = {"error_rate": 0.5, "short_io_rate": 0.5}
        injector = make(seed=5, **rates)
        assert not isinstance(injector.inner, Revalidating)
        assert await injector.refresh() is False
        assert injector.stats == FaultStats()  # no call counted, no fault drawn
        # The fault sequence was not shifted: the same faults as an injector never asked.
        assert await run_script(injector, 30) == await run_script(make(seed=5, **rates), 30)
