"""ASGI responses streamed from cached pages, zero copy.

Needs the ``gateway`` extra (Starlette): ``pip install aiocache-inode[gateway]``. Nothing in the
core imports this module; importing it without Starlette raises ``ImportError``.

Three pieces, from low to high level:

- :func:`send_inode_range` sends the bytes ``[start, end)`` of an open :class:`CachingInode` as
  ``http.response.body`` messages. It can be called several times per response (a multi-part
  object is one call per part, ``more_body_after=True`` on all but the last).
- :func:`run_until_disconnect` runs a streaming coroutine while watching ``receive`` for
  ``http.disconnect``, and stops it early when the client goes away.
- :class:`InodeResponse`, a Starlette ``Response`` that opens a key in a :class:`CacheStore`,
  sends the headers and streams one range with disconnect watching.

Zero copy, and when a page may be unpinned. Bodies larger than ``copy_threshold`` are sent as
memoryviews into the pool, taken from pinned ``inode.view()`` windows of at most ``window_size``
bytes (so a response pins at most one window), ``chunk_size`` bytes per message. A server does
not always write a body before ``send`` returns: when the socket would block, uvloop keeps a view
derived from it (``memoryview(body).cast("b")``) in its write queue. A derived view does not count
as an export of the memoryview it came from, so ``body.release()`` alone cannot tell whether the
transport still reads the pages. Each body is therefore a memoryview with a buffer of its own,
``memoryview(PickleBuffer(piece))`` where ``piece`` is a fresh slice of the window: every view the
transport derives from the body holds an export of ``piece``, and ``piece.release()`` raises
``BufferError`` until the last of them is gone. The window (and its pins) is left only once every
piece released; until then the sender polls, backing off from 0.5 ms to 20 ms. Pool pages are
never unpinned, evicted or reused while a transport can still read them.

A server that keeps the body *object* after ``send`` returns (httpx's ``ASGITransport`` keeps all
of them until the application returns) would make that wait endless, so by default
(``zero_copy=None``) the first 16 KiB of a range go out as a ``bytes`` copy, and if the server
still holds that object when ``send`` returns, the rest is copied too. ``zero_copy=True`` skips
the probe (for a server known to let go, such as uvicorn); ``zero_copy=False`` always copies.

Ranges up to ``copy_threshold`` (1 MiB) are sent as copies made by ``inode.read``: its hit path
completes without a checkpoint, and below about a megabyte the copy costs less than pinning and
unpinning a view (``add_mapping``, ``translate``, ``remove_mapping``) plus the disconnect watcher:
measured under uvicorn, a 256 KiB file served 2.2x faster by copies than by views; at 4 MiB
the two were even. Zero copy is for big bodies, where it bounds memory rather than CPU.
"""

from __future__ import annotations

import sys
from pickle import PickleBuffer
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel
from starlette.responses import Response

from .errors import CacheError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable, Mapping

    from starlette.background import BackgroundTask
    from starlette.types import Receive, Scope, Send

    from .backing import BackingFile
    from .inode import CachingInode
    from .store import CacheStore

__all__ = [
    "CHUNK_SIZE",
    "COPY_THRESHOLD",
    "WINDOW_SIZE",
    "InodeResponse",
    "ShortBodyError",
    "run_until_disconnect",
    "send_inode_range",
]

CHUNK_SIZE = 256 << 10  # bytes per http.response.body message
WINDOW_SIZE = 1 << 20  # bytes pinned per inode.view() window: the most one response pins
COPY_THRESHOLD = 1 << 20  # ranges up to this many bytes go out as inode.read() copies
_PROBE_SIZE = 16 << 10  # the bytes copy that tells whether the server keeps body objects
_POLL_FIRST = 0.0005  # seconds: first wait for a transport to let go of a piece
_POLL_MAX = 0.02  # seconds: the longest wait between two checks


class ShortBodyError(CacheError, EOFError):
    """The file ended before the requested range did (it shrank after the headers were sent)."""


@final
class _Lent:
    """One body handed to ``send``: the window slice, its PickleBuffer, the body memoryview."""

    __slots__ = ("body", "pickle", "piece")

    def __init__(self, piece: memoryview) -> None:
        self.piece = piece
        self.pickle: PickleBuffer | None = PickleBuffer(piece)
        self.body: memoryview | None = memoryview(self.pickle)


def _own_refs() -> tuple[int, int]:
    """Reference counts of a body and a bytes copy nobody else holds, counted like the checks.

    ``_give_back`` counts ``lent.body`` (plus its local and the argument); ``send_inode_range``
    counts its local ``data`` (plus the argument). CPython only, like memoryview semantics.
    """
    lent = _Lent(memoryview(bytearray(1)))
    body = lent.body
    data = bytes(2)
    return sys.getrefcount(body), sys.getrefcount(data)


_OWN_BODY_REFS, _OWN_BYTES_REFS = _own_refs()


def _give_back(lent: _Lent, revoke: bool) -> bool:
    """Take ``lent`` back if nobody else can read it; True when its piece is released.

    A body object someone else still references is left alone unless ``revoke``: releasing it
    then is safe (their later use raises ValueError; the pages are never read) but would break a
    consumer that only has not got round to writing it yet.
    """
    body = lent.body
    if body is not None:
        if not revoke and sys.getrefcount(body) > _OWN_BODY_REFS:
            return False
        try:
            body.release()
        except BufferError:  # someone holds a buffer exported by the body itself
            return False
        lent.body = None
        assert lent.pickle is not None
        lent.pickle.release()
        lent.pickle = None
    try:
        lent.piece.release()
    except BufferError:  # a view derived from the body (a transport's write queue) is alive
        return False
    return True


def _give_back_all(lent: list[_Lent], revoke: bool) -> None:
    """Drop from ``lent`` every body the consumer has let go of. Complexity: O(len(lent))."""
    lent[:] = [x for x in lent if not _give_back(x, revoke)]


async def _reclaim(lent: list[_Lent], revoke: bool) -> None:
    """Wait until every body in ``lent`` is released, polling with a bounded back-off."""
    delay = _POLL_FIRST
    _give_back_all(lent, revoke)
    while lent:
        await anyio.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)
        _give_back_all(lent, revoke)


async def _send_copies(
    send: Send, inode: CachingInode, start: int, end: int, more_body_after: bool, chunk_size: int
) -> None:
    off = start
    while off < end:
        n = min(chunk_size, end - off)
        data = await inode.read(off, n)
        if len(data) != n:
            raise ShortBodyError(f"file ended at {off + len(data)}, before {end}")
        off += n
        await send(
            {"type": "http.response.body", "body": data, "more_body": more_body_after or off < end}
        )


async def _send_window(
    send: Send, inode: CachingInode, start: int, end: int, last: bool, chunk_size: int
) -> None:
    """Send ``[start, end)`` from one pinned view; leave it only once every body came back."""
    lent: list[_Lent] = []
    async with inode.view(start, end - start) as views:
        try:
            if sum(len(v) for v in views) != end - start:
                raise ShortBodyError(f"file ended before {end}")
            off = start
            for v in views:
                for a in range(0, len(v), chunk_size):
                    piece = v[a : a + chunk_size]
                    off += len(piece)
                    lent.append(_Lent(piece))
                    del piece
                    await send(
                        {
                            "type": "http.response.body",
                            "body": lent[-1].body,
                            "more_body": not last or off < end,
                        }
                    )
                    # Most bodies are written before send returns; keep the list short.
                    _give_back_all(lent, False)
            await _reclaim(lent, False)
        except BaseException:
            # Failing or cancelled: nobody will use the bodies any more, so revoke them, but the
            # pins must outlive every view a transport still writes from.
            with anyio.CancelScope(shield=True):
                await _reclaim(lent, True)
            raise


async def send_inode_range(
    send: Send,
    inode: CachingInode,
    start: int,
    end: int,
    *,
    more_body_after: bool,
    zero_copy: bool | None = None,
    chunk_size: int = CHUNK_SIZE,
    window_size: int = WINDOW_SIZE,
    copy_threshold: int = COPY_THRESHOLD,
) -> bool:
    """Send bytes ``[start, end)`` of ``inode`` to an ASGI ``send`` as response body messages.

    The response must have been started (``http.response.start`` sent) by the caller. Every
    message but the last has ``more_body=True``; the last has ``more_body=more_body_after``, so
    several ranges (of one or several inodes) can follow each other in one response. An empty
    range sends nothing unless it must end the body (one empty message with ``more_body=False``).

    Args:
        send: the ASGI send callable.
        inode: an open inode (held open by the caller for the duration of the call).
        start: first byte offset.
        end: offset past the last byte; at most the file size.
        more_body_after: whether more body messages follow this range.
        zero_copy: None probes whether the server keeps body objects (see the module docstring),
            True sends pool memoryviews without probing, False always sends copies.
        chunk_size: the most bytes per message.
        window_size: the most bytes pinned at once.
        copy_threshold: ranges up to this size are sent as copies.

    Returns:
        Whether the range went out zero copy; pass it as ``zero_copy`` to the next call for the
        same response to skip the probe there.

    Checkpoint: on every send; on pinning and unpinning each window; while waiting for a
        transport to release a body (polling, 0.5 ms to 20 ms apart). A range served by copies
        from cached pages checkpoints only inside ``send``.
    Cancellation: stops between messages; the pins are kept (shielded) until the transport has
        let go of every body it was handed, then dropped. Leaves no pin behind.

    Raises:
        ValueError: a negative or reversed range, or a size parameter below 1.
        ShortBodyError: the file ended before ``end`` (bytes before it may have been sent).
        BackingError: a fill from the backing failed.
        ClosedError: the inode was released.
    """
    if start < 0 or end < start:
        raise ValueError(f"bad range [{start}, {end})")
    if chunk_size < 1 or window_size < 1 or copy_threshold < 0:
        raise ValueError("chunk_size and window_size must be positive, copy_threshold >= 0")
    if end == start:
        if not more_body_after:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return bool(zero_copy)
    if zero_copy is False or end - start <= copy_threshold:
        await _send_copies(send, inode, start, end, more_body_after, chunk_size)
        return False
    if zero_copy is None:
        n = min(_PROBE_SIZE, end - start)
        data = await inode.read(start, n)
        if len(data) != n:
            raise ShortBodyError(f"file ended at {start + len(data)}, before {end}")
        start += n
        await send(
            {
                "type": "http.response.body",
                "body": data,
                "more_body": more_body_after or start < end,
            }
        )
        if sys.getrefcount(data) > _OWN_BYTES_REFS:
            # The server kept the body object: it may keep pool views until the response ends.
            await _send_copies(send, inode, start, end, more_body_after, chunk_size)
            return False
        del data
    while start < end:
        w_end = min(start + window_size, end)
        await _send_window(
            send, inode, start, w_end, not more_body_after and w_end == end, chunk_size
        )
        start = w_end
    return True


async def run_until_disconnect(
    receive: Receive, fn: Callable[..., Awaitable[Any]], *args: Any
) -> bool:
    """Run ``await fn(*args)``, cancelling it if ``receive`` reports ``http.disconnect``.

    ``receive`` is read only by this watcher while ``fn`` runs (request bodies must have been
    consumed before).

    Returns:
        True when ``fn`` finished, False when the client disconnected first.

    Checkpoint: always.
    Cancellation: cancels ``fn`` and the watcher; ``fn``'s own cleanup runs as it defines.
    """
    disconnected = False
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal disconnected
            while (await receive())["type"] != "http.disconnect":
                await anyio.lowlevel.checkpoint()  # a receive that never blocks cannot spin
            disconnected = True
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        await fn(*args)
        tg.cancel_scope.cancel()
    return not disconnected


class InodeResponse(Response):
    """A Starlette response whose body is ``[start, end)`` of the file ``key`` in ``store``.

    The inode is opened (``store.open(key, backing)``) when the response is sent and held open
    while it streams; ``end=None`` means the file size then. ``Content-Length`` is added unless
    given in ``headers``. HEAD requests get the headers only. A body that needs more than one
    message is streamed under :func:`run_until_disconnect`.
    """

    def __init__(
        self,
        store: CacheStore,
        key: Hashable,
        backing: BackingFile | Callable[[], Awaitable[BackingFile]],
        start: int = 0,
        end: int | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
        *,
        zero_copy: bool | None = None,
    ) -> None:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad range [{start}, {end})")
        self.store = store
        self.key = key
        self.backing = backing
        self.start = start
        self.end = end
        self.zero_copy = zero_copy
        self.status_code = status_code
        if media_type is not None:
            self.media_type = media_type
        self.background = background
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Open the inode, send the headers and stream the range.

        Checkpoint: always.
        Cancellation: as :func:`send_inode_range`; the inode reference is dropped.

        Raises:
            ValueError: ``end`` is past the end of the file (nothing sent).
        """
        async with self.store.open(self.key, self.backing) as inode:
            start = self.start
            end = inode.size if self.end is None else self.end
            if end > inode.size:
                raise ValueError(f"range end {end} past the file size {inode.size}")
            headers = self.raw_headers
            if not any(k == b"content-length" for k, _ in headers):
                headers = [*headers, (b"content-length", str(end - start).encode("latin-1"))]
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": headers}
            )
            if scope.get("method") == "HEAD" or end == start:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif end - start <= COPY_THRESHOLD:
                await send_inode_range(send, inode, start, end, more_body_after=False)
            else:
                await run_until_disconnect(receive, self._stream, send, inode, start, end)
        if self.background is not None:
            await self.background()

    async def _stream(self, send: Send, inode: CachingInode, start: int, end: int) -> None:
        await send_inode_range(
            send, inode, start, end, more_body_after=False, zero_copy=self.zero_copy
        )
