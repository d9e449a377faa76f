"""``CachedFiles``: Starlette's ``StaticFiles`` served through one ``CacheStore``.

A drop-in for ``Mount("/", app=StaticFiles(directory=DIR))``: GET and HEAD of the regular files
under ``DIR`` with ``Content-Type`` by extension, ``ETag``, ``Last-Modified`` and
``Accept-Ranges``; conditional requests (304, 412); one byte range (206, 416). Plus PUT, which
uploads through the cache. Everything else is 405. Unknown extensions are
``application/octet-stream`` (StaticFiles says ``text/plain``).

No path leaves the root: a ``..`` segment, a NUL byte, a symlink resolving outside the root,
and anything but a regular file are all 404, decided on the resolved (``realpath``) name.

Open files. Each served path has an entry: the open :class:`LocalFile`, the file's identity
``(st_dev, st_ino, st_size, st_mtime_ns)`` taken by ``fstat`` on that descriptor, and the cache
key of its inode (a fresh key per opening, so an old and a new version never share pages). The
identity is checked against ``stat(path)`` at most every ``revalidate`` seconds, like nginx's
``open_file_cache_valid``; when it differs (rewritten, replaced, removed) the entry is dropped:
``await store.forget(key)`` and the descriptor closed, once no request in flight still streams
from it (a response started on the old version finishes on the old version), and the next
request opens the file afresh. ``max_open`` entries at most; the least recently used idle one is
dropped first. The stat runs on the event loop, not in a worker thread: on a hot dentry it costs
about a microsecond, a thread hop a hundred times that (StaticFiles pays two per request).

Uploads. PUT writes the body into a hidden temporary file in the target's directory through the
cache (the store is in write-back mode: the pages are dirty until written back), then
``write_out`` (data, attributes, fsync) and ``rename`` over the target: a reader sees the old file
or the new one, never half of one, and the 201/204 means the bytes are on disk. The new file's
entry keeps the written pages, so the next GET is a hit.
"""

from __future__ import annotations

import contextlib
import itertools
import mimetypes
import os
import secrets
import stat
from collections import OrderedDict
from typing import TYPE_CHECKING, Final, final

import anyio

from aiocache_inode import CacheError, LocalFile
from aiocache_inode.asgi import COPY_THRESHOLD, run_until_disconnect, send_inode_range

from .conditional import UNSATISFIABLE, Validators, evaluate_preconditions, parse_range

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import Receive, Scope, Send

    from aiocache_inode import CacheStore, CachingInode

__all__ = ["CachedFiles"]

#: Request headers the handlers look at; every other header is skipped in one set lookup.
_WANTED: Final = frozenset(
    (
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"range",
        b"if-range",
    )
)
_EMPTY: Final = (b"content-length", b"0")


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _content_type(path: str) -> bytes:
    ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if ctype.startswith("text/"):
        ctype += "; charset=utf-8"
    return ctype.encode("latin-1")


@final
class _Entry:
    """One opened version of one file: descriptor, identity, validators, cache key."""

    __slots__ = (
        "backing",
        "checked_at",
        "headers",
        "identity",
        "key",
        "real",
        "size",
        "stale",
        "users",
        "validators",
    )

    def __init__(
        self,
        real: str,
        backing: LocalFile,
        st: os.stat_result,
        key: tuple[str, int],
        now: float,
    ) -> None:
        # Immutable after __init__: real, backing, identity, size, key, validators, headers.
        self.real = real
        self.backing = backing
        self.identity = _identity(st)
        self.size = st.st_size
        self.key = key
        self.validators = Validators.of(st.st_ino, st.st_size, st.st_mtime_ns)
        #: The 200 response's headers, built once.
        self.headers = [
            (b"content-type", _content_type(real)),
            (b"content-length", str(st.st_size).encode("latin-1")),
            (b"last-modified", self.validators.last_modified),
            (b"etag", self.validators.etag),
            (b"accept-ranges", b"bytes"),
        ]
        # Event-loop thread only: when the identity was last compared with the file's.
        self.checked_at = now
        # Requests streaming from this entry; it is dropped when stale and users == 0.
        self.users = 0
        self.stale = False


class CachedFiles:
    """An ASGI app serving ``directory`` through ``store`` (set before the first request).

    Args:
        directory: the root; only regular files under its real path are served.
        revalidate: seconds between two identity checks of one open file (0: every request).
        clock: seconds, monotonic (tests inject one); default ``time.monotonic``.
        max_open: the most open files kept.
        allow_put: whether PUT uploads are accepted (else 405).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        revalidate: float = 1.0,
        clock: Callable[[], float] | None = None,
        max_open: int = 1000,
        allow_put: bool = True,
    ) -> None:
        if revalidate < 0:
            raise ValueError(f"revalidate must be >= 0 seconds, not {revalidate!r}")
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, not {max_open!r}")
        root = os.path.realpath(directory)
        if not os.path.isdir(root):
            raise ValueError(f"not a directory: {os.fspath(directory)!r}")
        import time

        self.root = root
        self.revalidate = revalidate
        self.clock = clock or time.monotonic
        self.max_open = max_open
        self.allow_put = allow_put
        #: Set by the application's lifespan.
        self.store: CacheStore | None = None
        # Entries by request path, least recently used first. Event-loop thread only.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._keys = itertools.count(1)
        self._allow = b"GET, HEAD, PUT" if allow_put else b"GET, HEAD"

    # -- paths ----------------------------------------------------------------------------------

    def _segments(self, path: str) -> list[str] | None:
        """The path's segments, or None when it must be refused (``..``, NUL, empty).

        A trailing slash names a directory, which is never served or written.
        """
        if "\x00" in path or path.endswith("/"):
            return None
        parts = [p for p in path.split("/") if p and p != "."]
        if not parts or ".." in parts:
            return None
        return parts

    def _resolve(self, parts: list[str]) -> str | None:
        """The real path of ``parts`` under the root, or None when it resolves outside."""
        real = os.path.realpath(os.path.join(self.root, *parts))
        if real == self.root or not real.startswith(self.root + os.sep):
            return None
        return real

    # -- entries --------------------------------------------------------------------------------

    async def _drop(self, entry: _Entry) -> None:
        """Forget the entry's inode and close its descriptor (shielded: it must finish)."""
        store = self.store
        with anyio.CancelScope(shield=True):
            if store is not None and entry.key in store:
                await store.forget(entry.key)
            await entry.backing.aclose()

    async def _retire(self, path: str, entry: _Entry) -> None:
        """Take ``entry`` out of the table; drop it now or when its last user finishes."""
        if self._entries.get(path) is entry:
            del self._entries[path]
        entry.stale = True
        if entry.users == 0:
            await self._drop(entry)

    async def _release(self, entry: _Entry) -> None:
        entry.users -= 1
        if entry.stale and entry.users == 0:
            await self._drop(entry)

    async def _install(self, path: str, entry: _Entry) -> None:
        old = self._entries.get(path)
        if old is not None:
            await self._retire(path, old)
        self._entries[path] = entry
        while len(self._entries) > self.max_open:
            victim = next((e for e in self._entries.items() if e[1].users == 0), None)
            if victim is None:
                break
            await self._retire(*victim)

    async def _open_entry(self, real: str) -> _Entry | None:
        """Open ``real`` if it is a regular file; None otherwise."""
        try:
            if not stat.S_ISREG(os.stat(real).st_mode):
                return None  # a directory, FIFO or device: never opened
            backing = await LocalFile.open(real)
        except OSError:
            return None
        st = os.fstat(backing.fd())
        if not stat.S_ISREG(st.st_mode):  # replaced between the stat and the open
            await backing.aclose()
            return None
        return _Entry(real, backing, st, (real, next(self._keys)), self.clock())

    async def _entry(self, path: str) -> _Entry | None:
        """The current entry for a request path, revalidated; None for 404.

        Hot path: a dict lookup, a move to the LRU end and a clock read while within the
        revalidation interval.
        """
        entries = self._entries
        entry = entries.get(path)
        if entry is not None:
            now = self.clock()
            if now - entry.checked_at < self.revalidate:
                entries.move_to_end(path)
                return entry
            parts = self._segments(path)
            real = None if parts is None else self._resolve(parts)
            try:
                same = real == entry.real and _identity(os.stat(entry.real)) == entry.identity
            except OSError:
                same = False
            if same:
                entry.checked_at = now
                entries.move_to_end(path)
                return entry
            await self._retire(path, entry)
        parts = self._segments(path)
        real = None if parts is None else self._resolve(parts)
        if real is None:
            return None
        fresh = await self._open_entry(real)
        if fresh is None:
            return None
        current = entries.get(path)
        if current is not None and current.identity == fresh.identity and current.real == real:
            await self._drop(fresh)  # a concurrent request opened the same version first
            return current
        await self._install(path, fresh)
        return fresh

    async def aclose(self) -> None:
        """Close every open file (after the store has written back and closed).

        Checkpoint: always.
        Cancellation: shielded; every descriptor is closed.
        """
        with anyio.CancelScope(shield=True):
            entries = list(self._entries.values())
            self._entries.clear()
            for entry in entries:
                await entry.backing.aclose()
            await anyio.lowlevel.checkpoint()

    def statistics(self) -> dict[str, int]:
        """Open entries and the requests streaming from them (for tests and debugging)."""
        return {
            "open": len(self._entries),
            "users": sum(e.users for e in self._entries.values()),
        }

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request.

        Checkpoint: always.
        Cancellation: a response stops where it is; pins and entries are released.
        """
        if scope["type"] != "http":
            raise RuntimeError(f"CachedFiles serves http only, not {scope['type']!r}")
        method = scope["method"]
        headers = {name: value for name, value in scope["headers"] if name in _WANTED}
        if method in ("GET", "HEAD"):
            await self._get(scope, receive, send, method, headers)
        elif method == "PUT" and self.allow_put:
            await self._put(scope, receive, send, headers)
        else:
            await _status(send, 405, [(b"allow", self._allow)])

    async def _get(
        self, scope: Scope, receive: Receive, send: Send, method: str, headers: dict[bytes, bytes]
    ) -> None:
        store = self.store
        if store is None:
            raise RuntimeError("CachedFiles.store is not set (the lifespan did not run)")
        entry = await self._entry(_route_path(scope))
        if entry is None:
            await _status(send, 404)
            return
        entry.users += 1
        try:
            await self._respond(store, entry, scope, receive, send, method, headers)
        finally:
            await self._release(entry)

    async def _respond(
        self,
        store: CacheStore,
        entry: _Entry,
        scope: Scope,
        receive: Receive,
        send: Send,
        method: str,
        headers: dict[bytes, bytes],
    ) -> None:
        v = entry.validators
        size = entry.size
        start, end, status, out = 0, size, 200, entry.headers
        if headers:
            early = evaluate_preconditions(method, v, headers)
            if early is not None:
                extra = [(b"etag", v.etag), (b"last-modified", v.last_modified)]
                await _status(send, early, extra if early == 304 else [])
                return
            if method == "GET":
                r = parse_range(headers.get(b"range"), size, headers.get(b"if-range"), v)
                if r == UNSATISFIABLE:
                    await _status(send, 416, [(b"content-range", f"bytes */{size}".encode())])
                    return
                if r is not None:
                    start, end = r
                    status = 206
                    out = [
                        (b"content-type", entry.headers[0][1]),
                        (b"content-length", str(end - start).encode("latin-1")),
                        (b"content-range", f"bytes {start}-{end - 1}/{size}".encode()),
                        *entry.headers[2:],
                    ]
        if method == "HEAD" or start == end:
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        async with store.open(entry.key, entry.backing) as inode:
            if end - start <= COPY_THRESHOLD:
                # Hot path: one read (no checkpoint on a hit) before the headers go out, so a
                # file that shrank fails cleanly with a 500 instead of a short body.
                data = await inode.read(start, end - start)
                if len(data) != end - start:
                    raise CacheError(f"{entry.real} ended at {start + len(data)}, before {end}")
                await send({"type": "http.response.start", "status": status, "headers": out})
                await send({"type": "http.response.body", "body": data, "more_body": False})
            else:
                await send({"type": "http.response.start", "status": status, "headers": out})
                await run_until_disconnect(receive, _stream, send, inode, start, end)

    async def _put(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes]
    ) -> None:
        store = self.store
        if store is None:
            raise RuntimeError("CachedFiles.store is not set (the lifespan did not run)")
        path = _route_path(scope)
        found = self._put_target(path)
        if isinstance(found, int):
            await _status(send, found)
            return
        parent, name, target, st = found
        v = None if st is None else Validators.of(st.st_ino, st.st_size, st.st_mtime_ns)
        if headers:
            early = evaluate_preconditions("PUT", v, headers)
            if early is not None:
                await _status(send, early)
                return
        tmp = os.path.join(parent, f".{name}.{secrets.token_hex(6)}.part")
        backing = await LocalFile.open(tmp, writable=True, create=True)
        key = (target, next(self._keys))
        entry: _Entry | None = None
        try:
            async with store.open(key, backing) as inode:
                await _receive_into(inode, receive)
                await inode.write_out()
            fst = os.fstat(backing.fd())
            os.rename(tmp, target)
            entry = _Entry(target, backing, fst, key, self.clock())
        except BaseException as exc:
            # Nothing replaced the target: drop the half-written copy, its pages and its file.
            with anyio.CancelScope(shield=True):
                if key in store:
                    await store.forget(key)
                await backing.aclose()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            if isinstance(exc, ClientDisconnected):
                return  # nobody to answer
            raise
        await self._install(path, entry)
        await _status(send, 201 if st is None else 204, [(b"etag", entry.validators.etag)])

    def _put_target(self, path: str) -> int | tuple[str, str, str, os.stat_result | None]:
        """Where a PUT of ``path`` writes: (real parent, name, target, its stat or None).

        Or the status that refuses it: 404 for a path outside the root (``..``, NUL, a parent
        or a symlink resolving outside), 409 for a missing parent directory or a target that
        is not a regular file.
        """
        parts = self._segments(path)
        if parts is None:
            return 404
        parent = os.path.realpath(os.path.join(self.root, *parts[:-1]))
        if parent != self.root and not parent.startswith(self.root + os.sep):
            return 404
        if not os.path.isdir(parent):
            return 409
        name = parts[-1]
        target = os.path.join(parent, name)
        if os.path.islink(target) and self._resolve(parts) is None:
            return 404  # a symlink pointing out of the root is never written through
        try:
            st = os.stat(target)
        except FileNotFoundError:
            return parent, name, target, None
        except OSError:
            return 409
        if not stat.S_ISREG(st.st_mode):
            return 409  # a directory (or device) in the way
        return parent, name, target, st


class ClientDisconnected(Exception):
    """The client went away before the request body was complete."""


async def _receive_into(inode: CachingInode, receive: Receive) -> None:
    """Write the request body into ``inode`` from offset 0."""
    offset = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client disconnected during the upload")
        body = message.get("body", b"")
        if body:
            await inode.write(offset, body)
            offset += len(body)
        if not message.get("more_body", False):
            break


async def _stream(send: Send, inode: CachingInode, start: int, end: int) -> None:
    await send_inode_range(send, inode, start, end, more_body_after=False)


def _route_path(scope: Scope) -> str:
    """The request path below the mount point (as Starlette's ``get_route_path``)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if (
        root_path
        and path.startswith(root_path)
        and path[len(root_path) : len(root_path) + 1] == "/"
    ):
        return path[len(root_path) :]
    return path


async def _status(
    send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A response with no body (and no Content-Length on 204 and 304, which have none)."""
    out = [*(headers or ())]
    if status not in (204, 304):
        out.append(_EMPTY)
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
