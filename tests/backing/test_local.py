from __future__ import annotations

import errno
import fcntl
import os
import threading
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from aiocache_inode.attrs import AttrMask, Attrs
from aiocache_inode.backing import LocalFile, local
from aiocache_inode.errors import ClosedError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from pathlib import Path

SEC = 1_000_000_000
DATA = os.urandom(64 * 1024)


def file_bytes(path: Path) -> bytes:
    """The file's bytes, read directly (small files: fine to block in a test)."""
    return path.read_bytes()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "data.bin"
    p.write_bytes(DATA)
    return p


@pytest.fixture
async def lf(path: Path) -> AsyncIterator[LocalFile]:
    async with await LocalFile.open(path, writable=True) as f:
        yield f
        f._check_invariants()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the functions run through anyio.to_thread.run_sync, in order."""
    calls: list[str] = []
    real = anyio.to_thread.run_sync

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    return calls


class TestOpen:
    async def test_missing_file_without_create(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            await LocalFile.open(tmp_path / "missing")

    async def test_create(self, tmp_path: Path) -> None:
        target = tmp_path / "new"
        async with await LocalFile.open(target, writable=True, create=True) as f:
            assert target.exists()
            assert f.writable
            assert await f.write_from(0, [memoryview(b"hi")]) == 2
        assert target.read_bytes() == b"hi"

    async def test_flags(self, path: Path) -> None:
        async with (
            await LocalFile.open(path) as ro,
            await LocalFile.open(path, writable=True) as rw,
        ):
            assert os.get_inheritable(ro.fd()) is False  # O_CLOEXEC
            assert fcntl.fcntl(ro.fd(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
            assert fcntl.fcntl(rw.fd(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR

    async def test_open_runs_in_a_worker_thread(self, path: Path, hops: list[str]) -> None:
        async with await LocalFile.open(path):
            assert hops == ["_open"]

    async def test_cancelled_open_closes_the_descriptor(
        self, path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        entered = threading.Event()
        release = threading.Event()
        opened: list[int] = []
        closed: list[int] = []
        real_open, real_close = os.open, os.close

        def slow_open(*args: Any) -> int:
            entered.set()
            release.wait(10)
            fd = real_open(*args)
            opened.append(fd)
            return fd

        def recording_close(fd: int) -> None:
            closed.append(fd)
            real_close(fd)

        monkeypatch.setattr(os, "open", slow_open)
        monkeypatch.setattr(os, "close", recording_close)
        outcome: list[str] = []

        async def opener() -> None:
            try:
                await LocalFile.open(path)
            except anyio.get_cancelled_exc_class():
                outcome.append("cancelled")
                raise
            outcome.append("opened")  # pragma: no cover - the test fails if reached

        with anyio.fail_after(10):  # a broken close or cancel must fail, not hang
            async with anyio.create_task_group() as tg:
                tg.start_soon(opener)
                await anyio.to_thread.run_sync(entered.wait, 10)
                tg.cancel_scope.cancel()
                release.set()
        assert outcome == ["cancelled"]
        assert len(opened) == 1
        assert closed == opened

    async def test_cancel_while_thread_runs_completes_the_read(
        self, lf: LocalFile, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        entered = threading.Event()
        release = threading.Event()
        real = os.preadv

        def slow(fd: int, buffers: Sequence[memoryview], offset: int) -> int:
            entered.set()
            release.wait(10)
            return real(fd, buffers, offset)

        monkeypatch.setattr(os, "preadv", slow)
        buf = bytearray(8)
        outcome: list[object] = []

        async def reader() -> None:
            outcome.append(await lf.read_into(0, [memoryview(buf)]))
            try:
                await anyio.lowlevel.checkpoint()
            except anyio.get_cancelled_exc_class():
                outcome.append("cancelled at next checkpoint")
                raise

        with anyio.fail_after(10):  # a broken close or cancel must fail, not hang
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await anyio.to_thread.run_sync(entered.wait, 10)
                tg.cancel_scope.cancel()
                release.set()
        assert outcome == [8, "cancelled at next checkpoint"]
        assert bytes(buf) == DATA[:8]

    async def test_cancelled_before_the_thread_starts_does_nothing(
        self, lf: LocalFile, path: Path
    ) -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await lf.write_from(0, [memoryview(b"never")])
        assert scope.cancelled_caught
        assert file_bytes(path) == DATA
        lf._check_invariants()

    def test_repr(self, path: Path) -> None:
        f = LocalFile(os.open(path, os.O_RDONLY), path=path)
        assert "data.bin" in repr(f)
        assert "fd=" in repr(f)
        anyio.run(f.aclose)
        assert "closed" in repr(f)

    def test_unclosed_file_warns_and_closes(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        f = LocalFile(fd, path=path)
        with pytest.warns(ResourceWarning, match="unclosed"):
            f.__del__()
        assert f.fd() == -1
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)


class TestVectoredIO:
    async def test_read_into_several_buffers(self, lf: LocalFile) -> None:
        bufs = [bytearray(n) for n in (5, 4096, 1, 0, 10_000)]
        n = await lf.read_into(123, [memoryview(b) for b in bufs])
        assert n == 5 + 4096 + 1 + 10_000
        assert b"".join(bufs) == DATA[123 : 123 + n]

    async def test_write_from_several_buffers(self, lf: LocalFile, path: Path) -> None:
        parts = [b"a" * 3, b"b" * 4096, b"", b"c"]
        assert await lf.write_from(7, [memoryview(p) for p in parts]) == 4100
        assert file_bytes(path) == DATA[:7] + b"".join(parts) + DATA[4107:]

    async def test_more_buffers_than_iov_max(self, lf: LocalFile, path: Path) -> None:
        count = local.IOV_MAX + 37
        bufs = [bytearray(3) for _ in range(count)]
        n = await lf.read_into(1, [memoryview(b) for b in bufs])
        assert n == 3 * count
        assert b"".join(bufs) == DATA[1 : 1 + n]
        parts = [bytes([i % 251]) * 2 for i in range(count)]
        assert await lf.write_from(5, [memoryview(p) for p in parts]) == 2 * count
        assert file_bytes(path)[5 : 5 + 2 * count] == b"".join(parts)

    async def test_batches_respect_the_limit(
        self, lf: LocalFile, monkeypatch: pytest.MonkeyPatch, hops: list[str]
    ) -> None:
        monkeypatch.setattr(local, "_iov_batch", 4)
        sizes: list[int] = []
        real = os.preadv

        def preadv(fd: int, buffers: Sequence[memoryview], offset: int) -> int:
            sizes.append(len(buffers))
            return real(fd, buffers, offset)

        monkeypatch.setattr(os, "preadv", preadv)
        bufs = [bytearray(10) for _ in range(11)]
        assert await lf.read_into(0, [memoryview(b) for b in bufs]) == 110
        assert b"".join(bufs) == DATA[:110]
        assert sizes == [4, 4, 3]
        assert hops == ["_vectored_io"]

    async def test_short_counts_are_looped_in_the_same_thread_call(
        self, lf: LocalFile, path: Path, monkeypatch: pytest.MonkeyPatch, hops: list[str]
    ) -> None:
        real_preadv, real_pwritev = os.preadv, os.pwritev

        def cap(buffers: Sequence[memoryview], limit: int) -> list[memoryview]:
            out = []
            for b in buffers:
                if limit <= 0:
                    break
                out.append(b[:limit])
                limit -= len(out[-1])
            return out

        def short_preadv(fd: int, buffers: Sequence[memoryview], offset: int) -> int:
            return real_preadv(fd, cap(buffers, 7), offset)

        def short_pwritev(fd: int, buffers: Sequence[memoryview], offset: int) -> int:
            return real_pwritev(fd, cap(buffers, 5), offset)

        monkeypatch.setattr(os, "preadv", short_preadv)
        monkeypatch.setattr(os, "pwritev", short_pwritev)
        bufs = [bytearray(10), bytearray(3), bytearray(20)]
        assert await lf.read_into(50, [memoryview(b) for b in bufs]) == 33
        assert b"".join(bufs) == DATA[50:83]
        parts = [b"x" * 11, b"y" * 2, b"z" * 9]
        assert await lf.write_from(0, [memoryview(p) for p in parts]) == 22
        assert file_bytes(path)[:22] == b"".join(parts)
        assert hops == ["_vectored_io", "_vectored_io"]

    async def test_short_read_stops_at_eof(self, lf: LocalFile) -> None:
        bufs = [bytearray(100), bytearray(100)]
        assert await lf.read_into(len(DATA) - 150, [memoryview(b) for b in bufs]) == 150
        assert bytes(bufs[0]) + bytes(bufs[1][:50]) == DATA[-150:]

    async def test_error_after_progress_returns_the_count_so_far(
        self, lf: LocalFile, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real = os.preadv
        calls = 0

        def failing_second(fd: int, buffers: Sequence[memoryview], offset: int) -> int:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise OSError(errno.EIO, "disk")
            return real(fd, buffers[:1], offset)

        monkeypatch.setattr(os, "preadv", failing_second)
        bufs = [bytearray(4), bytearray(4)]
        assert await lf.read_into(0, [memoryview(b) for b in bufs]) == 4
        assert bytes(bufs[0]) == DATA[:4]
        with pytest.raises(OSError, match="disk") as info:
            await lf.read_into(4, [memoryview(bufs[1])])
        assert info.value.errno == errno.EIO

    async def test_one_worker_thread_hop_per_request(self, lf: LocalFile, hops: list[str]) -> None:
        many = [memoryview(bytearray(2)) for _ in range(local.IOV_MAX * 2 + 1)]
        await lf.read_into(0, many)
        await lf.write_from(0, many)
        await lf.get_attributes()
        await lf.set_attributes(AttrMask.MODE | AttrMask.SIZE | AttrMask.MTIME, Attrs(), True)
        await lf.allocate(0, 10)
        await lf.sync()
        assert hops == [
            "_vectored_io",
            "_vectored_io",
            "_fstat_attrs",
            "_set_attributes",
            "_allocate",
            "fsync",
        ]

    async def test_no_shared_file_position(self, lf: LocalFile) -> None:
        results: dict[int, bytes] = {}

        async def reader(offset: int) -> None:
            buf = bytearray(1000)
            n = await lf.read_into(offset, [memoryview(buf)])
            results[offset] = bytes(buf[:n])

        offsets = [(i * 7919) % (len(DATA) - 1000) for i in range(64)]
        with anyio.fail_after(10):  # a broken close or cancel must fail, not hang
            async with anyio.create_task_group() as tg:
                for offset in offsets:
                    tg.start_soon(reader, offset)
        assert results == {o: DATA[o : o + 1000] for o in offsets}
        assert os.lseek(lf.fd(), 0, os.SEEK_CUR) == 0  # never seeked, never moved

    async def test_concurrent_reads_really_overlap_in_threads(
        self, lf: LocalFile, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Hold every preadv at a barrier until all have started: this only completes if the
        # requests are in flight at once, each at its own offset, on one descriptor.
        parties = 4
        barrier = threading.Barrier(parties, timeout=10)
        real = os.preadv

        def gated(fd: int, buffers: Sequence[memoryview], offset: int) -> int:
            barrier.wait()
            return real(fd, buffers, offset)

        monkeypatch.setattr(os, "preadv", gated)
        results: dict[int, bytes] = {}

        async def reader(offset: int) -> None:
            buf = bytearray(64)
            await lf.read_into(offset, [memoryview(buf)])
            results[offset] = bytes(buf)

        with anyio.fail_after(10):  # a broken close or cancel must fail, not hang
            async with anyio.create_task_group() as tg:
                for i in range(parties):
                    tg.start_soon(reader, i * 1000)
        assert results == {i * 1000: DATA[i * 1000 : i * 1000 + 64] for i in range(parties)}


class TestClose:
    async def test_requests_after_close_raise_closed_error(self, path: Path) -> None:
        f = await LocalFile.open(path, writable=True)
        fd = f.fd()
        await f.aclose()
        assert f.fd() == -1
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
        with pytest.raises(ClosedError):
            await f.write_from(0, [memoryview(b"x")])
        with pytest.raises(ClosedError):
            await f.read_into(0, [memoryview(bytearray(1))])
        with pytest.raises(ClosedError):
            await f.set_attributes(AttrMask.SIZE, Attrs(), False)
        with pytest.raises(ClosedError):
            await f.allocate(0, 1)
        with pytest.raises(ClosedError):
            await f.allocate(0, 0)
        assert file_bytes(path) == DATA

    async def test_close_waits_for_requests_in_flight(
        self, path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        entered = threading.Event()
        release = threading.Event()
        real = os.preadv

        def slow(fd: int, buffers: Sequence[memoryview], offset: int) -> int:
            entered.set()
            release.wait(10)
            return real(fd, buffers, offset)

        monkeypatch.setattr(os, "preadv", slow)
        f = await LocalFile.open(path)
        fd = f.fd()
        buf = bytearray(16)
        got: list[int] = []

        async def reader() -> None:
            got.append(await f.read_into(0, [memoryview(buf)]))

        with anyio.fail_after(10):  # a broken close or cancel must fail, not hang
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await anyio.to_thread.run_sync(entered.wait, 10)
                closing = anyio.Event()

                async def closer() -> None:
                    await f.aclose()
                    closing.set()

                tg.start_soon(closer)
                await anyio.sleep(0.01)
                assert not closing.is_set()
                assert f.fd() == -1  # refused to new users at once ...
                os.fstat(fd)  # ... but still open under the running preadv
                f._check_invariants()
                release.set()
        assert got == [16]
        assert bytes(buf) == DATA[:16]
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
        f._check_invariants()

    async def test_read_only_write_raises_ebadf(self, path: Path) -> None:
        async with await LocalFile.open(path) as f:
            with pytest.raises(OSError, match="Bad file descriptor") as info:
                await f.write_from(0, [memoryview(b"x")])
            assert info.value.errno == errno.EBADF
        assert file_bytes(path) == DATA


class TestAttributes:
    async def test_get_attributes_matches_fstat(self, lf: LocalFile, path: Path) -> None:
        os.chmod(path, 0o4751)
        attrs = await lf.get_attributes()
        st = os.stat(path)
        assert attrs == Attrs(
            size=len(DATA),
            usage=st.st_blocks * 512,
            mode=0o4751,
            uid=st.st_uid,
            gid=st.st_gid,
            atime=st.st_atime_ns,
            mtime=st.st_mtime_ns,
            ctime=st.st_ctime_ns,
            links=st.st_nlink,
        )

    async def test_links(self, lf: LocalFile, path: Path) -> None:
        os.link(path, path.with_name("second"))
        assert (await lf.get_attributes()).links == 2

    async def test_owner_names_only_the_given_ids(
        self, lf: LocalFile, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[tuple[int, int]] = []
        real = os.fchown

        def fchown(fd: int, uid: int, gid: int) -> None:
            calls.append((uid, gid))
            real(fd, uid, gid)

        monkeypatch.setattr(os, "fchown", fchown)
        me = await lf.get_attributes()
        await lf.set_attributes(AttrMask.UID, Attrs(uid=me.uid, gid=99), False)
        await lf.set_attributes(AttrMask.GID, Attrs(uid=99, gid=me.gid), False)
        await lf.set_attributes(AttrMask.UID | AttrMask.GID, Attrs(uid=me.uid, gid=me.gid), False)
        await lf.set_attributes(AttrMask.MODE, Attrs(mode=0o600), False)
        assert calls == [(me.uid, -1), (-1, me.gid), (me.uid, me.gid)]

    async def test_mode_applied_after_owner(
        self, lf: LocalFile, monkeypatch: pytest.MonkeyPatch, path: Path
    ) -> None:
        # chown clears setuid; the requested mode must win, so fchmod comes after fchown.
        order: list[str] = []
        real_chown, real_chmod = os.fchown, os.fchmod

        def fchown(fd: int, uid: int, gid: int) -> None:
            order.append("chown")
            real_chown(fd, uid, gid)
            real_chmod(fd, 0o644)  # what the kernel does to setuid bits for a non-root caller

        def fchmod(fd: int, mode: int) -> None:
            order.append("chmod")
            real_chmod(fd, mode)

        monkeypatch.setattr(os, "fchown", fchown)
        monkeypatch.setattr(os, "fchmod", fchmod)
        me = await lf.get_attributes()
        mask = AttrMask.MODE | AttrMask.UID
        await lf.set_attributes(mask, Attrs(mode=0o4755, uid=me.uid), False)
        assert order == ["chown", "chmod"]
        assert os.stat(path).st_mode & 0o7777 == 0o4755

    async def test_times_set_after_truncate(self, lf: LocalFile) -> None:
        mask = AttrMask.SIZE | AttrMask.ATIME | AttrMask.MTIME
        await lf.set_attributes(mask, Attrs(size=10, atime=5 * SEC, mtime=6 * SEC), False)
        got = await lf.get_attributes()
        assert (got.size, got.atime, got.mtime) == (10, 5 * SEC, 6 * SEC)

    async def test_unforced_times_tolerate_permission_error(
        self, lf: LocalFile, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def denied(*args: Any, **kwargs: Any) -> None:
            raise PermissionError(errno.EPERM, "not the owner")

        monkeypatch.setattr(os, "utime", denied)
        await lf.set_attributes(AttrMask.MTIME, Attrs(mtime=SEC), False)
        with pytest.raises(PermissionError):
            await lf.set_attributes(AttrMask.MTIME, Attrs(mtime=SEC), True)

    async def test_other_errors_propagate(
        self, lf: LocalFile, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def broken(fd: int, length: int) -> None:
            raise OSError(errno.EIO, "io")

        monkeypatch.setattr(os, "ftruncate", broken)
        with pytest.raises(OSError, match="io"):
            await lf.set_attributes(AttrMask.SIZE, Attrs(size=1), False)

    async def test_ctime_usage_links_are_ignored(self, lf: LocalFile) -> None:
        before = await lf.get_attributes()
        mask = AttrMask.CTIME | AttrMask.USAGE | AttrMask.LINKS
        await lf.set_attributes(mask, Attrs(ctime=SEC, usage=1, links=9), True)
        after = await lf.get_attributes()
        assert after == before


class TestAllocate:
    async def test_allocate_reserves_blocks(self, tmp_path: Path) -> None:
        async with await LocalFile.open(tmp_path / "a", writable=True, create=True) as f:
            await f.allocate(0, 1 << 20)
            attrs = await f.get_attributes()
            assert attrs.size == 1 << 20
            assert attrs.usage >= 1 << 20 or attrs.usage == 0  # usage 0: fs without st_blocks

    @pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EINVAL])
    async def test_falls_back_to_growing(
        self, lf: LocalFile, monkeypatch: pytest.MonkeyPatch, path: Path, code: int
    ) -> None:
        def unsupported(fd: int, offset: int, length: int) -> None:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(os, "posix_fallocate", unsupported)
        await lf.allocate(len(DATA) + 100, 50)
        assert file_bytes(path) == DATA + bytes(150)
        await lf.allocate(0, 10)  # inside: never shrinks
        assert len(file_bytes(path)) == len(DATA) + 150

    async def test_other_errors_propagate(
        self, lf: LocalFile, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def full(fd: int, offset: int, length: int) -> None:
            raise OSError(errno.ENOSPC, "full")

        monkeypatch.setattr(os, "posix_fallocate", full)
        with pytest.raises(OSError, match="full"):
            await lf.allocate(0, len(DATA) * 2)

    async def test_zero_length_is_a_checkpoint_only(self, lf: LocalFile, hops: list[str]) -> None:
        await lf.allocate(10, 0)
        assert hops == []


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_requests_are_checkpoints(lf: LocalFile) -> None:
    from trio.testing import assert_checkpoints

    buf = memoryview(bytearray(4))
    with assert_checkpoints():
        await lf.read_into(0, [buf])
    with assert_checkpoints():
        await lf.write_from(0, [buf])
    with assert_checkpoints():
        await lf.get_attributes()
    with assert_checkpoints():
        await lf.allocate(0, 0)
    with assert_checkpoints():
        await lf.sync()
