"""MeteredBacking: the store's meter at the edge of every backing it opens."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest
from prometheus_client import CollectorRegistry

from aiocache_inode import PAGE_SIZE, CacheStore, Revalidating
from aiocache_inode.attrs import AttrMask, Attrs
from aiocache_inode.backing import FaultInjector, LocalFile, MemoryBacking
from aiocache_inode.backing.delegating import DelegatingBacking
from aiocache_inode.backing.metered import MeteredBacking, MeteredRevalidating, metered
from aiocache_inode.stats import BACKING_OPS, Counters

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

P = PAGE_SIZE
DATA = bytes(range(256)) * 64  # 16 KiB


class Observed:
    """The ``observe`` hook: records every (op, seconds) it is handed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def __call__(self, op: str, seconds: float) -> None:
        self.calls.append((op, seconds))


class Failing(DelegatingBacking[MemoryBacking]):
    """Every read raises EIO; every write waits on ``gate`` first (so a test can cancel it)."""

    def __init__(self, inner: MemoryBacking) -> None:
        super().__init__(inner)
        self.gate = anyio.Event()

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        await anyio.lowlevel.checkpoint()
        raise OSError(errno.EIO, "read failed")

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        await self.gate.wait()
        return await self.inner.write_from(offset, buffers)


async def test_every_request_is_counted_timed_and_observed_by_op() -> None:
    inner = MemoryBacking(DATA)
    counters = Counters()
    seen = Observed()
    m = metered(inner, counters, seen)
    buf = bytearray(3 * P)
    assert await m.read_into(P, [memoryview(buf)]) == 3 * P
    assert await m.write_from(len(DATA), [memoryview(b"xyz")]) == 3
    await m.set_attributes(AttrMask.SIZE, Attrs(size=len(DATA) + 10), False)
    await m.allocate(0, 10)
    await m.sync()
    assert (await m.get_attributes()).size == len(DATA) + 10
    assert m.fd() == inner.fd()  # not a request: not counted
    assert bytes(buf) == DATA[P : 4 * P]
    want = dict.fromkeys(BACKING_OPS, 1) | {"refresh": 0}
    assert counters.backing_requests == want
    assert counters.backing_errors == dict.fromkeys(BACKING_OPS, 0)
    assert counters.backing_bytes == {"read": 3 * P, "write": 3}
    assert [op for op, _ in seen.calls] == [
        "read",
        "write",
        "set_attributes",
        "allocate",
        "sync",
        "get_attributes",
    ]
    for op, dt in seen.calls:
        assert dt >= 0
        assert counters.backing_seconds[op] == dt


async def test_a_failure_is_an_error_a_cancellation_is_not() -> None:
    inner = MemoryBacking(DATA)
    counters = Counters()
    seen = Observed()
    m = metered(Failing(inner), counters, seen)
    with pytest.raises(OSError, match="read failed"):
        await m.read_into(0, [memoryview(bytearray(P))])
    with anyio.CancelScope() as scope:
        scope.cancel()
        await m.write_from(0, [memoryview(b"never")])
    assert scope.cancelled_caught
    assert counters.backing_requests["read"] == counters.backing_errors["read"] == 1
    assert counters.backing_requests["write"] == 1
    assert counters.backing_errors["write"] == 0
    # Both ended, so both were timed; neither moved a byte.
    assert [op for op, _ in seen.calls] == ["read", "write"]
    assert counters.backing_bytes == {"read": 0, "write": 0}
    assert inner.data == DATA


async def test_the_hook_is_passed_on_only_when_inner_has_it(tmp_path: Path) -> None:
    counters = Counters()
    seen = Observed()
    plain = metered(MemoryBacking(DATA), counters, seen)
    assert type(plain) is MeteredBacking
    assert not isinstance(plain, Revalidating)
    path = tmp_path / "f"
    path.write_bytes(DATA)
    async with await LocalFile.open(path) as local:
        hooked = metered(local, counters, seen)
        assert isinstance(hooked, MeteredRevalidating)
        assert isinstance(hooked, Revalidating)
        assert await hooked.refresh() is False
        path.write_bytes(b"changed")
        assert await hooked.refresh() is True
    assert counters.backing_requests["refresh"] == 2
    assert counters.backing_errors["refresh"] == 0
    # A FaultInjector always has the hook (it answers for a hookless inner): metered as one.
    assert isinstance(
        metered(FaultInjector(MemoryBacking(b""), seed=1), counters, seen), Revalidating
    )


async def test_the_store_meters_at_the_edge_and_hands_out_the_backing_it_was_given() -> None:
    inner = MemoryBacking(DATA)
    s = CacheStore(1 << 20, registry=CollectorRegistry(), readahead_max=0)
    async with s as store, store.open("f", inner) as inode:
        assert inode.backing is inner
        assert await inode.read(0, 2 * P) == DATA[: 2 * P]
        assert await inode.read(0, 2 * P) == DATA[: 2 * P]  # a hit: no request
        await inode.write(5 * P, b"w" * 100)  # write-through to an uncached gap
        stats = store.statistics()
    assert stats.backing_requests["get_attributes"] == inner.stats.get_attributes == 1
    assert stats.backing_requests["read"] == inner.stats.reads
    assert stats.backing_requests["write"] == inner.stats.writes == 1
    assert stats.backing_bytes == {
        "read": inner.stats.read_bytes,
        "write": inner.stats.written_bytes,
    }
    assert stats.backing_bytes["write"] == 100
