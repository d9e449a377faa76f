"""CachingInode.revalidate: following a backing that changed behind the cache.

Over a MemoryBacking subclass (changes made by the test), a LocalFile changed on disk, and an
S3Object on moto overwritten out of band; then a model test interleaving reads, writes,
write_out, out-of-band changes and revalidations.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from aiocache_inode import (
    PAGE_SIZE,
    AttrMask,
    Attrs,
    BackingError,
    CacheStore,
    ConflictError,
    LocalFile,
    MemoryBacking,
    Range,
    Revalidating,
    WritebackError,
)
from aiocache_inode.backing.delegating import DelegatingBacking
from aiocache_inode.backing.s3 import ObjectChangedError, S3Object, open_client

from .backing.s3_servers import Endpoint, MotoServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence
    from pathlib import Path

P = PAGE_SIZE


def store(**kw: Any) -> CacheStore:
    # No background write-back: the tests decide when dirty data reaches the backing.
    kw.setdefault("writeback_interval", 3600.0)
    kw.setdefault("dirty_expire", 3600.0)
    # No asynchronous readahead: cached byte counts stay put between two looks.
    kw.setdefault("readahead_max", 0)
    return CacheStore(8 << 20, registry=CollectorRegistry(), **kw)


class ChangingBacking(DelegatingBacking[MemoryBacking]):
    """A MemoryBacking (final, so wrapped) whose contents the test replaces behind the cache."""

    def __init__(self, data: bytes = b"") -> None:
        super().__init__(MemoryBacking(data))
        self.version = 0
        self._seen = 0
        self.refreshes = 0
        self.fail_refresh: Exception | None = None
        # Raised once (then cleared) by the next get_attributes / read_into.
        self.fail_attributes: Exception | None = None
        self.fail_read: Exception | None = None
        self.gate: anyio.Event | None = None
        self.read_gate: anyio.Event | None = None

    @property
    def data(self) -> bytes:
        return self.inner.data

    async def replace_behind(self, data: bytes) -> None:
        await self.inner.set_attributes(AttrMask.SIZE, Attrs(size=0), False)
        if data:
            await self.inner.write_from(0, [memoryview(data)])
        self.version += 1

    async def refresh(self) -> bool:
        self.refreshes += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_refresh is not None:
            raise self.fail_refresh
        await anyio.lowlevel.checkpoint()
        changed = self.version != self._seen
        self._seen = self.version
        return changed

    async def get_attributes(self) -> Attrs:
        error, self.fail_attributes = self.fail_attributes, None
        if error is not None:
            raise error
        return await self.inner.get_attributes()

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        if self.read_gate is not None:
            await self.read_gate.wait()
        error, self.fail_read = self.fail_read, None
        if error is not None:
            raise error
        return await self.inner.read_into(offset, buffers)


def old_and_new(size: int = 6 * P) -> tuple[bytes, bytes]:
    return bytes(range(256)) * (size // 256), b"N" * (size // 2 + 100)


def test_the_backings_that_can_change_have_the_hook() -> None:
    assert issubclass(S3Object, Revalidating)
    assert issubclass(LocalFile, Revalidating)
    assert not isinstance(MemoryBacking(b""), Revalidating)


class TestRevalidateOverMemory:
    async def test_a_backing_without_the_hook_never_changed(self) -> None:
        async with store() as s, s.open("k", MemoryBacking(b"abc" * 5000)) as ino:
            assert await ino.read(0, 100) == b"abc" * 33 + b"a"
            cached = ino.cached_bytes
            assert await ino.revalidate() is False
            assert ino.cached_bytes == cached

    async def test_unchanged_keeps_the_cache(self) -> None:
        old, _new = old_and_new()
        b = ChangingBacking(old)
        async with store() as s, s.open("k", b) as ino:
            assert await ino.read(0, len(old)) == old
            cached = ino.cached_bytes
            reads = b.inner.stats.reads
            assert await ino.revalidate() is False
            assert ino.cached_bytes == cached
            assert await ino.read(0, len(old)) == old
            assert b.inner.stats.reads == reads
            assert b.refreshes == 1
            assert s.statistics().evicted_bytes["revalidate"] == 0

    async def test_changed_drops_clean_pages_and_follows_the_size(self) -> None:
        old, new = old_and_new()
        b = ChangingBacking(old)
        async with store() as s, s.open("k", b) as ino:
            assert await ino.read(0, len(old)) == old
            cached = ino.cached_bytes
            assert cached > 0
            await b.replace_behind(new)
            # Until revalidated, the cache serves what it holds (the seed's UnstableAttr).
            assert ino.size == len(old)
            assert await ino.read(0, 10) == old[:10]
            assert await ino.revalidate() is True
            assert ino.cached_bytes == 0
            assert ino.size == ino.attrs.size == len(new)
            assert s.statistics().evicted_bytes["revalidate"] == cached
            assert await ino.read(0, len(old)) == new
            assert await ino.revalidate() is False
            ino._check_invariants()

    async def test_dirty_pages_are_a_conflict_and_kept(self) -> None:
        old, new = old_and_new()
        b = ChangingBacking(old)
        async with store(write_back=True) as s, s.open("k", b) as ino:
            assert await ino.read(0, len(old)) == old
            await ino.write(P + 10, b"mine")
            await ino.write(4 * P, b"x" * P)
            await b.replace_behind(new)
            with pytest.raises(ConflictError) as info:
                await ino.revalidate()
            # Whole pages: the clean bytes of a partly dirty page come along.
            assert info.value.ranges == [Range(P, 2 * P), Range(4 * P, 5 * P)]
            assert ino.dirty_ranges() == info.value.ranges
            assert ino.cached_bytes == 2 * P
            assert ino.size == 5 * P  # the end of the dirty data, past the new version's
            assert b.data == new  # nothing was written over the new version
            expect = bytearray(new + bytes(5 * P - len(new)))
            expect[P : 2 * P] = old[P : 2 * P]
            expect[P + 10 : P + 14] = b"mine"
            expect[4 * P : 5 * P] = b"x" * P
            # Past the new version's end, before the dirty page, it holds nothing.
            assert await ino.read(0, 2 * P) == bytes(expect[: 2 * P])
            assert await ino.read(4 * P, P) == b"x" * P
            ino._check_invariants()
            # The caller resolves it: write_out puts the kept pages over the new version.
            await ino.write_out()
            assert b.data[: len(new)] == bytes(expect[: len(new)])
            assert b.data[4 * P : 5 * P] == b"x" * P
            assert await ino.revalidate() is False

    @pytest.mark.parametrize("new_size", [200, P + 300, 50], ids=["inside", "past", "shorter"])
    async def test_the_tail_of_a_kept_page_past_the_old_end_shows_the_backing(
        self, new_size: int
    ) -> None:
        # The page straddling the old end is kept (it holds a dirty byte), dirty only up to the
        # old end; past it the new version's bytes are read in, clean: zeros there were no
        # version's, and dirtying them would write zeros the user never wrote over the new ones.
        b = ChangingBacking(b"a" * 100)
        async with store(write_back=True) as s, s.open("k", b) as ino:
            await ino.write(0, b"m")
            await b.replace_behind(b"N" * new_size)
            with pytest.raises(ConflictError) as info:
                await ino.revalidate()
            assert info.value.ranges == [Range(0, 100)]
            assert ino.dirty_ranges() == [Range(0, 100)]
            assert ino.size == max(new_size, 100)
            expect = b"m" + b"a" * 99 + b"N" * (new_size - 100)
            assert await ino.read(0, 2 * P) == expect
            ino._check_invariants()
            await ino.write_out()
            # Resolved: what reads show is what the backing holds.
            assert b.data == expect
            assert await ino.read(0, 2 * P) == b.data

    async def test_a_clean_last_page_is_dropped_and_read_again(self) -> None:
        b = ChangingBacking(b"a" * 100)
        async with store(write_back=True) as s, s.open("k", b) as ino:
            assert await ino.read(0, 100) == b"a" * 100
            await b.replace_behind(b"N" * 200)
            assert await ino.revalidate() is True
            assert ino.cached_bytes == 0
            assert await ino.read(0, P) == b"N" * 200

    async def test_conflict_past_the_new_end_keeps_the_size(self) -> None:
        b = ChangingBacking(b"a" * (3 * P))
        async with store(write_back=True) as s, s.open("k", b) as ino:
            await ino.write(5 * P, b"tail")
            await b.replace_behind(b"short")
            with pytest.raises(ConflictError):
                await ino.revalidate()
            assert ino.size == 5 * P + 4
            assert AttrMask.SIZE in ino.dirty_attrs
            await ino.write_out()
            assert b.data[:5] == b"short"
            assert b.data[5 * P :] == b"tail"
            assert len(b.data) == 5 * P + 4

    async def test_dirty_attributes_keep_their_local_values(self) -> None:
        b = ChangingBacking(b"a" * P)
        async with store(write_back=True) as s, s.open("k", b) as ino:
            await ino.write(0, b"b" * P)
            await ino.write_out()
            await ino.set_owner(uid=77)
            await ino.write(0, b"c")
            mtime = ino.attrs.mtime
            await ino.write_out()
            await ino.write(0, b"d")
            pending = ino.attrs.mtime
            assert pending >= mtime
            await b.replace_behind(b"z" * (2 * P))
            with pytest.raises(ConflictError):
                await ino.revalidate()
            assert ino.attrs.mtime == pending
            assert ino.attrs.uid == 77

    async def test_a_failed_refresh_changes_nothing(self) -> None:
        old, new = old_and_new()
        b = ChangingBacking(old)
        async with store() as s, s.open("k", b) as ino:
            await ino.read(0, len(old))
            cached = ino.cached_bytes
            await b.replace_behind(new)
            b.fail_refresh = OSError("store unreachable")
            with pytest.raises(BackingError, match="store unreachable"):
                await ino.revalidate()
            assert ino.cached_bytes == cached
            assert ino.size == len(old)
            assert s.statistics().backing_errors["refresh"] == 1
            b.fail_refresh = None
            assert await ino.revalidate() is True

    async def test_a_failed_attribute_read_is_followed_by_the_next_revalidation(self) -> None:
        old, new = old_and_new()
        b = ChangingBacking(old)
        async with store() as s, s.open("k", b) as ino:
            await ino.read(0, len(old))
            await b.replace_behind(new)
            b.fail_attributes = OSError("attributes unreachable")
            with pytest.raises(BackingError, match="attributes unreachable") as info:
                await ino.revalidate()
            assert "changed behind the cache" in str(info.value)
            assert isinstance(info.value.__cause__, OSError)
            # The stale pages went at once; the size waits for the attributes.
            assert (ino.attributes_stale, ino.cached_bytes, ino.size) == (True, 0, len(old))
            # The backing reports the change once; the inode remembers it was not followed.
            assert await ino.revalidate() is True
            assert not ino.attributes_stale
            assert ino.size == ino.attrs.size == len(new)
            assert await ino.read(0, len(old)) == new
            assert await ino.revalidate() is False
            ino._check_invariants()

    async def test_pages_read_while_stale_are_dropped_by_the_retry(self) -> None:
        b = ChangingBacking(b"a" * 100)
        async with store() as s, s.open("k", b) as ino:
            await ino.read(0, 100)
            await b.replace_behind(b"N" * 300)
            b.fail_attributes = OSError("attributes unreachable")
            with pytest.raises(BackingError):
                await ino.revalidate()
            # On the old size: the page is filled from the new version, zeros past 100.
            assert await ino.read(0, P) == b"N" * 100
            assert ino.cached_bytes == P
            assert await ino.revalidate() is True
            assert await ino.read(0, P) == b"N" * 300

    async def test_a_conflict_is_still_reported_after_a_failed_attribute_read(self) -> None:
        old, new = old_and_new()
        b = ChangingBacking(old)
        async with store(write_back=True) as s, s.open("k", b) as ino:
            await ino.read(0, len(old))
            await ino.write(P + 10, b"mine")
            await b.replace_behind(new)
            b.fail_attributes = OSError("attributes unreachable")
            with pytest.raises(BackingError, match="4096 dirty bytes kept"):
                await ino.revalidate()
            assert (ino.attributes_stale, ino.dirty_ranges()) == (True, [Range(P, 2 * P)])
            with pytest.raises(ConflictError) as info:
                await ino.revalidate()
            assert info.value.ranges == [Range(P, 2 * P)]
            assert not ino.attributes_stale
            assert ino.size == len(new)
            ino._check_invariants()

    async def test_a_failed_tail_read_is_retried(self) -> None:
        b = ChangingBacking(b"a" * 100)
        async with store(write_back=True) as s, s.open("k", b) as ino:
            await ino.write(0, b"m")
            await b.replace_behind(b"N" * 200)
            b.fail_read = OSError("read unreachable")
            with pytest.raises(BackingError, match="read unreachable"):
                await ino.revalidate()
            assert (ino.attributes_stale, ino.size) == (True, 100)
            assert await ino.read(0, P) == b"m" + b"a" * 99
            with pytest.raises(ConflictError) as info:
                await ino.revalidate()
            assert info.value.ranges == [Range(0, 100)]
            assert await ino.read(0, P) == b"m" + b"a" * 99 + b"N" * 100
            ino._check_invariants()

    async def test_cancelled_once_asked_it_completes(self) -> None:
        old, new = old_and_new()
        b = ChangingBacking(old)
        async with store() as s, s.open("k", b) as ino:
            await ino.read(0, len(old))
            await b.replace_behind(new)
            b.gate = anyio.Event()
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ino.revalidate)
                    while not b.refreshes:
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()
                    b.gate.set()
            assert ino.cached_bytes == 0
            assert ino.size == len(new)
            assert await ino.read(0, len(new)) == new

    async def test_cancelled_before_asking_changes_nothing(self) -> None:
        old, new = old_and_new()
        b = ChangingBacking(old)
        async with store() as s, s.open("k", b) as ino:
            await ino.read(0, len(old))
            await b.replace_behind(new)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await ino.revalidate()
            assert b.refreshes == 0
            assert ino.size == len(old)

    async def test_a_fill_in_flight_is_discarded(self) -> None:
        old, new = old_and_new(16 * P)
        b = ChangingBacking(old)
        async with store() as s, s.open("k", b) as ino:
            got: list[bytes] = []

            async def reader() -> None:
                got.append(await ino.read(0, 2 * P))

            gate = b.read_gate = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                while not ino.statistics().inflight_ops:
                    await anyio.lowlevel.checkpoint()
                await b.replace_behind(new)
                # The fill reads after the change: its bytes may be new, but are not cached.
                tg.start_soon(ino.revalidate)
                while b.refreshes == 0:
                    await anyio.lowlevel.checkpoint()
                gate.set()
            assert ino.size == len(new)
            assert await ino.read(0, 2 * P) == new[: 2 * P]
            ino._check_invariants()


class TestRevalidateOverLocalFile:
    async def test_a_change_on_disk_is_seen(self, tmp_path: Path) -> None:
        path = tmp_path / "f"
        old, new = old_and_new()
        path.write_bytes(old)
        async with (
            await LocalFile.open(path, writable=True) as lf,
            store() as s,
            s.open("k", lf) as ino,
        ):
            assert await ino.read(0, len(old)) == old
            assert await ino.revalidate() is False
            path.write_bytes(new)  # same inode, truncated and rewritten
            assert await ino.revalidate() is True
            assert ino.size == len(new)
            assert await ino.read(0, len(old)) == new

    async def test_our_own_writes_are_not_a_change(self, tmp_path: Path) -> None:
        path = tmp_path / "f"
        path.write_bytes(b"a" * (4 * P))
        async with (
            await LocalFile.open(path, writable=True) as lf,
            store(write_back=True) as s,
            s.open("k", lf) as ino,
        ):
            await ino.read(0, 4 * P)
            await ino.write(P, b"b" * (3 * P))
            await ino.write_out()
            await ino.truncate(2 * P)
            await ino.allocate(0, 3 * P)
            cached = ino.cached_bytes
            assert await ino.revalidate() is False
            assert ino.cached_bytes == cached

    async def test_a_same_size_rewrite_is_seen_by_its_mtime(self, tmp_path: Path) -> None:
        path = tmp_path / "f"
        path.write_bytes(b"a" * P)
        async with await LocalFile.open(path, writable=True) as lf:
            assert await lf.refresh() is False
            st = os.stat(path)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, b"b" * P, 0)
            finally:
                os.close(fd)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
            assert await lf.refresh() is True
            assert await lf.refresh() is False


# --------------------------------------------------------------------------------------------
# Over S3Object on moto
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[Endpoint]:
    server = MotoServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
async def s3(moto: Endpoint) -> AsyncIterator[Any]:
    async with open_client(moto.config()) as client:
        yield client


_keys = iter(range(1 << 30))


def put(endpoint: Endpoint, data: bytes, key: str | None = None) -> str:
    key = key or f"reval-{next(_keys)}-{os.getpid()}"
    endpoint.boto3().put_object(Bucket=endpoint.bucket, Key=key, Body=data)
    return key


def get(endpoint: Endpoint, key: str) -> bytes:
    return bytes(endpoint.boto3().get_object(Bucket=endpoint.bucket, Key=key)["Body"].read())


class TestRevalidateOverS3:
    async def test_an_out_of_band_overwrite_is_followed(self, moto: Endpoint, s3: Any) -> None:
        old, new = old_and_new()
        key = put(moto, old)
        async with (
            await S3Object.open(s3, moto.bucket, key) as obj,
            store() as s,
            s.open(key, obj) as ino,
        ):
            assert await ino.read(0, len(old)) == old
            assert await ino.revalidate() is False
            put(moto, new, key)
            assert await ino.revalidate() is True
            assert ino.size == len(new)
            assert await ino.read(0, len(old)) == new
            assert s.statistics().evicted_bytes["revalidate"] > 0

    async def test_dirty_pages_over_an_overwrite_conflict(self, moto: Endpoint, s3: Any) -> None:
        old, new = old_and_new()
        key = put(moto, old)
        async with (
            await S3Object.open(s3, moto.bucket, key) as obj,
            store(write_back=True) as s,
            s.open(key, obj) as ino,
        ):
            await ino.read(0, len(old))
            await ino.write(0, b"ours")
            put(moto, new, key)
            with pytest.raises(ConflictError) as info:
                await ino.revalidate()
            assert info.value.ranges == [Range(0, P)]
            assert get(moto, key) == new  # theirs stands
            assert await ino.read(0, 4) == b"ours"
            await ino.write_out()  # the caller chose: ours over theirs, page by page
            stored = get(moto, key)
            assert stored[:P] == b"ours" + old[4:P]
            assert stored[P:] == new[P:]

    @staticmethod
    async def _flush_then_overwrite(moto: Endpoint, obj: S3Object, old: bytes, new: bytes) -> None:
        async with store(write_back=True) as s, s.open(obj.key, obj) as ino:
            await ino.read(0, len(old))
            await ino.write(0, b"ours")
            await s.run_flush_pass(everything=True)  # in the overlay, not synced
            assert not ino.dirty_ranges()
            put(moto, new, obj.key)
            with pytest.raises(BackingError) as info:
                await ino.revalidate()
            assert isinstance(info.value.__cause__, ObjectChangedError)
            assert await ino.read(0, 4) == b"ours"
            with pytest.raises(BackingError):
                await ino.write_out()  # If-Match: the new version is never overwritten
            assert obj.dirty

    async def test_written_back_unsynced_data_refuses_to_move(
        self, moto: Endpoint, s3: Any
    ) -> None:
        old, new = old_and_new()
        key = put(moto, old)
        async with await S3Object.open(s3, moto.bucket, key) as obj:
            # Closing the store still cannot save it, and says so.
            with pytest.raises(WritebackError, match="PreconditionFailed"):
                await self._flush_then_overwrite(moto, obj, old, new)
            assert get(moto, key) == new


# --------------------------------------------------------------------------------------------
# Model test
# --------------------------------------------------------------------------------------------

SPAN = 8 * P

ops = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(0, SPAN), st.integers(1, 3 * P)),
        st.tuples(st.just("write"), st.integers(0, SPAN), st.binary(min_size=1, max_size=2 * P)),
        st.tuples(st.just("write_out")),
        st.tuples(st.just("change"), st.binary(max_size=SPAN)),
        st.tuples(st.just("revalidate")),
        st.tuples(st.just("revalidate_attributes_fail")),
    ),
    max_size=25,
)


def _patched(base: bytes, size: int, dirty: dict[int, int]) -> bytes:
    out = bytearray(base[:size]) + bytes(max(0, size - len(base)))
    for off, value in dirty.items():
        out[off] = value
    return bytes(out)


class _Model:
    """What the cache must show: the backing's bytes (as last seen) with the unsaved ones."""

    def __init__(self, data: bytes) -> None:
        self.backing = data  # what the backing holds
        self.seen = data  # the version the cache follows
        self.size = len(data)
        self.dirty: dict[int, int] = {}  # offset -> byte not yet in the backing
        self.pending = False  # changed behind the cache, not yet revalidated
        self.conflicted = False  # a ConflictError not yet resolved by write_out

    @property
    def specified(self) -> bool:
        return not self.pending and not self.conflicted

    def view(self) -> bytes:
        return _patched(self.seen, self.size, self.dirty)

    def write(self, offset: int, data: bytes) -> None:
        for i, value in enumerate(data):
            self.dirty[offset + i] = value
        self.size = max(self.size, offset + len(data))

    def write_out(self) -> None:
        self.backing = _patched(self.backing, self.size, self.dirty)
        if not self.pending:
            self.seen = self.backing
        self.dirty.clear()
        self.conflicted = False

    def revalidate(self) -> tuple[bool, list[Range]]:
        """Return (changed, conflict ranges) and follow the change."""
        if not self.pending:
            return False, []
        self.pending = False
        pages = sorted({off // P for off in self.dirty})
        if not pages:
            self.seen = self.backing
            self.size = len(self.backing)
            return True, []
        old = self.view()
        ranges: list[Range] = []
        for page in pages:
            start, end = page * P, min((page + 1) * P, self.size)
            for off in range(start, end):
                self.dirty[off] = old[off]
            if ranges and ranges[-1].end == start:
                ranges[-1] = Range(ranges[-1].start, end)
            else:
                ranges.append(Range(start, end))
        self.size = max(len(self.backing), ranges[-1].end)
        self.seen = self.backing
        self.conflicted = True
        return True, ranges


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(start=st.binary(max_size=SPAN), steps=ops)
def test_model(anyio_backend: str, start: bytes, steps: list[tuple[Any, ...]]) -> None:
    anyio.run(_run_model, start, steps, backend=anyio_backend)


async def _run_model(start: bytes, steps: list[tuple[Any, ...]]) -> None:
    model = _Model(start)
    b = ChangingBacking(start)
    async with store(write_back=True) as s, s.open("k", b) as ino:
        for step in steps:
            kind = step[0]
            if kind == "read":
                _, offset, size = step
                got = await ino.read(offset, size)
                if model.specified:
                    assert got == model.view()[offset : offset + size], step
            elif kind == "write":
                # Writing over a changed, unrevalidated file fills partial pages from whichever
                # version the backing has; the model keeps to states it can predict.
                if not model.specified:
                    continue
                _, offset, data = step
                await ino.write(offset, data)
                model.write(offset, data)
            elif kind == "write_out":
                if model.pending:
                    continue  # it would mix the versions in ways only revalidate sorts out
                await ino.write_out()
                model.write_out()
                assert b.data == model.backing
            elif kind == "change":
                if model.conflicted:
                    continue
                await b.replace_behind(step[1])
                model.backing = step[1]
                model.pending = True
            elif kind == "revalidate_attributes_fail":
                # The attribute read after the hook fails: a change stays to be followed.
                b.fail_attributes = OSError("attributes unreachable")
                if model.pending:
                    with pytest.raises(BackingError):
                        await ino.revalidate()
                    assert ino.attributes_stale
                else:
                    assert await ino.revalidate() is False  # unchanged: never read
                b.fail_attributes = None
            else:
                changed, ranges = model.revalidate()
                if ranges:
                    with pytest.raises(ConflictError) as info:
                        await ino.revalidate()
                    assert info.value.ranges == ranges
                else:
                    assert await ino.revalidate() is changed
                assert ino.size == model.size
            ino._check_invariants()
        if model.specified:
            assert await ino.read(0, model.size + 1) == model.view()
