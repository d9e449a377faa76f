"""Object bytes in and out through the cache: body files as caching inodes, keyed by body id.

Receiving (:func:`receive_body`): a PUT or UploadPart body is decoded (aws-chunked framing
removed), run through every digest in one pass, and written into a fresh caching inode over
``tmp/<id>`` in the store's write-back mode, so the new object is hot and its bytes count as
dirty until written out. Before the request is answered the inode is written out (data and size,
then ``fsync``) and the file renamed into ``bodies/``; the metadata commit follows. A body that
fails (bad digest, short, cut off, cancelled) is dropped without writing anything back and its
file removed: no partial object can appear.

Reading (:class:`BodyFiles`): a body id names an immutable file, so an inode keyed by it is never
stale and needs no revalidation. The open files (one descriptor each) and their inodes are kept
in an LRU of ``max_open`` entries; the least recently used one nobody is reading is forgotten
(its pages dropped, its file closed) when the LRU is full, and a body freed by a delete or an
overwrite is forgotten as soon as no request reads it (storage's pins guarantee that).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Final, final

import anyio

from aiocache_inode import CacheError, LocalFile

from .checksums import Digests
from .chunked import make_body_decoder
from .errors import S3Error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping

    from starlette.types import Receive

    from aiocache_inode import CacheStore, CachingInode

    from .auth import AuthContext
    from .storage import Storage

__all__ = ["MAX_OBJECT_SIZE", "BodyFiles", "ClientDisconnected", "Received", "receive_body"]

MAX_OBJECT_SIZE: Final = 5 << 30  # S3's largest single PUT
#: Body bytes hashed per worker-thread job while the event loop goes on receiving and caching.
DIGEST_BATCH: Final = 1 << 20

_digest_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _digest_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _digest_pool
    if _digest_pool is None:
        _digest_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=os.cpu_count() or 1, thread_name_prefix="gateway-digest"
        )
    return _digest_pool


def _update_all(digests: Digests, pieces: list[bytes | memoryview]) -> None:
    for piece in pieces:
        digests.update(piece)


@final
class _BackgroundDigests:
    """Feeds a body to its digests in order, a batch at a time in a worker thread.

    hashlib and zlib let go of the GIL on big buffers, so MD5 (and any other digest) of one
    batch runs on another core while the event loop receives and caches the next. At most one
    batch is being hashed per body; the pieces are views of received ``bytes`` (immutable).
    """

    __slots__ = ("_batch", "_digests", "_job", "_pending")

    def __init__(self, digests: Digests) -> None:
        self._digests = digests
        self._batch: list[bytes | memoryview] = []
        self._pending = 0
        self._job: concurrent.futures.Future[None] | None = None

    async def add(self, piece: bytes | memoryview) -> None:
        """Queue piece; hand the batch to a worker once it is big enough.

        Checkpoint: only when a full batch waits for the previous one to be hashed.
        """
        self._batch.append(piece)
        self._pending += len(piece)
        if self._pending >= DIGEST_BATCH:
            await self._wait()
            batch, self._batch, self._pending = self._batch, [], 0
            self._job = _digest_executor().submit(_update_all, self._digests, batch)

    async def _wait(self) -> None:
        job = self._job
        if job is not None:
            self._job = None
            if not job.done():
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(concurrent.futures.wait, [job])
            job.result()

    async def finish(self) -> None:
        """Hash what is left; on return the digests have seen every piece, in order.

        Checkpoint: when a batch is still being hashed.
        """
        await self._wait()
        _update_all(self._digests, self._batch)
        self._batch = []


class ClientDisconnected(Exception):
    """The client went away before the request body ended."""


@final
class BodyFiles:
    """Open body files and their inodes, at most ``max_open`` kept between requests.

    Args:
        store: the process's cache.
        storage: where body files live.
        max_open: body files kept open (with their inodes) when nobody reads them.
    """

    def __init__(self, store: CacheStore, storage: Storage, max_open: int) -> None:
        self.store = store
        self.storage = storage
        self.max_open = max_open
        # Open files by body id, least recently used first. Event-loop thread only.
        self._files: OrderedDict[str, LocalFile] = OrderedDict()
        # Requests reading each body now.
        self._users: dict[str, int] = {}
        # Bodies being forgotten: openers wait for the event.
        self._dropping: dict[str, anyio.Event] = {}

    async def _backing(self, body_id: str) -> LocalFile:
        # A fresh descriptor for each new inode: the store made it through this factory, so
        # the store closes it when the idle inode leaves its table. Never a file kept in
        # _files, which the store may have closed with an earlier inode.
        return await LocalFile.open(self.storage.body_path(body_id))

    async def adopt(self, body_id: str, backing: LocalFile) -> None:
        """Keep the file a PUT wrote (its inode stays resident, hot) for later reads.

        Checkpoint: when the LRU is over its size (forgetting the oldest idle bodies).
        Cancellation: shielded.
        """
        self._files[body_id] = backing
        if len(self._files) > self.max_open:
            with anyio.CancelScope(shield=True):
                await self._trim()

    @contextlib.asynccontextmanager
    async def open(self, body_id: str) -> AsyncIterator[CachingInode]:
        """``async with bodies.open(body_id) as inode``: the body's inode, held while inside.

        Checkpoint: always. Cancellation: the hold is dropped; nothing else changes.

        Raises:
            BackingError: the body file could not be opened.
        """
        while (ev := self._dropping.get(body_id)) is not None:
            await ev.wait()
        self._users[body_id] = self._users.get(body_id, 0) + 1
        try:
            async with self.store.open(body_id, lambda: self._backing(body_id)) as inode:
                yield inode
        finally:
            n = self._users[body_id] - 1
            if n:
                self._users[body_id] = n
            else:
                del self._users[body_id]
            if body_id in self._files:
                self._files.move_to_end(body_id)
            if len(self._files) > self.max_open:
                with anyio.CancelScope(shield=True):
                    await self._trim()

    async def _trim(self) -> None:
        for body_id in list(self._files):
            if len(self._files) <= self.max_open:
                return
            if body_id not in self._users and body_id not in self._dropping:
                await self.forget(body_id)

    async def forget(self, body_id: str) -> None:
        """Drop a body's inode (pages included) and close its file; no-op if not open.

        Callers make sure nobody reads it (storage pins, or the LRU's user count).

        Checkpoint: always. Cancellation: shielded; the body is forgotten on return.
        """
        with anyio.CancelScope(shield=True):
            pending = self._dropping.get(body_id)
            if pending is not None:
                await pending.wait()
                return
            f = self._files.pop(body_id, None)
            ev = self._dropping[body_id] = anyio.Event()
            try:
                if body_id in self.store:
                    with contextlib.suppress(CacheError):
                        await self.store.forget(body_id)
                if f is not None:
                    await f.aclose()
            finally:
                del self._dropping[body_id]
                ev.set()

    async def free(self, body_id: str) -> None:
        """Storage's on_free: forget the body, then remove its file.

        Checkpoint: always. Cancellation: shielded.
        """
        await self.forget(body_id)
        await self.storage.unlink_body(body_id)

    async def close(self) -> None:
        """Forget every body (their data was written out when received).

        Checkpoint: always. Cancellation: shielded.
        """
        for body_id in list(self._files):
            await self.forget(body_id)

    def statistics(self) -> dict[str, int]:
        """Open body files and bodies being read now."""
        return {"open_bodies": len(self._files), "bodies_in_use": len(self._users)}


@final
class Received:
    """A body received and durable: its id, size and digests."""

    __slots__ = ("body_id", "digests", "size", "trailers")

    def __init__(self, body_id: str, size: int, digests: Digests, trailers: dict[str, str]):
        self.body_id = body_id
        self.size = size
        self.digests = digests
        self.trailers = trailers


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            raise ClientDisconnected
        if kind != "http.request":
            continue
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def read_small_body(
    receive: Receive, auth: AuthContext, headers: Mapping[str, str], limit: int
) -> bytes:
    """Read a small request body (XML) whole, decoded and checked like any body.

    Checkpoint: always. Cancellation: the body is abandoned.

    Raises:
        S3Error: MalformedXML / EntityTooLarge over limit, IncompleteBody, digest errors.
        ClientDisconnected: the client left.
    """
    decoder = make_body_decoder(auth, headers)
    digests = Digests.for_request(headers)
    out = bytearray()
    async for chunk in _chunks(receive):
        for piece in decoder.feed(chunk):
            digests.update(piece)
            out += piece
            if len(out) > limit:
                raise S3Error("MalformedXML", "The XML you provided was larger than allowed.")
    trailers = decoder.finish()
    digests.verify(headers, trailers, content_sha256=_signed_sha(auth))
    return bytes(out)


def _signed_sha(auth: AuthContext) -> str | None:
    return auth.content_sha256 if auth.payload == "signed" else None


def _check_length(headers: Mapping[str, str]) -> None:
    declared = headers.get("x-amz-decoded-content-length") or headers.get("content-length")
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    if declared is None and not chunked:
        raise S3Error("MissingContentLength")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_OBJECT_SIZE:
        raise S3Error(
            "EntityTooLarge", ProposedSize=declared.strip(), MaxSizeAllowed=str(MAX_OBJECT_SIZE)
        )


async def receive_body(
    receive: Receive,
    auth: AuthContext,
    headers: Mapping[str, str],
    store: CacheStore,
    storage: Storage,
    bodies: BodyFiles,
    *,
    extra_checksums: Iterable[str] = (),
) -> Received:
    """Receive a request body into a new body file, through the cache, and make it durable.

    On return the body is written out, fsynced and published (renamed into ``bodies/``); the
    caller commits the metadata that references it (passing ``new_bodies=[body_id]``, so a
    failed commit frees it).

    Checkpoint: always.
    Cancellation: the body is dropped (cached pages discarded unwritten, file removed), so
        nothing of it remains; shielded cleanup.

    Raises:
        S3Error: MissingContentLength, EntityTooLarge, IncompleteBody, InvalidRequest,
            SignatureDoesNotMatch (chunk signatures), BadDigest, InvalidDigest,
            XAmzContentSHA256Mismatch.
        ClientDisconnected: the client left before the body ended.
    """
    _check_length(headers)
    decoder = make_body_decoder(auth, headers)
    digests = Digests.for_request(headers, extra_checksums)
    body_id = storage.new_body_id()
    backing = await LocalFile.open(storage.tmp_path(body_id), writable=True, create=True)
    ok = False
    inode: CachingInode | None = None
    try:
        async with store.open(body_id, backing) as inode:
            off = 0
            write = inode.write
            hashing = _BackgroundDigests(digests)
            add = hashing.add
            async for chunk in _chunks(receive):
                for piece in decoder.feed(chunk):
                    await add(piece)
                    await write(off, piece)
                    off += len(piece)
                if off > MAX_OBJECT_SIZE:
                    raise S3Error("EntityTooLarge", MaxSizeAllowed=str(MAX_OBJECT_SIZE))
            await hashing.finish()
            trailers = decoder.finish()
            digests.verify(headers, trailers, content_sha256=_signed_sha(auth))
            await inode.write_out()
        await storage.publish(body_id)
        ok = True
    finally:
        if not ok:
            with anyio.CancelScope(shield=True):
                if inode is not None and not inode.closed:
                    # Drop the pages unwritten: truncating to 0 discards dirty data too.
                    with contextlib.suppress(CacheError):
                        await inode.truncate(0)
                        await inode.release()
                await backing.aclose()
                await storage.discard(body_id)
    await bodies.adopt(body_id, backing)
    return Received(body_id, off, digests, trailers)
