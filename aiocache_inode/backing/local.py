"""A backing file over a host file: positional vectored I/O, one worker-thread hop per request.

Every request runs as ONE ``anyio.to_thread.run_sync`` call. Inside that thread, reads and writes
are ``os.preadv`` / ``os.pwritev`` at an explicit offset, looped over short counts and over
``IOV_MAX``-sized batches of buffers, so a request costs one thread hop however many buffers it
names. The rejected alternative, seek-then-read on the descriptor, shares one file position
between concurrent requests and needs a lock to stay correct; positional I/O needs none (compare
gVisor's host file ``ReadAt``/``WriteAt``, which use ``preadv``/``pwritev`` for the same reason).
"""

from __future__ import annotations

import errno
import os
import warnings
from typing import TYPE_CHECKING, Final, final

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..attrs import AttrMask, Attrs
from ..errors import ClosedError
from .base import byte_view

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

__all__ = ["IOV_MAX", "LocalFile"]


def _sysconf_iov_max() -> int:
    try:
        value = os.sysconf("SC_IOV_MAX")
    except (ValueError, OSError):  # pragma: no cover - every supported platform defines it
        return 1024
    return value if value > 0 else 1024  # -1 means "no limit reported"


#: Most buffers one ``preadv``/``pwritev`` call may name (``sysconf(_SC_IOV_MAX)``, 1024 on Linux).
IOV_MAX: Final = _sysconf_iov_max()

# The batch size the worker loops use; a module global (not IOV_MAX itself) so that tests can
# lower it to exercise the batching with few buffers.
_iov_batch: int = IOV_MAX

_TIMES: Final = AttrMask.ATIME | AttrMask.MTIME


def _byte_views(buffers: Sequence[memoryview]) -> list[memoryview]:
    """Flat unsigned-byte views of the non-empty ``buffers``, so lengths are byte counts."""
    views = []
    for buf in buffers:
        view = byte_view(buf)
        if view.nbytes:
            views.append(view)
    return views


# --------------------------------------------------------------------------------------------
# Worker-thread bodies. Each runs entirely inside one to_thread call; module-level functions,
# not per-call closures, because read_into/write_from are hot paths.
# --------------------------------------------------------------------------------------------


def _vectored_io(fd: int, offset: int, buffers: Sequence[memoryview], write: bool) -> int:
    """Transfer all of ``buffers`` at ``offset``: loop over batches and short counts.

    Stops at the end of the buffers, at a zero count (EOF for a read; a write that made no
    progress), or at an error. An error after some bytes moved returns the count so far (the
    caller's next request at the new offset meets the error again), as read(2) does; an error
    before any byte moved is raised.
    """
    views = _byte_views(buffers)
    io = os.pwritev if write else os.preadv
    batch = _iov_batch
    total = 0
    index = 0  # first view not yet fully transferred
    count = len(views)
    while index < count:
        try:
            done = io(fd, views[index : index + batch], offset + total)
        except OSError:
            if total:
                return total
            raise
        if done <= 0:
            break
        total += done
        # Advance past the views this call filled; a partly filled view is re-sliced so the next
        # call starts exactly where this one stopped.
        while done:
            size = views[index].nbytes
            if done >= size:
                done -= size
                index += 1
            else:
                views[index] = views[index][done:]
                done = 0
    return total


def _fstat_attrs(fd: int) -> Attrs:
    st = os.fstat(fd)
    return Attrs(
        size=st.st_size,
        usage=st.st_blocks * 512,
        mode=st.st_mode & 0o7777,
        uid=st.st_uid,
        gid=st.st_gid,
        atime=st.st_atime_ns,
        mtime=st.st_mtime_ns,
        ctime=st.st_ctime_ns,
        links=st.st_nlink,
    )


def _stamp_of(fd: int) -> tuple[int, int, int] | None:
    """What :meth:`LocalFile.refresh` compares, or None when ``fstat`` fails."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _set_attributes(fd: int, mask: AttrMask, attrs: Attrs, force_timestamps: bool) -> None:
    # Order matters: chown clears setuid/setgid, so the mode goes after it; ftruncate moves
    # mtime/ctime, so the times go last.
    if AttrMask.SIZE in mask:
        os.ftruncate(fd, attrs.size)
    if mask & (AttrMask.UID | AttrMask.GID):
        os.fchown(
            fd,
            attrs.uid if AttrMask.UID in mask else -1,
            attrs.gid if AttrMask.GID in mask else -1,
        )
    if AttrMask.MODE in mask:
        os.fchmod(fd, attrs.mode)
    if mask & _TIMES:
        if _TIMES in mask:
            times = (attrs.atime, attrs.mtime)
        else:
            st = os.fstat(fd)
            times = (
                (attrs.atime, st.st_mtime_ns)
                if AttrMask.ATIME in mask
                else (st.st_atime_ns, attrs.mtime)
            )
        try:
            os.utime(fd, ns=times)
        except PermissionError:
            # Explicit times need ownership (or CAP_FOWNER), write access is not enough. The host
            # keeps atime/mtime itself on every read and write, so an unforced update (a dirty
            # timestamp write-back) is dropped here rather than failing the write-back forever;
            # a forced one (set_timestamps) must report it. Compare gVisor's gofer skipSetAttr.
            if force_timestamps:
                raise
    # CTIME, USAGE and LINKS cannot be set on a host file; they are ignored.


def _allocate(fd: int, offset: int, length: int) -> None:
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        # The file system cannot reserve blocks: at least grow the file, as the protocol asks.
        end = offset + length
        if os.fstat(fd).st_size < end:
            os.ftruncate(fd, end)


def _open(path: str | os.PathLike[str], flags: int, opened: list[int]) -> None:
    # The descriptor goes into ``opened`` as soon as it exists, so that a caller cancelled while
    # this runs can still close it (the thread's return value is lost on cancellation).
    opened.append(os.open(path, flags, 0o666))


# --------------------------------------------------------------------------------------------
# LocalFile
# --------------------------------------------------------------------------------------------


@final
class LocalFile:
    """A :class:`~aiocache_inode.backing.BackingFile` over a host file descriptor.

    Build one with :meth:`open`; close it with :meth:`aclose` or ``async with``. Requests run in
    anyio worker threads (one hop each, bounded by anyio's default thread limiter); they never
    touch the descriptor's file position, so any number may run at once.

    Cancellation of a request: before its worker thread starts, nothing is done. Once it has
    started, a thread cannot be stopped and is never abandoned: the request runs to completion
    and returns its result normally, and the cancellation is delivered at the caller's next
    checkpoint. So a cancelled request never leaves a system call running behind the caller's
    back, and never loses the count of bytes a read or write really moved. Closing while
    requests are in flight is deferred until the last one returns, so a descriptor number is
    never closed (and reused) under a running ``preadv``.
    """

    __slots__ = ("_closed", "_drained", "_fd", "_inflight", "_stamp", "path", "writable")

    # No lock: every field below is touched only from the event-loop thread, between awaits.
    # Invariants (_check_invariants): _inflight >= 0; _fd == -1 implies _closed and not
    # _inflight; _closed and _fd >= 0 implies _inflight (the last request will close it).

    def __init__(
        self, fd: int, *, path: str | os.PathLike[str] = "", writable: bool = False
    ) -> None:
        """Wrap an open descriptor, taking ownership of it (:meth:`open` is the usual way in).

        Args:
            fd: an open descriptor; :meth:`aclose` closes it.
            path: the path it was opened from, for ``repr`` only.
            writable: whether ``fd`` was opened for writing, for ``repr`` only.
        """
        #: The path the file was opened from. Immutable after __init__.
        self.path = path
        #: Whether the descriptor is open for writing. Immutable after __init__.
        self.writable = writable
        # Set by aclose(); requests check it before starting.
        self._closed = False
        # The descriptor; -1 once really closed.
        self._fd = fd
        # Requests whose worker thread has not returned yet.
        self._inflight = 0
        # Set when a deferred close finally happens; created by aclose() only when it must wait.
        self._drained: anyio.Event | None = None
        # (st_ino, st_size, st_mtime_ns) as last seen by refresh() or left by our own change:
        # a different one at the next refresh() is someone else's change. None: fstat failed.
        # Written from the event-loop thread only, when a request's thread returns.
        self._stamp = _stamp_of(fd)

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, writable: bool = False, create: bool = False
    ) -> LocalFile:
        """Open ``path`` (``O_RDONLY`` or ``O_RDWR``, ``O_CREAT`` when ``create``, ``O_CLOEXEC``).

        Checkpoint: always (the open runs in a worker thread).
        Cancellation: nothing is left open. A cancellation that arrives while the thread runs
        cannot stop it, so the descriptor it opened is closed again before the cancellation is
        raised.

        Args:
            path: the host file.
            writable: open for reading and writing rather than read-only.
            create: create the file (mode 0o666 less the umask) if it does not exist.

        Returns:
            The open file.

        Raises:
            OSError: the open failed (``FileNotFoundError``, ``PermissionError``, ...).
        """
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT
        opened: list[int] = []
        try:
            await anyio.to_thread.run_sync(_open, path, flags, opened)
            # A thread that has started is never abandoned: run_sync returns normally even if
            # the caller was cancelled meanwhile, and the cancellation would land at the
            # caller's next checkpoint with an open file in hand. Deliver it here instead.
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        return cls(opened[0], path=path, writable=writable)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fd}"
        mode = "rw" if self.writable else "r"
        return f"<LocalFile {os.fspath(self.path)!r} {mode} {state}>"

    def __del__(self) -> None:
        # Like io.FileIO: an unclosed file warns, then is closed anyway.
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            message = f"unclosed {self!r}"
            self._fd = -1
            try:
                warnings.warn(message, ResourceWarning, source=self, stacklevel=2)
            finally:
                os.close(fd)

    async def __aenter__(self) -> LocalFile:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_invariants(self) -> None:
        """Assert the invariants stated beside the fields (for tests)."""
        assert self._inflight >= 0
        assert self._fd >= 0 or (self._inflight == 0 and self._closed)
        assert not (self._closed and self._fd >= 0) or self._inflight > 0

    # -- request bracketing (hot path: plain method calls, no context managers) -----------------

    def _begin(self) -> int:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")
        self._inflight += 1
        return self._fd

    def _end(self) -> None:
        self._inflight -= 1
        if self._closed and not self._inflight:
            self._close_fd()

    def _close_fd(self) -> None:
        fd = self._fd
        if fd >= 0:
            self._fd = -1
            # Synchronous on purpose: closing a local file does not block. (A network file system
            # may flush on close; errors there surface from sync(), which callers run first.)
            os.close(fd)
        if self._drained is not None:
            self._drained.set()

    # -- BackingFile ----------------------------------------------------------------------------

    def fd(self) -> int:
        """The host descriptor, or -1 once :meth:`aclose` has been called."""
        return -1 if self._closed else self._fd

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Fill ``buffers`` in order from ``offset`` with ``os.preadv``.

        Hot path: one worker-thread hop for the whole request, however many buffers (batched by
        ``IOV_MAX`` and looped over short reads inside that thread); no closures.

        Checkpoint: always, except when raising ``ValueError`` or ``ClosedError``.
        Cancellation: before the thread starts, nothing is read. After, the read completes
        and returns its count normally; the cancellation lands at the caller's next checkpoint.

        Args:
            offset: file offset of the first byte; not negative.
            buffers: writable byte buffers, filled in order.

        Returns:
            Bytes read; less than asked only at end of file (or before an error that the next
            request at the following offset will raise); 0 at or past end of file.

        Raises:
            ValueError: ``offset`` is negative.
            ClosedError: the file was closed.
            OSError: the read failed before any byte was read.
        """
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        fd = self._begin()
        try:
            return await anyio.to_thread.run_sync(_vectored_io, fd, offset, buffers, False)
        finally:
            self._end()

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Write ``buffers`` in order at ``offset`` with ``os.pwritev``.

        Hot path: one worker-thread hop for the whole request (batched by ``IOV_MAX`` and looped
        over short writes inside that thread); no closures.

        Checkpoint: always, except when raising ``ValueError`` or ``ClosedError``.
        Cancellation: before the thread starts, nothing is written. After, the write completes
        and returns its count normally; the cancellation lands at the caller's next checkpoint.

        Args:
            offset: file offset of the first byte; not negative. Past the end leaves a hole that
                reads as zeros.
            buffers: byte buffers, written in order.

        Returns:
            Bytes written: all of them, unless an error (``ENOSPC``, ...) stopped the write part
            way, in which case the next request at the following offset raises it.

        Raises:
            ValueError: ``offset`` is negative.
            ClosedError: the file was closed.
            OSError: the write failed before any byte was written (``EBADF`` if read-only).
        """
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        fd = self._begin()
        try:
            done = await anyio.to_thread.run_sync(_vectored_io, fd, offset, buffers, True)
            # Our own change, for refresh(). An fstat of an open descriptor does not block
            # (about a microsecond), so it runs here rather than costing a second hop.
            self._stamp = _stamp_of(fd)
            return done
        finally:
            self._end()

    async def get_attributes(self) -> Attrs:
        """The file's attributes from ``os.fstat``.

        ``usage`` is ``st_blocks * 512``; ``mode`` keeps the permission bits (``& 0o7777``).

        Checkpoint: always, except when raising ``ClosedError``.
        Cancellation: nothing changes; once the thread has started the call returns its result
        normally and the cancellation lands at the caller's next checkpoint.

        Raises:
            ClosedError: the file was closed.
            OSError: ``fstat`` failed.
        """
        fd = self._begin()
        try:
            return await anyio.to_thread.run_sync(_fstat_attrs, fd)
        finally:
            self._end()

    async def set_attributes(self, mask: AttrMask, attrs: Attrs, force_timestamps: bool) -> None:
        """Apply the fields of ``attrs`` named by ``mask``, in one worker-thread hop.

        ``SIZE`` is ``ftruncate``; ``UID``/``GID`` one ``fchown`` naming only those given (-1 for
        the other); ``MODE`` is ``fchmod``; ``ATIME``/``MTIME`` one ``os.utime`` (the time not
        named is kept from ``fstat``). ``CTIME``, ``USAGE`` and ``LINKS`` cannot be set on a host
        file and are ignored. The host maintains atime/mtime itself, so when
        ``force_timestamps`` is false a ``PermissionError`` from ``utime`` is ignored; when it is
        true it is raised.

        Checkpoint: always, except when raising ``ClosedError``.
        Cancellation: before the thread starts, nothing changes. After, the call completes
        (returning or raising as it would have) and the cancellation lands at the caller's next
        checkpoint.

        Raises:
            ClosedError: the file was closed.
            OSError: a system call failed; the fields before it in the order above are applied.
        """
        fd = self._begin()
        try:
            await anyio.to_thread.run_sync(_set_attributes, fd, mask, attrs, force_timestamps)
        finally:
            # Even after a failure: the fields before it were applied (our own change).
            self._stamp = _stamp_of(fd)
            self._end()

    async def allocate(self, offset: int, length: int) -> None:
        """Reserve blocks for ``[offset, offset+length)`` with ``os.posix_fallocate``.

        Where the file system cannot reserve blocks (``EOPNOTSUPP``/``EINVAL``) the file is only
        grown to ``offset + length`` with ``ftruncate``, leaving a sparse tail.

        Checkpoint: always, except when raising ``ValueError`` or ``ClosedError``.
        Cancellation: before the thread starts, nothing changes. After, the allocation
        completes and the cancellation lands at the caller's next checkpoint.

        Raises:
            ValueError: ``offset`` or ``length`` is negative.
            ClosedError: the file was closed.
            OSError: the allocation failed (``ENOSPC``, ``EBADF`` if read-only, ...).
        """
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset or length: {offset}, {length}")
        fd = self._begin()
        try:
            if length:
                await anyio.to_thread.run_sync(_allocate, fd, offset, length)
                self._stamp = _stamp_of(fd)
            else:
                await anyio.lowlevel.checkpoint()
        finally:
            self._end()

    async def sync(self) -> None:
        """Make everything written so far durable with ``os.fsync``.

        Checkpoint: always, except when raising ``ClosedError``.
        Cancellation: before the thread starts, nothing is synced (the caller must sync again).
        After, the ``fsync`` completes and its outcome is reported normally; the cancellation
        lands at the caller's next checkpoint.

        Raises:
            ClosedError: the file was closed.
            OSError: ``fsync`` failed (written data may be lost).
        """
        fd = self._begin()
        try:
            await anyio.to_thread.run_sync(os.fsync, fd)
        finally:
            self._end()

    async def refresh(self) -> bool:
        """Whether someone else changed the file since our last look (the ``Revalidating`` hook).

        Compares ``(st_ino, st_size, st_mtime_ns)`` from ``fstat`` with the stamp taken at
        open, at the last refresh, and after each of our own writes, attribute changes and
        allocations, then keeps the new stamp. Reads always see the file as it is (there is no
        version to move to), so this only tells the caller to drop what it cached. Limits: a
        change within the file system's mtime granularity that keeps the size is not seen, nor
        one landing between our own write and its ``fstat`` (taken for ours); a file replaced by
        rename is not followed (the descriptor keeps the old one: reopen to see the new).

        Checkpoint: always, except when raising ``ClosedError``.
        Cancellation: before the thread starts, nothing changes. After, the stamp is updated
        and the cancellation lands at the caller's next checkpoint (the change it saw is then
        not reported again).

        Raises:
            ClosedError: the file was closed.
            OSError: ``fstat`` failed.
        """
        fd = self._begin()
        try:
            st = await anyio.to_thread.run_sync(os.fstat, fd)
        finally:
            self._end()
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        changed = stamp != self._stamp
        self._stamp = stamp
        return changed

    async def aclose(self) -> None:
        """Close the file; later requests raise ``ClosedError``. Closing twice is allowed.

        Requests already in worker threads finish first: the descriptor is closed when the last
        of them returns, and this call waits for that.

        Checkpoint: always.
        Cancellation: the file is closed anyway: at once if nothing was in flight, otherwise by
        the last in-flight request as it returns.
        """
        self._closed = True
        if self._fd >= 0 and self._inflight:
            if self._drained is None:
                self._drained = anyio.Event()
            await self._drained.wait()
            return
        self._close_fd()
        await anyio.lowlevel.checkpoint()
