"""A backing file over one S3 object (any S3-compatible store), on aiobotocore.

An S3 object is immutable upstream: it can only be replaced whole. :class:`S3Object` therefore
pins one version of the object (its ETag) and models a mutable file on top of it:

- Reads are ranged GETs carrying ``If-Match: <etag>``, so a read can never mix two versions: if
  the object was replaced behind our back the store answers 412 and the read raises
  :class:`ObjectChangedError` (nothing is copied into the caller's buffers from the new version).
- Writes, truncations and attribute changes land in a local *overlay*: the dirty extents only
  (never the whole object unless all of it was written), plus the new size and metadata.
- :meth:`S3Object.sync` replaces the object with what reads return and only then forgets the
  overlay. Small objects go up as one PUT. Large ones as a multipart upload that sends only the
  dirty ranges (``UploadPart``) and has the store copy the unchanged ones from the current
  version itself (``UploadPartCopy``), so rewriting 4 KiB of a 10 GiB object moves about one
  5 MiB part over the wire, not 10 GiB. S3 wants every part but the last to hold at least 5 MiB,
  so a short dirty run borrows clean neighbouring bytes (read back with a ranged GET) and a short
  clean run between dirty ones is uploaded rather than copied. Compare rclone's and s3fs-fuse's
  "copy unchanged parts" rewrites; the rejected alternative, a read-modify-write of the whole
  object, moves the whole object twice.

Retries and backoff are botocore's own retry modes (``standard`` or ``adaptive``), configured on
the client (:class:`S3Config`): throttling (``SlowDown``), 5xx and dropped connections are
retried there, never by a loop here. What is left after the retries becomes an
:class:`S3Error`, a :class:`~aiocache_inode.errors.BackingError` keeping the S3 error code and
HTTP status.

Many objects share one client, and so one connection pool (``max_pool_connections``): build it
with :func:`open_client` and pass it to :meth:`S3Object.open`. The HTTP layer is aiohttp on asyncio
(its parser is C: about half the CPU per byte received) and httpx on trio (aiohttp is
asyncio-only); ``S3Config.http_backend`` picks one explicitly.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import email.utils
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, final

import anyio
import anyio.lowlevel
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.httpxsession import HttpxSession  # type: ignore[import-untyped]
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ..attrs import AttrMask, Attrs, now_ns
from ..errors import BackingError, ClosedError
from .base import byte_view

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence
    from types import TracebackType

__all__ = [
    "MIN_PART_SIZE",
    "ObjectChangedError",
    "ObjectMissingError",
    "S3Config",
    "S3Error",
    "S3Object",
    "S3ObjectInfo",
    "S3Stats",
    "S3UnavailableError",
    "open_client",
]

log = logging.getLogger(__name__)

#: S3's smallest part, for every part of a multipart upload but the last.
MIN_PART_SIZE: Final = 5 << 20
#: S3's largest part (upload or copy) and largest single PUT / CopyObject.
MAX_PART_SIZE: Final = 5 << 30
#: S3's most parts in one multipart upload.
MAX_PARTS: Final = 10_000

# Tunables of one S3Object (keyword arguments of S3Object.open), a comment per value.
DEFAULT_MULTIPART_THRESHOLD: Final = 16 << 20  # objects up to this size are replaced by one PUT
DEFAULT_PART_SIZE: Final = 8 << 20  # uploaded parts (and read-back chunks) hold this much
DEFAULT_COPY_PART_SIZE: Final = 1 << 30  # server-side copied parts: few requests, no bytes moved
DEFAULT_SYNC_CONCURRENCY: Final = 4  # parts in flight during one sync (each upload holds a part)
_READ_CHUNK: Final = 256 << 10  # a GET body is copied into the caller's buffers in such chunks

# Metadata keys (x-amz-meta-*) that carry the attributes S3 has no place for.
_META_FIELDS: Final = {
    AttrMask.MODE: "mode",
    AttrMask.UID: "uid",
    AttrMask.GID: "gid",
    AttrMask.ATIME: "atime",
    AttrMask.MTIME: "mtime",
    AttrMask.CTIME: "ctime",
}
_TIMES: Final = AttrMask.ATIME | AttrMask.MTIME | AttrMask.CTIME


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class S3Error(BackingError):
    """An S3 request failed (after botocore's retries); ``code`` and ``status`` say how."""

    def __init__(
        self, message: str, *, code: str, status: int | None = None, operation: str = ""
    ) -> None:
        super().__init__(message)
        #: The S3 error code (``NoSuchKey``, ``SlowDown``, ...) or, for a failure below HTTP,
        #: the botocore exception's class name (``EndpointConnectionError``, ...).
        self.code = code
        #: The HTTP status of the final answer, or ``None`` when there was none.
        self.status = status
        #: The S3 operation that failed (``GetObject``, ``UploadPartCopy``, ...).
        self.operation = operation


class ObjectChangedError(S3Error):
    """The object was replaced or deleted upstream since this backing pinned its ETag (412)."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "PreconditionFailed",
        status: int | None = 412,
        operation: str = "",
        current: S3ObjectInfo | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, operation=operation)
        #: What the store holds now, when a HEAD right after the failure could tell; ``None``
        #: when it could not (or the object is gone).
        self.current = current


class ObjectMissingError(S3Error, FileNotFoundError):
    """The object (or its bucket) does not exist, and ``create`` was not asked for."""


class S3UnavailableError(S3Error, ConnectionError):
    """No answer from the store: connection refused or dropped, or a timeout."""


# --------------------------------------------------------------------------------------------
# Configuration and client
# --------------------------------------------------------------------------------------------

ChecksumSetting = Literal["when_supported", "when_required"]


@final
@dataclass(frozen=True, slots=True)
class S3Config:
    """How to build an aiobotocore S3 client (see :func:`open_client`); every field validated.

    Credentials left ``None`` come from botocore's usual chain (``AWS_ACCESS_KEY_ID`` and
    friends, ``~/.aws``).

    ``request_checksum_calculation``: botocore's default, ``"when_supported"``, sends a CRC32 of
    every upload. Over plain http it is a header, which every store accepts. Over https it is an
    ``aws-chunked`` body with a trailing checksum, which older stores reject: Ceph RGW Pacific
    (16.x) answers ``MissingContentLength`` (411) to every PutObject/UploadPart. Set
    ``"when_required"`` for such a store (and ``response_checksum_validation`` likewise); the
    payload is then signed or sent with Content-MD5 as before 2025.
    """

    endpoint_url: str | None = None  # None: AWS itself
    region_name: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    max_pool_connections: int = 16  # connections the client keeps to the store
    retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    max_attempts: int = 5  # attempts per request, the first included (1: no retries)
    connect_timeout: float = 10.0  # seconds
    keepalive_timeout: float = 12.0  # seconds an idle pooled connection is kept; 0: no reuse
    read_timeout: float = 60.0  # seconds without a byte on an open connection
    request_checksum_calculation: ChecksumSetting = "when_supported"
    response_checksum_validation: ChecksumSetting = "when_supported"
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    verify: bool | str | None = None  # TLS: None/True verify, False don't, str = CA bundle path
    # "auto": aiohttp on asyncio, httpx elsewhere (trio). aiohttp parses HTTP in C; a cold 64 MiB
    # GET through the gateway cost it 0.19-0.29 s of CPU against 0.31-0.54 s with httpx.
    http_backend: Literal["auto", "httpx", "aiohttp"] = "auto"

    def __post_init__(self) -> None:
        if self.max_pool_connections < 1:
            raise ValueError(f"max_pool_connections must be >= 1, not {self.max_pool_connections}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, not {self.max_attempts}")
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if not value > 0 or math.isinf(value):
                raise ValueError(f"{name} must be a finite number of seconds > 0, not {value!r}")
        if not self.keepalive_timeout >= 0 or math.isinf(self.keepalive_timeout):
            raise ValueError(
                f"keepalive_timeout must be a finite number of seconds >= 0,"
                f" not {self.keepalive_timeout!r}"
            )
        choices: dict[str, tuple[str, ...]] = {
            "retry_mode": ("standard", "adaptive", "legacy"),
            "request_checksum_calculation": ("when_supported", "when_required"),
            "response_checksum_validation": ("when_supported", "when_required"),
            "addressing_style": ("path", "virtual", "auto"),
            "http_backend": ("auto", "httpx", "aiohttp"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if self.endpoint_url is not None and not self.endpoint_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError(f"endpoint_url must be an http(s) URL, not {self.endpoint_url!r}")

    def client_config(self) -> Any:
        """The ``AioConfig`` (a botocore ``Config``) these settings describe."""
        options: dict[str, Any] = {
            "max_pool_connections": self.max_pool_connections,
            # "total_max_attempts" counts the first attempt, as AWS_MAX_ATTEMPTS does; botocore's
            # "max_attempts" key would count retries only.
            "retries": {"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "request_checksum_calculation": self.request_checksum_calculation,
            "response_checksum_validation": self.response_checksum_validation,
            "s3": {"addressing_style": self.addressing_style},
            "connector_args": {"keepalive_timeout": self.keepalive_timeout},
        }
        if self.resolved_http_backend() == "httpx":
            options["http_session_cls"] = HttpxSession
        return AioConfig(**options)

    def resolved_http_backend(self) -> Literal["httpx", "aiohttp"]:
        """The HTTP layer a client made now uses: ``"auto"`` resolved for the running loop.

        aiohttp when an asyncio loop runs in this thread (it runs on asyncio only), else httpx.
        """
        if self.http_backend != "auto":
            return self.http_backend
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return "httpx"
        return "aiohttp"


_session: Any = None


def _shared_session() -> Any:
    """The aiobotocore session every client is built from.

    Shared because it caches the loaded service model, which otherwise costs each new client
    about a second of parsing JSON.
    """
    global _session
    if _session is None:
        _session = get_session()
    return _session


@contextlib.asynccontextmanager
async def open_client(config: S3Config) -> AsyncIterator[Any]:
    """An aiobotocore S3 client for ``config``, closed (its pool with it) on exit.

    Share one client between many :class:`S3Object` s: they then share its connection pool.

    Checkpoint: on entry and exit.
    Cancellation: on entry nothing is left open; on exit the client is closed anyway.
    """
    session = _shared_session()
    creator = session.create_client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region_name,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        aws_session_token=config.session_token,
        verify=config.verify,
        config=config.client_config(),
    )
    with warnings.catch_warnings():
        # With the original httpx package (rather than its fork httpx2) aiobotocore warns once
        # that the fork is preferred; both work, and the choice is the installer's, not ours.
        warnings.filterwarnings(
            "ignore", message="aiobotocore's httpx backend", category=DeprecationWarning
        )
        client = await creator.__aenter__()
    try:
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await creator.__aexit__(None, None, None)


# --------------------------------------------------------------------------------------------
# State and statistics
# --------------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class S3ObjectInfo:
    """One version of an object as the store describes it (HEAD)."""

    etag: str
    size: int
    mtime: int  # ns since the epoch (Last-Modified, 1 s resolution)
    metadata: dict[str, str] = field(default_factory=dict)


@final
@dataclass(slots=True)
class S3Stats:
    """What one :class:`S3Object` sent and fetched (mutable; tests read and may reset it)."""

    #: Requests by S3 operation name (``GetObject``, ``UploadPartCopy``, ...), botocore's
    #: retries not counted (see ``retries``).
    requests: dict[str, int] = field(default_factory=dict)
    #: Retries botocore made on our behalf (``ResponseMetadata.RetryAttempts``, summed).
    retries: int = 0
    #: Body bytes sent to the store: PUT bodies and uploaded parts.
    bytes_uploaded: int = 0
    #: Bytes the store copied server-side from the old version (UploadPartCopy, CopyObject).
    bytes_copied: int = 0
    #: Body bytes received: reads, and clean bytes fetched to pad a part up to 5 MiB.
    bytes_downloaded: int = 0
    #: Syncs that replaced the object (a sync with nothing to do is not counted).
    replacements: int = 0


# --------------------------------------------------------------------------------------------
# Buffers
# --------------------------------------------------------------------------------------------


@final
class _Scatter:
    """The caller's buffers as one flat, writable destination of ``total`` bytes."""

    __slots__ = ("_ends", "_views", "total")

    def __init__(self, views: list[memoryview]) -> None:
        self._views = views
        ends = []
        pos = 0
        for view in views:
            pos += view.nbytes
            ends.append(pos)
        # Cumulative end of each view. Immutable after __init__.
        self._ends = ends
        #: Bytes in all the views. Immutable after __init__.
        self.total = pos

    def put(self, pos: int, data: memoryview | bytes) -> None:
        """Copy ``data`` to flat position ``pos``. Complexity: O(len(data) + log v)."""
        src = memoryview(data)
        index = bisect.bisect_right(self._ends, pos)
        while src.nbytes:
            view = self._views[index]
            start = pos - (self._ends[index] - view.nbytes)
            take = min(view.nbytes - start, src.nbytes)
            view[start : start + take] = src[:take]
            src = src[take:]
            pos += take
            index += 1

    def zero(self, pos: int, length: int) -> None:
        """Zero ``length`` bytes from flat position ``pos``."""
        zeros = bytes(min(length, 1 << 20))
        while length > 0:
            take = min(length, len(zeros))
            self.put(pos, zeros[:take] if take < len(zeros) else zeros)
            pos += take
            length -= take


# --------------------------------------------------------------------------------------------
# The dirty overlay
# --------------------------------------------------------------------------------------------


@final
class _Overlay:
    """Dirty extents over the pinned version: sorted, disjoint, never touching, never empty.

    Only written bytes are held; a write merges with the extents it overlaps or touches, so a
    sequential writer grows one ``bytearray`` (amortised O(1) per byte). Compare gVisor's
    ``DirtySet``, which keeps ranges only; here the bytes live beside them because the store
    cannot take a partial write.
    """

    __slots__ = ("_datas", "_starts", "dirty_bytes")

    # Invariants (_check_invariants): _starts sorted; for each i, _datas[i] is not empty and
    # _starts[i] + len(_datas[i]) < _starts[i + 1]; dirty_bytes == sum(map(len, _datas)).

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._datas: list[bytearray] = []
        #: Bytes held.
        self.dirty_bytes = 0

    def __bool__(self) -> bool:
        return bool(self._starts)

    def _check_invariants(self) -> None:
        assert self.dirty_bytes == sum(map(len, self._datas))
        for i, data in enumerate(self._datas):
            assert data
            if i + 1 < len(self._starts):
                assert self._starts[i] + len(data) < self._starts[i + 1]

    def clear(self) -> None:
        """Forget every extent."""
        self._starts.clear()
        self._datas.clear()
        self.dirty_bytes = 0

    def write(self, offset: int, views: Sequence[memoryview]) -> int:
        """Store ``views`` in order at ``offset``; return the byte count.

        Complexity: O(n + m + k) for n bytes written, m bytes of a following extent absorbed
        and k extents.
        """
        size = sum(view.nbytes for view in views)
        if not size:
            return 0
        end = offset + size
        starts = self._starts
        datas = self._datas
        index = bisect.bisect_right(starts, offset) - 1
        if index < 0 or starts[index] + len(datas[index]) < offset:
            index += 1
            starts.insert(index, offset)
            datas.insert(index, bytearray())
        buf = datas[index]
        before = len(buf)
        # Absorb the extents that the write overlaps or touches at its end; only the last of
        # them can reach past it, and its tail is kept.
        tail = b""
        last = index + 1
        while last < len(starts) and starts[last] <= end:
            other = datas[last]
            before += len(other)
            other_end = starts[last] + len(other)
            if other_end > end:
                tail = bytes(memoryview(other)[end - starts[last] :])
            last += 1
        del starts[index + 1 : last]
        del datas[index + 1 : last]
        rel = offset - starts[index]
        if rel + size <= len(buf):
            for view in views:
                buf[rel : rel + view.nbytes] = view
                rel += view.nbytes
        else:
            del buf[rel:]
            for view in views:
                buf += view
            buf += tail
        self.dirty_bytes += len(buf) - before
        return size

    def truncate(self, size: int) -> None:
        """Drop every byte at or past ``size``. Complexity: O(k) for k extents dropped."""
        starts = self._starts
        index = bisect.bisect_left(starts, size)
        for data in self._datas[index:]:
            self.dirty_bytes -= len(data)
        del starts[index:]
        del self._datas[index:]
        if index and starts[-1] + len(self._datas[-1]) > size:
            keep = size - starts[-1]
            self.dirty_bytes -= len(self._datas[-1]) - keep
            del self._datas[-1][keep:]

    def extents(self, lo: int, hi: int) -> Iterator[tuple[int, memoryview]]:
        """``(start, bytes)`` of each dirty piece inside ``[lo, hi)``, in order."""
        starts = self._starts
        index = max(0, bisect.bisect_right(starts, lo) - 1)
        while index < len(starts) and starts[index] < hi:
            start = starts[index]
            data = memoryview(self._datas[index])
            a = max(lo, start)
            b = min(hi, start + len(data))
            if a < b:
                yield a, data[a - start : b - start]
            index += 1

    def clean_span(self, lo: int, hi: int) -> tuple[int, int]:
        """The smallest ``[a, b)`` inside ``[lo, hi)`` holding every clean byte (a >= b: none)."""
        for start, data in self.extents(lo, hi):
            if start == lo:
                lo = start + data.nbytes
            break
        pieces = list(self.extents(max(lo, hi - 1), hi))
        if pieces and pieces[-1][0] + pieces[-1][1].nbytes == hi:
            # The last byte is dirty: move hi down to the start of the extent holding it.
            index = bisect.bisect_right(self._starts, hi - 1) - 1
            hi = self._starts[index]
        return lo, hi

    def copy_to(self, dest: _Scatter, dest_pos: int, lo: int, hi: int) -> None:
        """Copy the dirty bytes of ``[lo, hi)`` to ``dest`` (file offset lo at dest_pos)."""
        for start, data in self.extents(lo, hi):
            dest.put(dest_pos + start - lo, data)


# --------------------------------------------------------------------------------------------
# Sync planning
# --------------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class _Part:
    """One part of a replacement: ``[start, end)`` uploaded, or copied from the old version."""

    start: int
    end: int
    copy: bool

    @property
    def size(self) -> int:
        return self.end - self.start


def _plan_parts(
    size: int,
    copyable: list[tuple[int, int]],
    *,
    part_size: int,
    copy_part_size: int,
) -> list[_Part]:
    """Cut ``[0, size)`` into multipart parts, copying ``copyable`` ranges where S3 allows.

    ``copyable`` lists the sorted, disjoint ranges whose bytes are unchanged at the same offsets
    in the old version. Everything else is uploaded. Every part but the last holds at least
    :data:`MIN_PART_SIZE` bytes: a clean run shorter than that (and not last) is uploaded; a short
    dirty run borrows from the clean run after it (or before it) when that one stays long enough,
    and otherwise swallows it. Runs are then cut into parts of ``part_size`` (uploads) and
    ``copy_part_size`` (copies), a short remainder joining the part before it.

    Complexity: O(r + p) for r runs and p parts.
    """
    runs: list[list[int]] = []  # [start, end, copy] with copy 0/1; adjacent kinds differ

    def add(start: int, end: int, copy: int) -> None:
        if start >= end:
            return
        if runs and runs[-1][2] == copy and runs[-1][1] == start:
            runs[-1][1] = end
        else:
            runs.append([start, end, copy])

    pos = 0
    for start, end in copyable:
        add(pos, start, 0)
        add(start, end, 1)
        pos = end
    add(pos, size, 0)
    # Clean runs too short to be a part (and not last) are uploaded instead.
    merged: list[list[int]] = []
    for i, run in enumerate(runs):
        copy = run[2]
        if copy and run[1] - run[0] < MIN_PART_SIZE and i != len(runs) - 1:
            copy = 0
        if merged and merged[-1][2] == copy:
            merged[-1][1] = run[1]
        else:
            merged.append([run[0], run[1], copy])
    runs = merged
    # Short upload runs (not last) borrow clean bytes from a neighbour or absorb it.
    i = 0
    while i < len(runs):
        run = runs[i]
        if run[2] or run[1] - run[0] >= MIN_PART_SIZE or i == len(runs) - 1:
            i += 1
            continue
        need = MIN_PART_SIZE - (run[1] - run[0])
        nxt = runs[i + 1]  # a copy run: kinds alternate
        nxt_len = nxt[1] - nxt[0]
        prev = runs[i - 1] if i else None
        if nxt_len > need and (i + 1 == len(runs) - 1 or nxt_len - need >= MIN_PART_SIZE):
            run[1] += need
            nxt[0] += need
            i += 1
        elif prev is not None and prev[1] - prev[0] - need >= MIN_PART_SIZE:
            run[0] -= need
            prev[1] -= need
            i += 1
        else:
            run[1] = nxt[1]
            del runs[i + 1]
            if i + 1 < len(runs):  # the upload run after the swallowed copy joins too
                run[1] = runs[i + 1][1]
                del runs[i + 1]
    parts: list[_Part] = []
    for start, end, copy in runs:
        chunk = copy_part_size if copy else part_size
        pos = start
        while pos < end:
            stop = min(end, pos + chunk)
            if end - stop < MIN_PART_SIZE:
                stop = end  # a short remainder joins this part (chunk + 5 MiB stays legal)
            parts.append(_Part(pos, stop, bool(copy)))
            pos = stop
    return parts


# --------------------------------------------------------------------------------------------
# S3Object
# --------------------------------------------------------------------------------------------


def _quoted(etag: str) -> str:
    """``etag`` spelled as HEAD spells it, in quotes (RGW 16 leaves them off some answers)."""
    return etag if etag.startswith(('"', "W/")) else f'"{etag}"'


def _parse_http_date(value: str | None) -> int:
    if not value:
        return now_ns()
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp()) * 1_000_000_000
    except (TypeError, ValueError):
        return now_ns()


@final
class S3Object:
    """A :class:`~aiocache_inode.backing.BackingFile` over one S3 object (see the module doc).

    Build one with :meth:`open`; close it with :meth:`aclose` or ``async with``. It pins the
    version it opened (:attr:`etag`) until a :meth:`sync` replaces it or :meth:`refresh` adopts a
    newer one; reads of a version replaced by someone else raise :class:`ObjectChangedError`.

    Attributes: ``size`` is the object's (or the overlay's) length; ``mtime`` its Last-Modified,
    unless a forced time was set; ``mode``, ``uid``, ``gid`` and forced times are kept in the
    object's user metadata (``x-amz-meta-mode`` ...), so they survive a fresh open. Unforced time
    updates are dropped: the store keeps Last-Modified itself (compare
    :class:`~aiocache_inode.backing.LocalFile`, which drops them when ``utime`` is refused).

    Concurrency: reads run concurrently with everything. Writes, attribute changes and syncs are
    serialised by one lock, so a write waits for a sync in flight (a sync uploads what was
    written before it started, nothing less and nothing more).
    """

    __slots__ = (
        "_base_limit",
        "_base_size",
        "_client",
        "_closed",
        "_conditional",
        "_copy_part_size",
        "_etag",
        "_generation",
        "_lock",
        "_meta",
        "_meta_dirty",
        "_mtime",
        "_multipart_threshold",
        "_overlay",
        "_owned",
        "_part_size",
        "_size",
        "_sync_concurrency",
        "bucket",
        "key",
        "stats",
    )

    # Lock: _lock serialises write_from, set_attributes, allocate, sync and refresh; reads take
    # no lock and detect a replacement that completed during their GET by _generation.
    # Invariants (_check_invariants): 0 <= _base_limit <= _base_size; _base_limit <= _size;
    # every overlay byte is below _size; _etag is None only before the first sync of an object
    # that did not exist (never: open() creates it).

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        info: S3ObjectInfo,
        *,
        owned: contextlib.AsyncExitStack | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        copy_part_size: int = DEFAULT_COPY_PART_SIZE,
        sync_concurrency: int = DEFAULT_SYNC_CONCURRENCY,
        conditional_writes: bool = True,
    ) -> None:
        """Wrap an object whose state ``info`` is known (:meth:`open` is the usual way in)."""
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE - MIN_PART_SIZE:
            raise ValueError(
                f"part_size must be in [{MIN_PART_SIZE}, {MAX_PART_SIZE - MIN_PART_SIZE}],"
                f" not {part_size}"
            )
        if not MIN_PART_SIZE <= copy_part_size <= MAX_PART_SIZE - MIN_PART_SIZE:
            raise ValueError(
                f"copy_part_size must be in [{MIN_PART_SIZE}, {MAX_PART_SIZE - MIN_PART_SIZE}],"
                f" not {copy_part_size}"
            )
        if not 0 <= multipart_threshold <= MAX_PART_SIZE:
            raise ValueError(
                f"multipart_threshold must be in [0, {MAX_PART_SIZE}], not {multipart_threshold}"
            )
        if sync_concurrency < 1:
            raise ValueError(f"sync_concurrency must be >= 1, not {sync_concurrency}")
        # The aiobotocore client. Immutable after __init__.
        self._client = client
        # The exit stack that closes a client we built ourselves, or None. Immutable.
        self._owned = owned
        #: Bucket and key. Immutable after __init__.
        self.bucket = bucket
        self.key = key
        # Tunables. Immutable after __init__.
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._copy_part_size = copy_part_size
        self._sync_concurrency = sync_concurrency
        self._conditional = conditional_writes
        self._lock = anyio.Lock()
        # The pinned version. Protected by: _lock (written), read anywhere between awaits.
        self._etag: str = info.etag
        self._base_size = info.size
        self._mtime = info.mtime
        self._meta: dict[str, str] = dict(info.metadata)
        # Bumped whenever the pinned version changes. Protected by: _lock.
        self._generation = 0
        # The local model on top of it. Protected by: _lock.
        self._base_limit = info.size  # old-version bytes past this read as zeros (truncated)
        self._size = info.size
        self._overlay = _Overlay()
        self._meta_dirty = False
        self._closed = False
        #: Request and byte counters.
        self.stats = S3Stats()

    @classmethod
    async def open(
        cls,
        client: Any,
        bucket: str,
        key: str,
        *,
        create: bool = False,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        copy_part_size: int = DEFAULT_COPY_PART_SIZE,
        sync_concurrency: int = DEFAULT_SYNC_CONCURRENCY,
        conditional_writes: bool = True,
    ) -> S3Object:
        """Open ``s3://bucket/key``: one HEAD (plus a PUT when it is created).

        Checkpoint: always, except when raising ``ValueError``.
        Cancellation: nothing is left open; a client built from an ``S3Config`` is closed. A
        cancelled create may or may not have created the (empty) object.

        Args:
            client: an aiobotocore S3 client (shared: the object never closes it), or an
                :class:`S3Config` to build a client this object owns and closes.
            bucket: the bucket, which must exist.
            key: the object key.
            create: create an empty object when there is none (``If-None-Match: *``, so an
                object created meanwhile by someone else is opened instead, never replaced).
            multipart_threshold: objects up to this size are replaced with one PUT.
            part_size: bytes per uploaded part of a multipart replacement.
            copy_part_size: bytes per server-side copied part.
            sync_concurrency: parts in flight during one sync.
            conditional_writes: replace with ``If-Match: <etag>`` (and check the version before
                and after server-side copies), so a sync never overwrites a version it did not
                see. Turn off only for a store that rejects conditional PUTs.

        Returns:
            The open object, pinned to its current version.

        Raises:
            ValueError: a tunable is out of range, or ``bucket``/``key`` is empty.
            ObjectMissingError: no such object (and ``create`` is false), or no such bucket.
            S3Error: the store refused or could not be reached.
        """
        if not bucket or not key:
            raise ValueError(f"bucket and key must not be empty: {bucket!r}, {key!r}")
        tunables: dict[str, Any] = {
            "multipart_threshold": multipart_threshold,
            "part_size": part_size,
            "copy_part_size": copy_part_size,
            "sync_concurrency": sync_concurrency,
            "conditional_writes": conditional_writes,
        }
        # Validate the tunables before any request (and before building a client).
        cls(None, bucket, key, S3ObjectInfo("", 0, 0), **tunables)
        async with contextlib.AsyncExitStack() as stack:
            owns = isinstance(client, S3Config)
            if owns:
                client = await stack.enter_async_context(open_client(client))
            self = cls(client, bucket, key, S3ObjectInfo("", 0, 0), **tunables)
            self._adopt(await self._open_info(create))
            if owns:
                # From here on the object owns the client: aclose() unwinds this stack.
                self._owned = stack.pop_all()
            return self
        raise AssertionError("unreachable")  # pragma: no cover - the block returns or raises

    async def _open_info(self, create: bool) -> S3ObjectInfo:
        try:
            return await self._head()
        except ObjectMissingError:
            if not create:
                raise
        # A 412 means someone else created it meanwhile: open theirs.
        with contextlib.suppress(ObjectChangedError):
            await self._call("PutObject", Body=b"", IfNoneMatch="*")
        return await self._head()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (
            f"<S3Object s3://{self.bucket}/{self.key} etag={self._etag}"
            f" size={self._size} dirty={self._overlay.dirty_bytes}{state}>"
        )

    async def __aenter__(self) -> S3Object:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- observable state -----------------------------------------------------------------------

    @property
    def etag(self) -> str:
        """The ETag of the pinned version (as the store spells it, quotes included)."""
        return self._etag

    @property
    def dirty(self) -> bool:
        """Whether a :meth:`sync` has something to replace."""
        return bool(
            self._overlay
            or self._meta_dirty
            or self._size != self._base_size
            or self._base_limit != self._base_size
        )

    @property
    def dirty_bytes(self) -> int:
        """Bytes held by the overlay (written and not yet synced)."""
        return self._overlay.dirty_bytes

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._closed

    def _check_invariants(self) -> None:
        """Assert the invariants stated beside the fields (for tests)."""
        assert 0 <= self._base_limit <= self._base_size
        assert self._base_limit <= self._size
        self._overlay._check_invariants()  # noqa: SLF001 (the check of what it owns)
        for start, data in self._overlay.extents(0, 1 << 63):
            assert start + data.nbytes <= self._size

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")

    # -- requests -------------------------------------------------------------------------------

    def _error(self, operation: str, exc: Exception) -> S3Error:
        where = f"{operation} s3://{self.bucket}/{self.key}"
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode")
            code = str(err.get("Code") or status or "Unknown")
            message = f"{where}: {code} (HTTP {status}): {err.get('Message') or exc}"
            if status == 412 or code == "PreconditionFailed":
                return ObjectChangedError(message, code=code, status=status, operation=operation)
            if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "NotFound"):
                return ObjectMissingError(message, code=code, status=status, operation=operation)
            return S3Error(message, code=code, status=status, operation=operation)
        code = type(exc).__name__
        message = f"{where}: {code}: {exc}"
        if isinstance(exc, BotoConnectionError | HTTPClientError | ReadTimeoutError):
            return S3UnavailableError(message, code=code, operation=operation)
        return S3Error(message, code=code, operation=operation)

    def _count(self, operation: str, response: dict[str, Any] | None) -> None:
        requests = self.stats.requests
        requests[operation] = requests.get(operation, 0) + 1
        if response is not None:
            self.stats.retries += response.get("ResponseMetadata", {}).get("RetryAttempts", 0)

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One S3 request (botocore retries inside); failures become :class:`S3Error`."""
        method = getattr(self._client, _METHODS[operation])
        try:
            response: dict[str, Any] = await method(Bucket=self.bucket, Key=self.key, **params)
        except (ClientError, BotoCoreError) as exc:
            self._count(operation, getattr(exc, "response", None))
            raise self._error(operation, exc) from exc
        self._count(operation, response)
        return response

    async def _head(self, **params: Any) -> S3ObjectInfo:
        response = await self._call("HeadObject", **params)
        return S3ObjectInfo(
            etag=_quoted(response["ETag"]),
            size=response["ContentLength"],
            mtime=int(response["LastModified"].timestamp()) * 1_000_000_000,
            metadata=dict(response.get("Metadata") or {}),
        )

    async def _current(self) -> S3ObjectInfo | None:
        """What the store holds now, or None when it cannot say (within 10 s). Never raises."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            try:
                return await self._head()
            except S3Error:
                return None
        return None

    def _gone(self, exc: ObjectMissingError) -> ObjectChangedError:
        """The pinned version deleted (404) is a change like any other."""
        return ObjectChangedError(
            f"s3://{self.bucket}/{self.key} was deleted upstream: {exc}",
            code=exc.code,
            status=exc.status,
            operation=exc.operation,
        )

    async def _get(self, lo: int, hi: int, etag: str, dest: _Scatter, dest_pos: int) -> int:
        """GET ``[lo, hi)`` of version ``etag`` into ``dest``; return the bytes received.

        Short only when the connection broke after some bytes arrived; an error before any
        byte is raised.
        """
        operation = "GetObject"
        got = 0
        try:
            response = await self._client.get_object(
                Bucket=self.bucket, Key=self.key, Range=f"bytes={lo}-{hi - 1}", IfMatch=etag
            )
            self._count(operation, response)
            body = response["Body"]
            try:
                while True:
                    # Read on to the end of the body (one more, empty, read): the httpx body's
                    # async generator must finish, or trio warns when it is collected.
                    chunk = await body.read(max(1, min(_READ_CHUNK, hi - lo - got)))
                    if not chunk:
                        break
                    dest.put(dest_pos + got, chunk[: hi - lo - got])
                    got += min(len(chunk), hi - lo - got)
            finally:
                with anyio.CancelScope(shield=True):
                    await _close_body(body)
        except (ClientError, BotoCoreError) as exc:
            if got and isinstance(exc, HTTPClientError | IncompleteReadError | ReadTimeoutError):
                self.stats.bytes_downloaded += got
                return got
            if not got:
                self._count(operation, getattr(exc, "response", None))
            raise self._error(operation, exc) from exc
        self.stats.bytes_downloaded += got
        return got

    # -- BackingFile ----------------------------------------------------------------------------

    def fd(self) -> int:
        """Always -1: there is no host descriptor."""
        return -1

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Fill ``buffers`` in order from ``offset``: the overlay, zeros, and one ranged GET.

        Only the span between the first and last clean (not overlaid) bytes is fetched, with
        ``If-Match`` on the pinned ETag. A replacement by our own :meth:`sync` completing during
        the GET is noticed and the read redone against the new version.

        Checkpoint: always, except when raising ``ValueError`` or ``ClosedError``.
        Cancellation: the buffers may hold part of the data; nothing else changes.

        Returns:
            Bytes read; less than asked at end of file, or when the connection broke mid-body
            (the next read at the following offset retries); 0 at or past end of file.

        Raises:
            ValueError: ``offset`` is negative.
            ClosedError: the object was closed.
            ObjectChangedError: the pinned version was replaced or deleted by someone else;
                ``current`` describes the new one when known.
            S3Error: the store refused or could not be reached (after botocore's retries).
        """
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        self._check_open()
        dest = _Scatter([byte_view(buf) for buf in buffers if buf.nbytes])
        while True:
            generation = self._generation
            etag = self._etag
            end = min(offset + dest.total, self._size)
            if end <= offset:
                await anyio.lowlevel.checkpoint()
                return 0
            lo, hi = self._overlay.clean_span(offset, min(end, self._base_limit))
            if lo < hi:
                try:
                    got = await self._get(lo, hi, etag, dest, lo - offset)
                except ObjectChangedError as exc:
                    if generation != self._generation:
                        continue  # our own sync replaced it meanwhile: read the new version
                    exc.current = await self._current()
                    raise
                except ObjectMissingError as exc:
                    raise self._gone(exc) from exc
                if generation != self._generation:
                    continue  # the overlay we would patch in belongs to the old version
                if got < hi - lo:
                    end = lo + got
            else:
                await anyio.lowlevel.checkpoint()
                if generation != self._generation:
                    continue
            # Compose against the state as it is now (between awaits: atomic).
            end = min(end, self._size)
            if end <= offset:
                return 0
            limit = min(self._base_limit, end)
            if limit < end:
                dest.zero(max(limit, offset) - offset, end - max(limit, offset))
            self._overlay.copy_to(dest, 0, offset, end)
            return end - offset

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Copy ``buffers`` into the overlay at ``offset``; a gap past the end reads as zeros.

        Nothing is sent: :meth:`sync` replaces the object.

        Checkpoint: always (the lock), except when raising ``ValueError`` or ``ClosedError``.
        Cancellation: while waiting for the lock (a sync in flight); nothing is written.
        Complexity: O(n) for n bytes written (amortised, see ``_Overlay.write``).

        Returns:
            Bytes written: always all of them.

        Raises:
            ValueError: ``offset`` is negative.
            ClosedError: the object was closed.
        """
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        self._check_open()
        views = [byte_view(buf) for buf in buffers if buf.nbytes]
        async with self._lock:
            self._check_open()
            done = self._overlay.write(offset, views)
            if done:
                self._size = max(self._size, offset + done)
            return done

    async def get_attributes(self) -> Attrs:
        """The attributes of the pinned version with the local changes applied; no request.

        The store is asked at :meth:`open`, :meth:`sync` and :meth:`refresh`; to see a newer
        upstream version, call :meth:`refresh`.

        Checkpoint: always, except when raising ``ClosedError``.
        Cancellation: nothing changes.

        Raises:
            ClosedError: the object was closed.
        """
        self._check_open()
        await anyio.lowlevel.checkpoint()
        meta = self._meta

        def number(name: str, default: int) -> int:
            try:
                return int(meta[name], 0) if name in meta else default
            except ValueError:
                return default

        return Attrs(
            size=self._size,
            usage=self._size,
            mode=number("mode", 0o644) & 0o7777,
            uid=max(0, number("uid", 0)),
            gid=max(0, number("gid", 0)),
            atime=max(0, number("atime", self._mtime)),
            mtime=max(0, number("mtime", self._mtime)),
            ctime=max(0, number("ctime", self._mtime)),
            links=1,
        )

    async def set_attributes(self, mask: AttrMask, attrs: Attrs, force_timestamps: bool) -> None:
        """Apply ``SIZE`` to the overlay and the rest to the metadata; sent at :meth:`sync`.

        ``SIZE`` truncates (dropping overlaid and old bytes past it) or zero-extends. ``MODE``,
        ``UID``, ``GID`` go into the object's user metadata; so do ``ATIME``/``MTIME``/
        ``CTIME`` when ``force_timestamps`` is true (unforced times are dropped: the store keeps
        Last-Modified). ``USAGE`` and ``LINKS`` are ignored. A field equal to its current value
        changes nothing, so a write-back of unchanged attributes costs no request.

        Checkpoint: always (the lock), except when raising ``ClosedError``.
        Cancellation: while waiting for the lock; nothing changes.

        Raises:
            ClosedError: the object was closed.
        """
        self._check_open()
        async with self._lock:
            self._check_open()
            if AttrMask.SIZE in mask:
                self._truncate_locked(attrs.size)
            current = await self.get_attributes()
            for flag, name in _META_FIELDS.items():
                if flag not in mask or (flag & _TIMES and not force_timestamps):
                    continue
                value = getattr(attrs, name)
                if value != getattr(current, name) or (flag & _TIMES and name not in self._meta):
                    self._meta[name] = str(value)
                    self._meta_dirty = True

    def _truncate_locked(self, size: int) -> None:
        """Requires: _lock held."""
        if size < self._size:
            self._overlay.truncate(size)
            self._base_limit = min(self._base_limit, size)
        self._size = size

    async def allocate(self, offset: int, length: int) -> None:
        """Grow the object with zeros to ``offset + length`` if shorter (applied at sync).

        Checkpoint: always (the lock), except when raising ``ValueError`` or ``ClosedError``.
        Cancellation: while waiting for the lock; nothing changes.

        Raises:
            ValueError: ``offset`` or ``length`` is negative.
            ClosedError: the object was closed.
        """
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset or length: {offset}, {length}")
        self._check_open()
        async with self._lock:
            self._check_open()
            self._size = max(self._size, offset + length)

    async def sync(self) -> None:
        """Replace the object with what reads return; return once the store acknowledged it.

        Nothing to do (no write, truncation or attribute change since the last sync) costs no
        request. Otherwise: one PUT up to ``multipart_threshold`` bytes; a CopyObject onto
        itself when only metadata changed; else a multipart upload of the dirty ranges with the
        clean ones copied server-side (see the module doc). With ``conditional_writes`` the PUT
        carries ``If-Match`` and a multipart upload checks the version before the first and
        after the last copy, so a version replaced meanwhile is never overwritten silently.
        On success :attr:`etag` names the new version and the overlay is empty.

        Checkpoint: always, except when raising ``ClosedError``.
        Cancellation: no partial object is ever visible: the old version stays until the store
        completes the new one. A cancelled multipart upload is aborted (shielded, bounded to 30
        s) so no parts linger; a cancelled PUT may or may not have replaced the object (S3 PUTs
        are atomic). Either way the overlay is kept: a later sync sends it again (and, if the
        PUT did land, meets a 412 that says so).

        Raises:
            ClosedError: the object was closed.
            ObjectChangedError: the object was replaced by someone else since it was pinned;
                nothing was written and the overlay is kept (:meth:`refresh` to see it).
            S3Error: the store refused or could not be reached; nothing was replaced, the
                overlay is kept, and a later sync retries.
        """
        self._check_open()
        async with self._lock:
            self._check_open()
            if not self.dirty:
                return
            size = self._size
            data_clean = not self._overlay and self._base_limit == self._base_size == size
            try:
                if data_clean and 0 < size <= MAX_PART_SIZE:
                    info = await self._copy_onto_itself()
                elif size <= self._multipart_threshold:
                    info = await self._put_whole(size)
                else:
                    info = await self._multipart(size)
            except ObjectChangedError as exc:
                exc.current = await self._current()
                raise
            except ObjectMissingError as exc:
                raise self._gone(exc) from exc
            self._adopt(info)
            self.stats.replacements += 1

    def _adopt(self, info: S3ObjectInfo) -> None:
        """Pin ``info`` with no local changes. Atomic (no await). Requires: _lock or open()."""
        self._etag = info.etag
        self._base_size = self._base_limit = self._size = info.size
        self._mtime = info.mtime
        self._meta = dict(info.metadata)
        self._meta_dirty = False
        self._overlay.clear()
        self._generation += 1

    def _if_match(self) -> dict[str, str]:
        # RGW 16 compares If-Match on writes against the unquoted ETag (quoted: always 412);
        # AWS and moto accept either spelling, so send it bare.
        return {"IfMatch": self._etag.strip('"')} if self._conditional else {}

    async def _check_pinned(self) -> None:
        if self._conditional:
            await self._head(IfMatch=self._etag)

    def _info_after(
        self, response: dict[str, Any], size: int, etag: str | None = None
    ) -> S3ObjectInfo:
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return S3ObjectInfo(
            etag=_quoted(etag or response["ETag"]),
            size=size,
            mtime=_parse_http_date(headers.get("date")),
            metadata=dict(self._meta),
        )

    async def _fill(self, buf: bytearray, start: int, end: int) -> None:
        """Compose ``[start, end)`` of the new contents into ``buf``: old bytes, overlay, zeros."""
        dest = _Scatter([memoryview(buf)])
        lo, hi = self._overlay.clean_span(start, min(end, self._base_limit))
        if lo < hi:
            got = await self._get(lo, hi, self._etag, dest, lo - start)
            if got < hi - lo:
                raise S3UnavailableError(
                    f"GetObject s3://{self.bucket}/{self.key}: connection broke after {got}"
                    f" of {hi - lo} bytes",
                    code="IncompleteRead",
                    operation="GetObject",
                )
        # buf starts zeroed; only the clean span was fetched: patch the overlay over it.
        self._overlay.copy_to(dest, 0, start, end)

    async def _put_whole(self, size: int) -> S3ObjectInfo:
        body = bytearray(size)
        await self._fill(body, 0, size)
        response = await self._call(
            "PutObject", Body=bytes(body), Metadata=self._meta, **self._if_match()
        )
        self.stats.bytes_uploaded += size
        return self._info_after(response, size)

    async def _copy_onto_itself(self) -> S3ObjectInfo:
        response = await self._call(
            "CopyObject",
            CopySource={"Bucket": self.bucket, "Key": self.key},
            CopySourceIfMatch=self._etag,
            Metadata=self._meta,
            MetadataDirective="REPLACE",
        )
        self.stats.bytes_copied += self._size
        return self._info_after(response, self._size, response["CopyObjectResult"]["ETag"])

    def _copyable(self) -> list[tuple[int, int]]:
        """Old-version ranges unchanged at the same offsets: [0, _base_limit) minus the overlay."""
        ranges = []
        pos = 0
        limit = self._base_limit
        for start, data in self._overlay.extents(0, limit):
            if pos < start:
                ranges.append((pos, start))
            pos = start + data.nbytes
        if pos < limit:
            ranges.append((pos, limit))
        return ranges

    async def _multipart(self, size: int) -> S3ObjectInfo:
        part_size, copy_part_size = self._part_size, self._copy_part_size
        copyable = self._copyable()
        while True:
            parts = _plan_parts(size, copyable, part_size=part_size, copy_part_size=copy_part_size)
            if len(parts) <= MAX_PARTS:
                break
            part_size = min(2 * part_size, MAX_PART_SIZE - MIN_PART_SIZE)
            copy_part_size = MAX_PART_SIZE - MIN_PART_SIZE
        copies = any(part.copy for part in parts)
        if copies:
            await self._check_pinned()
        response = await self._call("CreateMultipartUpload", Metadata=self._meta)
        upload_id: str = response["UploadId"]
        try:
            etags = await self._send_parts(upload_id, parts)
            if copies:
                # UploadPartCopy's CopySourceIfMatch is ignored by some stores (RGW 16, moto):
                # the version unchanged after the last copy means every copy read it.
                await self._check_pinned()
            done = await self._call(
                "CompleteMultipartUpload",
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": n + 1, "ETag": etag} for n, etag in enumerate(etags)]
                },
            )
            if not done.get("ETag"):
                # RGW 16 may answer a completion with an empty ETag: ask for it. (A writer
                # replacing the object in between would make us pin theirs; reads and the next
                # sync then see a consistent version, just not ours.)
                return await self._head()
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                try:
                    await self._call("AbortMultipartUpload", UploadId=upload_id)
                except S3Error as exc:
                    log.warning("abandoned multipart upload %s: %s", upload_id, exc)
            raise
        return self._info_after(done, size)

    async def _send_parts(self, upload_id: str, parts: list[_Part]) -> list[str]:
        """Send ``parts`` with at most ``sync_concurrency`` in flight; their ETags in order."""
        etags = [""] * len(parts)
        queue = iter(enumerate(parts))
        errors: list[Exception] = []

        async def worker(scope: anyio.CancelScope) -> None:
            for number, part in queue:
                try:
                    etags[number] = await self._send_part(upload_id, number + 1, part)
                except Exception as exc:
                    errors.append(exc)
                    scope.cancel()
                    return

        async with anyio.create_task_group() as tg:
            for _ in range(min(self._sync_concurrency, len(parts))):
                tg.start_soon(worker, tg.cancel_scope)
        if errors:
            raise errors[0]
        return etags

    async def _send_part(self, upload_id: str, number: int, part: _Part) -> str:
        if part.copy:
            response = await self._call(
                "UploadPartCopy",
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": self.key},
                CopySourceRange=f"bytes={part.start}-{part.end - 1}",
                CopySourceIfMatch=self._etag,
            )
            self.stats.bytes_copied += part.size
            return str(response["CopyPartResult"]["ETag"])
        body = bytearray(part.size)
        await self._fill(body, part.start, part.end)
        response = await self._call(
            "UploadPart", UploadId=upload_id, PartNumber=number, Body=bytes(body)
        )
        self.stats.bytes_uploaded += part.size
        return str(response["ETag"])

    # -- beyond the protocol --------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Ask the store for the current version; adopt it if it changed and nothing is dirty.

        Checkpoint: always, except when raising ``ClosedError``.
        Cancellation: nothing changes.

        Returns:
            Whether a different version is now pinned (reads now return its bytes; a caller
            caching the old ones must drop them).

        Raises:
            ClosedError: the object was closed.
            ObjectChangedError: it changed while local changes are pending; nothing changed
                here (``current`` names the new version). Sync would fail the same way.
            ObjectMissingError: the object was deleted.
            S3Error: the store could not be asked.
        """
        self._check_open()
        async with self._lock:
            self._check_open()
            info = await self._head()
            if info.etag == self._etag:
                return False
            if self.dirty:
                raise ObjectChangedError(
                    f"s3://{self.bucket}/{self.key} changed upstream ({self._etag} ->"
                    f" {info.etag}) with local changes pending",
                    operation="HeadObject",
                    current=info,
                )
            self._adopt(info)
            return True

    async def aclose(self) -> None:
        """Refuse later requests with ``ClosedError``; close the client if this object built it.

        Unsynced changes are dropped: call :meth:`sync` first. Closing twice is allowed.

        Checkpoint: always.
        Cancellation: closed anyway (the client close is shielded).
        """
        self._closed = True
        owned, self._owned = self._owned, None
        if owned is not None:
            with anyio.CancelScope(shield=True):
                await owned.aclose()
        await anyio.lowlevel.checkpoint()


# aiobotocore method behind each S3 operation name used in stats and errors.
_METHODS: Final = {
    "AbortMultipartUpload": "abort_multipart_upload",
    "CompleteMultipartUpload": "complete_multipart_upload",
    "CopyObject": "copy_object",
    "CreateMultipartUpload": "create_multipart_upload",
    "GetObject": "get_object",
    "HeadObject": "head_object",
    "PutObject": "put_object",
    "UploadPart": "upload_part",
    "UploadPartCopy": "upload_part_copy",
}


async def _close_body(body: Any) -> None:
    # A body abandoned half-read (an error, a cancellation) leaves the httpx body's async
    # generator suspended; finish it here rather than at garbage collection.
    stream = getattr(body, "_stream_iter", None)
    if stream is not None and hasattr(stream, "aclose"):
        with contextlib.suppress(Exception):
            await stream.aclose()
    close = getattr(body, "aclose", None)
    if close is not None:
        await close()
    else:  # pragma: no cover - every aiobotocore body has aclose
        body.close()
