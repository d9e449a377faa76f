"""One contract suite over every backing (in the spirit of trio's ``generic_lock_test``).

Each test gets a ``make`` factory for one backing kind and runs on asyncio and trio.
"""

from __future__ import annotations

import os
from itertools import count
from typing import TYPE_CHECKING, TypeAlias

import anyio
import pytest

from aiocache_inode.attrs import AttrMask, Attrs
from aiocache_inode.backing import BackingFile, FaultInjector, LocalFile, MemoryBacking
from aiocache_inode.errors import ClosedError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

AnyBacking: TypeAlias = LocalFile | MemoryBacking | FaultInjector

KINDS = ["local", "memory", "faults"]
SEC = 1_000_000_000


class Maker:
    """Builds backings of one kind holding given bytes; closes them all at the end."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self._tmp_path = tmp_path
        self._names = count()
        self.opened: list[AnyBacking] = []

    async def __call__(self, data: bytes = b"") -> AnyBacking:
        backing: AnyBacking
        if self.kind == "local":
            path = self._tmp_path / f"file{next(self._names)}"
            path.write_bytes(data)
            backing = await LocalFile.open(path, writable=True)
        elif self.kind == "memory":
            backing = MemoryBacking(data)
        else:
            backing = FaultInjector(MemoryBacking(data), seed=1234)
        self.opened.append(backing)
        return backing

    async def aclose(self) -> None:
        for backing in self.opened:
            await backing.aclose()


@pytest.fixture(params=KINDS)
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Maker]:
    maker = Maker(str(request.param), tmp_path)
    try:
        yield maker
    finally:
        await maker.aclose()


async def read_all(backing: BackingFile, offset: int, size: int) -> bytes:
    buf = bytearray(size)
    n = await backing.read_into(offset, [memoryview(buf)])
    return bytes(buf[:n])


async def contents(backing: BackingFile) -> bytes:
    size = (await backing.get_attributes()).size
    return await read_all(backing, 0, size)


DATA = bytes(range(256)) * 40  # 10240 bytes, not page-aligned at the end below


async def test_satisfies_protocol(make: Maker) -> None:
    backing = await make(b"")
    assert isinstance(backing, BackingFile)


async def test_read_whole_and_at_offset(make: Maker) -> None:
    backing = await make(DATA)
    assert await read_all(backing, 0, len(DATA)) == DATA
    assert await read_all(backing, 4095, 3) == DATA[4095:4098]


async def test_read_into_several_buffers_in_order(make: Maker) -> None:
    backing = await make(DATA)
    bufs = [bytearray(n) for n in (1, 0, 4096, 7, 3000)]
    n = await backing.read_into(100, [memoryview(b) for b in bufs])
    assert n == sum(map(len, bufs))
    assert b"".join(bufs) == DATA[100 : 100 + n]


async def test_read_into_non_byte_format_buffer(make: Maker) -> None:
    backing = await make(DATA)
    buf = bytearray(8)
    n = await backing.read_into(2, [memoryview(buf).cast("H")])
    assert n == 8
    assert bytes(buf) == DATA[2:10]


async def test_short_read_at_eof(make: Maker) -> None:
    backing = await make(DATA)
    buf = bytearray(b"\xff" * 10)
    assert await backing.read_into(len(DATA) - 2, [memoryview(buf)]) == 2
    assert bytes(buf[:2]) == DATA[-2:]
    assert bytes(buf[2:]) == b"\xff" * 8  # untouched past EOF
    assert await backing.read_into(len(DATA), [memoryview(buf)]) == 0
    assert await backing.read_into(len(DATA) + 5000, [memoryview(buf)]) == 0


async def test_short_read_spanning_buffers_at_eof(make: Maker) -> None:
    backing = await make(b"abcdef")
    a, b, c = bytearray(4), bytearray(4), bytearray(4)
    assert await backing.read_into(1, [memoryview(a), memoryview(b), memoryview(c)]) == 5
    assert (bytes(a), bytes(b[:1])) == (b"bcde", b"f")


async def test_read_of_empty_file_is_eof(make: Maker) -> None:
    backing = await make(b"")
    assert await backing.read_into(0, [memoryview(bytearray(16))]) == 0


async def test_zero_length_requests(make: Maker) -> None:
    backing = await make(DATA)
    assert await backing.read_into(0, []) == 0
    assert await backing.read_into(0, [memoryview(bytearray(0))]) == 0
    assert await backing.write_from(0, []) == 0
    assert await contents(backing) == DATA


async def test_write_then_read(make: Maker) -> None:
    backing = await make(DATA)
    parts = [b"hello", b"", b" ", b"world" * 1000]
    n = await backing.write_from(10, [memoryview(p) for p in parts])
    payload = b"".join(parts)
    assert n == len(payload)
    expected = DATA[:10] + payload + DATA[10 + len(payload) :]
    assert await contents(backing) == expected
    assert (await backing.get_attributes()).size == len(expected)


async def test_write_extends_file(make: Maker) -> None:
    backing = await make(b"abc")
    assert await backing.write_from(2, [memoryview(b"XYZ")]) == 3
    assert await contents(backing) == b"abXYZ"
    assert (await backing.get_attributes()).size == 5


async def test_write_past_end_zero_fills_hole(make: Maker) -> None:
    backing = await make(b"abc")
    assert await backing.write_from(10_000, [memoryview(b"end")]) == 3
    assert (await backing.get_attributes()).size == 10_003
    assert await contents(backing) == b"abc" + bytes(10_000 - 3) + b"end"


async def test_write_from_readonly_memoryview(make: Maker) -> None:
    backing = await make(b"")
    assert await backing.write_from(0, [memoryview(b"ro").toreadonly()]) == 2
    assert await contents(backing) == b"ro"


async def test_set_attributes_size_truncates(make: Maker) -> None:
    backing = await make(DATA)
    await backing.set_attributes(AttrMask.SIZE, Attrs(size=100), False)
    assert (await backing.get_attributes()).size == 100
    assert await contents(backing) == DATA[:100]


async def test_set_attributes_size_zero_extends(make: Maker) -> None:
    backing = await make(b"abc")
    await backing.set_attributes(AttrMask.SIZE, Attrs(size=5000), False)
    assert (await backing.get_attributes()).size == 5000
    assert await contents(backing) == b"abc" + bytes(4997)


async def test_truncate_then_extend_reads_zeros(make: Maker) -> None:
    backing = await make(DATA)
    await backing.set_attributes(AttrMask.SIZE, Attrs(size=10), False)
    await backing.set_attributes(AttrMask.SIZE, Attrs(size=20), False)
    assert await contents(backing) == DATA[:10] + bytes(10)


async def test_set_attributes_mode_and_times(make: Maker) -> None:
    backing = await make(b"x")
    mask = AttrMask.MODE | AttrMask.ATIME | AttrMask.MTIME
    await backing.set_attributes(mask, Attrs(mode=0o640, atime=1000 * SEC, mtime=2000 * SEC), True)
    got = await backing.get_attributes()
    assert (got.mode, got.atime, got.mtime, got.size) == (0o640, 1000 * SEC, 2000 * SEC, 1)


async def test_set_attributes_one_time_keeps_the_other(make: Maker) -> None:
    backing = await make(b"x")
    both = AttrMask.ATIME | AttrMask.MTIME
    await backing.set_attributes(both, Attrs(atime=1000 * SEC, mtime=2000 * SEC), True)
    await backing.set_attributes(AttrMask.ATIME, Attrs(atime=3000 * SEC, mtime=1), True)
    got = await backing.get_attributes()
    assert (got.atime, got.mtime) == (3000 * SEC, 2000 * SEC)
    await backing.set_attributes(AttrMask.MTIME, Attrs(atime=1, mtime=4000 * SEC), True)
    got = await backing.get_attributes()
    assert (got.atime, got.mtime) == (3000 * SEC, 4000 * SEC)


async def test_set_attributes_owner_to_current(make: Maker) -> None:
    backing = await make(b"x")
    before = await backing.get_attributes()
    owner = Attrs(uid=before.uid, gid=before.gid)
    await backing.set_attributes(AttrMask.UID | AttrMask.GID, owner, False)
    after = await backing.get_attributes()
    assert (after.uid, after.gid) == (before.uid, before.gid)


async def test_set_attributes_unsettable_fields_do_not_fail(make: Maker) -> None:
    backing = await make(b"abc")
    mask = AttrMask.CTIME | AttrMask.USAGE
    await backing.set_attributes(mask, Attrs(usage=1 << 40, ctime=5 * SEC), False)
    got = await backing.get_attributes()
    assert got.size == 3
    assert got.usage != 1 << 40  # usage reflects what the store holds, never the request


async def test_set_attributes_empty_mask_changes_nothing(make: Maker) -> None:
    backing = await make(DATA)
    before = await backing.get_attributes()
    await backing.set_attributes(AttrMask.NONE, Attrs(size=1, mode=0o777), True)
    after = await backing.get_attributes()
    assert (after.size, after.mode) == (before.size, before.mode)
    assert await contents(backing) == DATA


async def test_allocate_grows_with_zeros(make: Maker) -> None:
    backing = await make(b"abc")
    await backing.allocate(1000, 24)
    assert (await backing.get_attributes()).size == 1024
    assert await contents(backing) == b"abc" + bytes(1021)


async def test_allocate_inside_never_shrinks_or_changes_data(make: Maker) -> None:
    backing = await make(DATA)
    await backing.allocate(0, 10)
    await backing.allocate(100, 0)
    assert await contents(backing) == DATA


async def test_sync(make: Maker) -> None:
    backing = await make(DATA)
    await backing.write_from(0, [memoryview(b"synced")])
    await backing.sync()
    assert await read_all(backing, 0, 6) == b"synced"


async def test_get_attributes_tracks_size(make: Maker) -> None:
    backing = await make(b"")
    assert (await backing.get_attributes()).size == 0
    await backing.write_from(0, [memoryview(b"12345")])
    attrs = await backing.get_attributes()
    assert attrs.size == 5
    assert attrs.links >= 1
    assert 0 <= attrs.mode <= 0o7777


async def test_fd(make: Maker) -> None:
    backing = await make(b"")
    if make.kind == "local":
        assert backing.fd() >= 0
        os.fstat(backing.fd())  # a live descriptor
    else:
        assert backing.fd() == -1


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.read_into(-1, [memoryview(bytearray(1))]),
        lambda b: b.write_from(-1, [memoryview(b"x")]),
        lambda b: b.allocate(-1, 1),
        lambda b: b.allocate(0, -1),
    ],
    ids=["read", "write", "allocate-offset", "allocate-length"],
)
async def test_negative_offsets_raise_value_error(
    make: Maker, call: Callable[[BackingFile], Awaitable[object]]
) -> None:
    backing = await make(b"abc")
    with pytest.raises(ValueError, match="negative"):
        await call(backing)
    assert await contents(backing) == b"abc"


async def test_concurrent_reads_at_different_offsets(make: Maker) -> None:
    backing = await make(DATA)
    results: dict[int, bytes] = {}

    async def reader(offset: int) -> None:
        results[offset] = await read_all(backing, offset, 333)

    offsets = list(range(0, len(DATA), 311))
    async with anyio.create_task_group() as tg:
        for offset in offsets:
            tg.start_soon(reader, offset)
    assert results == {offset: DATA[offset : offset + 333] for offset in offsets}


async def test_concurrent_writes_to_disjoint_ranges(make: Maker) -> None:
    backing = await make(b"")

    async def writer(i: int) -> None:
        await backing.write_from(i * 100, [memoryview(bytes([i]) * 100)])

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(writer, i)
    assert await contents(backing) == b"".join(bytes([i]) * 100 for i in range(20))


async def test_closed_backing_raises_closed_error(make: Maker) -> None:
    backing = await make(DATA)
    await backing.aclose()
    await backing.aclose()  # twice is fine
    with pytest.raises(ClosedError):
        await backing.read_into(0, [memoryview(bytearray(1))])
    with pytest.raises(ClosedError):
        await backing.write_from(0, [memoryview(b"x")])
    with pytest.raises(ClosedError):
        await backing.get_attributes()
    with pytest.raises(ClosedError):
        await backing.sync()
    assert backing.fd() == -1


async def test_async_with_closes(make: Maker) -> None:
    backing = await make(DATA)
    async with backing as entered:
        assert entered is backing
    with pytest.raises(ClosedError):
        await backing.sync()
