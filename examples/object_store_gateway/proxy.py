"""Proxy mode: the gateway as a cache in front of another S3-compatible store.

``--backend s3://BUCKET[/PREFIX]?endpoint=URL`` serves the upstream bucket under its own name.
Credentials for the upstream come from the usual ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_MAX_ATTEMPTS``: the
upstream reads' retries, default 5) variables; clients still sign their requests with the
gateway's own key.

- GetObject and HeadObject go through the cache: one inode per (key, ETag) over an
  :class:`~aiocache_inode.backing.S3Object`, so a new version is a new inode and two versions
  never mix. What the gateway knows of a key is trusted for ``--revalidate`` seconds; after that
  the next request asks the upstream with a conditional HEAD (``If-None-Match: <etag>``): 304
  keeps the cached pages, anything else moves to the new version (or to NoSuchKey).
- Every other operation (listings, PUT, DELETE, copies, multipart) is re-signed with the
  upstream's credentials and passed through; its answer is the upstream's, sent only after the
  upstream answered. Writes drop what the gateway holds for the key, so the next read asks the
  upstream whatever the TTL.
- Coherence, with several gateways over one upstream: a write through any gateway is seen by
  that gateway at once and by the others within ``--revalidate`` seconds; so is a write made
  directly to the upstream. A fill never mixes versions (each GET carries ``If-Match``).

Request bodies are decoded (aws-chunked, checksums verified as for local storage) and held in
memory up to ``MAX_BODY`` before they are forwarded; larger uploads must use multipart parts
of at most that size. Bucket-level requests (ListBuckets, CreateBucket, ...) pass through too,
so ListBuckets lists the upstream's buckets. Not done: a GET by ``partNumber`` (NotImplemented,
as in local mode); bodies of passed-through answers are held whole (listings and XML
documents, small by nature).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel
import httpx
from botocore.auth import S3SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from aiocache_inode import BackingError
from aiocache_inode.asgi import send_inode_range

from .bodies import read_small_body
from .errors import S3Error
from .exchange import http_date
from .objects import check_conditions, parse_range
from .storage import ObjectMeta

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from aiocache_inode import CacheStore
    from aiocache_inode.backing.s3 import S3Object

    from .config import GatewayConfig
    from .exchange import Exchange

__all__ = [
    "MAX_BODY",
    "PROXY_READAHEAD_REQUEST",
    "Proxy",
    "ProxySlot",
    "Upstream",
    "open_proxy",
    "parse_backend",
]

#: Largest request body forwarded (held in memory meanwhile); S3 parts are at most 5 GiB, so
#: clients must use parts of at most this size.
MAX_BODY: Final = 256 << 20
#: The largest ranged GET a readahead window is cut into, in proxy mode (the library's default,
#: 256 KiB, suits stores whose requests cost little). Each GET to an S3 store costs milliseconds
#: of CPU of its own (botocore's signing, hooks and parsing: about 10 ms per GET on this 2-core
#: machine, profiled with py-spy) and some stores more (moto copies the whole object for every
#: ranged GET). A cold 64 MiB read through the gateway from a one-node Ceph RGW 20 ms away (the
#: benchmark's delay line) took 1.1 s in GETs of 1 MiB, 0.70 s in 4 MiB and 0.48-0.60 s in
#: 8 MiB, against 0.42 s for one direct GET; mountpoint-s3 uses 8 MiB parts too.
PROXY_READAHEAD_REQUEST: Final = 8 << 20
#: Bytes read through the cache before the status line goes out, so a failed fill (a version
#: replaced upstream) is answered with a retry or an S3 error, not a cut-off 200.
_FIRST_READ: Final = 64 << 10

# Request headers passed through to the upstream (plus every x-amz-meta-*).
_FORWARDED: Final = frozenset(
    {
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-md5",
        "content-type",
        "expires",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "x-amz-copy-source-if-match",
        "x-amz-copy-source-if-none-match",
        "x-amz-copy-source-if-modified-since",
        "x-amz-copy-source-if-unmodified-since",
        "x-amz-copy-source-range",
        "x-amz-metadata-directive",
        "x-amz-storage-class",
        "x-amz-tagging",
        "x-amz-tagging-directive",
    }
)
# Response headers not passed back (the gateway sets its own, or they describe the hop).
_DROPPED: Final = frozenset(
    {
        "connection",
        "content-length",
        "date",
        "keep-alive",
        "server",
        "transfer-encoding",
        "x-amz-id-2",
        "x-amz-request-id",
    }
)
# Operations after which what the gateway holds for the key is stale.
_WRITES: Final = frozenset({"PutObject", "CopyObject", "DeleteObject", "CompleteMultipartUpload"})
# Listing answers whose key-bearing elements carry the upstream prefix.
_LISTINGS: Final = frozenset({"ListObjects", "ListObjectsV2", "ListMultipartUploads", "ListParts"})
_KEY_ELEMENTS: Final = re.compile(
    rb"<(Key|Prefix|StartAfter|Marker|NextMarker|KeyMarker|NextKeyMarker)>([^<]*)</\1>"
)
_HEX2: Final = re.compile(rb"[0-9A-Fa-f]{2}")
# Object headers kept from the upstream's HEAD and sent with every GET/HEAD answer.
_OBJECT_HEADERS: Final = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-type",
    "expires",
)


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where proxy mode sends requests: ``s3://BUCKET[/PREFIX]?endpoint=URL``."""

    bucket: str
    prefix: str
    endpoint: str


def parse_backend(value: str) -> Upstream:
    """Parse ``s3://BUCKET[/PREFIX]?endpoint=URL``.

    Raises:
        ValueError: not of that form (the message says what is missing).
    """
    parts = urllib.parse.urlsplit(value)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{value!r}: expected s3://BUCKET[/PREFIX]?endpoint=URL")
    query = urllib.parse.parse_qs(parts.query)
    endpoint = (query.get("endpoint") or [""])[0]
    scheme = urllib.parse.urlsplit(endpoint).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"{value!r}: endpoint=URL (http:// or https://) is required")
    prefix = parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return Upstream(parts.netloc, prefix, endpoint.rstrip("/"))


@dataclass(slots=True)
class _Entry:
    """What the gateway knows of one key: the version it serves and when it last checked."""

    etag: str
    size: int
    mtime: int
    headers: list[tuple[str, str]]
    obj: S3Object
    checked_at: float

    @property
    def meta(self) -> ObjectMeta:
        """The version as the conditional-request checks of local storage take it."""
        return ObjectMeta("", "", self.size, self.etag.strip('"'), self.mtime)


class ProxySlot:
    """Where the app's middleware finds the proxy while the lifespan runs (None otherwise)."""

    def __init__(self) -> None:
        self.current: Proxy | None = None


class Proxy:
    """The proxy-mode request handler over one upstream bucket (see the module doc).

    Attributes:
        clock: seconds, monotonic; replaceable (tests drive the TTL with it).
    """

    def __init__(
        self,
        upstream: Upstream,
        store: CacheStore,
        client: Any,
        http: httpx.AsyncClient,
        credentials: Credentials,
        region: str,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.store = store
        self.clock = clock
        self._client = client
        self._http = http
        self._credentials = credentials
        self._region = region
        self._ttl = ttl
        self._entries: dict[str, _Entry] = {}
        # One revalidation per key at a time; others wait for its answer.
        self._locks: dict[str, anyio.Lock] = {}

    # -- dispatch --------------------------------------------------------------------------------

    async def handle(self, ex: Exchange) -> None:
        """Answer one authenticated S3 request. Checkpoint: always."""
        r = ex.route
        if r.bucket and r.bucket != self.upstream.bucket:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist.")
        if r.operation in ("GetObject", "HeadObject"):
            await self._get(ex)
            return
        try:
            await self._forward(ex)
        finally:
            if r.operation in _WRITES:
                await self.drop(r.key)
            elif r.operation == "DeleteObjects":
                for key in list(self._entries):
                    await self.drop(key)

    async def drop(self, key: str) -> None:
        """Forget what the gateway knows of ``key``: its next read asks the upstream.

        The inode of the old version is left to the evictor (its pages are clean), not closed:
        a response streaming it meanwhile finishes with the version it started.
        Checkpoint: always.
        """
        self._entries.pop(key, None)
        await anyio.lowlevel.checkpoint()

    # -- reads through the cache -----------------------------------------------------------------

    async def _get(self, ex: Exchange) -> None:
        key = ex.route.key
        head = ex.scope["method"] == "HEAD"
        if "partNumber" in ex.query:
            raise S3Error("NotImplemented", "GetObject by partNumber is not implemented.")
        for attempt in range(2):
            entry = await self._entry(key, force=attempt > 0)
            validators = [("etag", entry.etag), ("last-modified", http_date(entry.mtime))]
            try:
                check_conditions(ex.headers, entry.meta)
            except S3Error as exc:
                if exc.status != 304:
                    raise
                await ex.respond(304, headers=validators)
                return
            start, end, status = 0, entry.size, 200
            rng = ex.headers.get("range")
            if rng is not None:
                r = parse_range(rng, entry.size)
                if r is not None:
                    (start, end), status = r, 206
            headers = [*validators, ("accept-ranges", "bytes"), *entry.headers]
            if status == 206:
                headers.append(("content-range", f"bytes {start}-{end - 1}/{entry.size}"))
            headers.append(("content-length", str(end - start)))
            async with self.store.open((key, entry.etag), entry.obj) as inode:
                cached = sum(
                    min(c.end, end) - max(c.start, start)
                    for c in inode.cached_ranges()
                    if c.end > start and c.start < end
                )
                ex.cache_result = (
                    "HIT" if cached == end - start else "MISS" if not cached else "PARTIAL"
                )
                headers.append(("x-cache", ex.cache_result))
                first = b""
                if not head and end > start:
                    if ex.cache_result != "HIT":
                        # The whole range is known to be read: its ranged GETs go out now,
                        # several in flight, rather than readahead growing into it over
                        # several round trips.
                        inode.prefetch(start, end - start)
                    try:
                        first = await inode.read(start, min(end - start, _FIRST_READ))
                    except BackingError as exc:
                        from aiocache_inode.backing.s3 import ObjectChangedError

                        if isinstance(exc.__cause__, ObjectChangedError) and attempt == 0:
                            continue  # replaced upstream within the TTL: ask again
                        raise _s3_error(exc) from exc
                await ex.start(status, headers)
                if head or end <= start:
                    await ex.send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                # A range not all cached goes out as copies: inode.read() fills with readahead
                # (several ranged GETs in flight), while the zero-copy path pins one window at a
                # time and fills only that, one round trip to the upstream per window.
                # The first read's bytes go out as they are and the rest follows from where it
                # ended: a re-read from the start would look like a jump back to readahead and
                # end the stream that first read started.
                rest = start + len(first)
                await ex.send(
                    {"type": "http.response.body", "body": first, "more_body": rest < end}
                )
                if rest < end:
                    zero_copy = ex.gw.config.zero_copy if ex.cache_result == "HIT" else False
                    await send_inode_range(
                        ex.send,
                        inode,
                        rest,
                        end,
                        more_body_after=False,
                        zero_copy=zero_copy,
                    )
                return
        raise AssertionError("unreachable")  # pragma: no cover - the second attempt returns

    async def _entry(self, key: str, *, force: bool) -> _Entry:
        """The version to serve for ``key``: trusted within the TTL, else asked for."""
        entry = self._entries.get(key)
        if entry is not None and not force and self.clock() - entry.checked_at < self._ttl:
            return entry
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            entry = self._entries.get(key)
            now = self.clock()
            if entry is not None and not force and now - entry.checked_at < self._ttl:
                return entry  # revalidated by the request we waited for
            params: dict[str, str] = {}
            if entry is not None:
                params["IfNoneMatch"] = entry.etag
            try:
                response = await self._client.head_object(
                    Bucket=self.upstream.bucket, Key=self.upstream.prefix + key, **params
                )
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 304 and entry is not None:
                    entry.checked_at = now
                    return entry
                if status == 404:
                    await self.drop(key)
                    raise S3Error("NoSuchKey", "The specified key does not exist.") from exc
                raise S3Error("ServiceUnavailable", f"Upstream HEAD failed: {exc}") from exc
            except BotoCoreError as exc:
                raise S3Error("ServiceUnavailable", f"Upstream unreachable: {exc}") from exc
            finally:
                if not lock.statistics().tasks_waiting:
                    self._locks.pop(key, None)
            if entry is not None:
                await self.drop(key)
            new = self._new_entry(key, response, now)
            self._entries[key] = new
            return new

    def _new_entry(self, key: str, response: dict[str, Any], now: float) -> _Entry:
        etag = str(response["ETag"])
        if not etag.startswith('"'):
            etag = f'"{etag}"'
        size = int(response["ContentLength"])
        mtime = int(response["LastModified"].timestamp()) * 1_000_000_000
        meta = dict(response.get("Metadata") or {})
        raw = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        headers = [(name, str(raw[name])) for name in _OBJECT_HEADERS if name in raw]
        headers.extend((f"x-amz-meta-{k}", v) for k, v in sorted(meta.items()))
        from aiocache_inode.backing.s3 import S3Object, S3ObjectInfo

        info = S3ObjectInfo(etag, size, mtime, metadata=meta)
        obj = S3Object(self._client, self.upstream.bucket, self.upstream.prefix + key, info)
        return _Entry(etag, size, mtime, headers, obj, now)

    # -- everything else, passed through --------------------------------------------------------

    async def _forward(self, ex: Exchange) -> None:
        r = ex.route
        method: str = ex.scope["method"]
        body = b""
        if method in ("PUT", "POST"):
            declared = ex.headers.get("x-amz-decoded-content-length") or ex.headers.get(
                "content-length", ""
            )
            if declared.isdigit() and int(declared) > MAX_BODY:
                raise S3Error(
                    "EntityTooLarge",
                    f"Proxy mode forwards bodies of at most {MAX_BODY} bytes; use multipart.",
                )
            body = await read_small_body(ex.receive, ex.auth, ex.headers, MAX_BODY)
        up = self.upstream
        path = "/" + urllib.parse.quote(up.bucket)
        if r.key:
            path += "/" + urllib.parse.quote(up.prefix + r.key, safe="/~")
        query = dict(r.query)
        if r.operation in _LISTINGS and up.prefix:
            for name in ("prefix", "start-after", "marker", "key-marker"):
                if name in query or name == "prefix":
                    query[name] = up.prefix + query.get(name, "")
        if query:
            path += "?" + urllib.parse.urlencode(
                sorted(query.items()), quote_via=urllib.parse.quote, safe="~"
            )
        headers = {
            k: v for k, v in ex.headers.items() if k in _FORWARDED or k.startswith("x-amz-meta-")
        }
        if "content-encoding" in headers:
            codings = [
                c for c in headers["content-encoding"].split(",") if c.strip() != "aws-chunked"
            ]
            if codings:
                headers["content-encoding"] = ",".join(codings)
            else:
                del headers["content-encoding"]
        source = ex.headers.get("x-amz-copy-source")
        if source is not None:
            headers["x-amz-copy-source"] = self._copy_source(source)
        url = up.endpoint + path
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        S3SigV4Auth(self._credentials, "s3", self._region).add_auth(request)
        try:
            response = await self._http.request(
                method, url, content=body, headers=dict(request.headers.items())
            )
        except httpx.HTTPError as exc:
            raise S3Error("ServiceUnavailable", f"Upstream unreachable: {exc}") from exc
        content = response.content
        if r.operation in _LISTINGS and up.prefix and response.status_code == 200:
            content = self._strip_prefix(content, url_encoded=query.get("encoding-type") == "url")
        out = [(k, v) for k, v in response.headers.items() if k.lower() not in _DROPPED]
        out.append(("content-length", str(len(content))))
        await ex.start(response.status_code, out)
        await ex.send({"type": "http.response.body", "body": b"" if method == "HEAD" else content})

    def _copy_source(self, value: str) -> str:
        """``/bucket/key[?versionId=...]`` of the served bucket, named as the upstream has it."""
        path, _, version = urllib.parse.unquote(value).lstrip("/").partition("?")
        bucket, _, key = path.partition("/")
        if bucket != self.upstream.bucket or not key:
            raise S3Error("InvalidArgument", "Copy sources must name an object of this bucket.")
        out = "/" + urllib.parse.quote(f"{bucket}/{self.upstream.prefix}{key}", safe="/~")
        return out + ("?" + version if version else "")

    def _strip_prefix(self, content: bytes, *, url_encoded: bool) -> bytes:
        prefix = self.upstream.prefix.encode()

        def strip(m: re.Match[bytes]) -> bytes:
            text = m.group(2)
            if url_encoded:
                text = _drop_encoded_prefix(text, prefix)
            elif text.startswith(prefix):
                text = text[len(prefix) :]
            return b"<%s>%s</%s>" % (m.group(1), text, m.group(1))

        return _KEY_ELEMENTS.sub(strip, content)


def _drop_encoded_prefix(text: bytes, prefix: bytes) -> bytes:
    """``text`` (percent-encoded) without a leading ``prefix``; unchanged if it has none.

    With ``encoding-type=url`` (boto3 asks for it in every listing) the store percent-encodes
    the names it lists, and stores differ in which characters they encode: Ceph RGW encodes
    ``/`` as ``%2F``, moto leaves it. So the prefix is matched on the decoded bytes, and only its
    own characters are cut: the rest is passed on exactly as the store encoded it.
    """
    i, decoded = 0, bytearray()
    while len(decoded) < len(prefix) and i < len(text):
        if text[i : i + 1] == b"%":
            digits = text[i + 1 : i + 3]
            if not _HEX2.fullmatch(digits):
                return text  # not percent-encoding after all: not ours to touch
            decoded.append(int(digits, 16))
            i += 3
        else:
            decoded += text[i : i + 1]
            i += 1
    return text[i:] if decoded == prefix else text


def _s3_error(exc: BackingError) -> S3Error:
    from aiocache_inode.backing.s3 import S3Error as UpstreamError

    cause = exc.__cause__
    if isinstance(cause, UpstreamError) and cause.status == 404:
        return S3Error("NoSuchKey", "The specified key does not exist.")
    return S3Error("ServiceUnavailable", f"Upstream read failed: {exc}")


@contextlib.asynccontextmanager
async def open_proxy(
    config: GatewayConfig, store: CacheStore, environ: Mapping[str, str] | None = None
) -> AsyncIterator[Proxy]:
    """The proxy for ``config.backend``, with its upstream clients; closed on exit.

    Raises:
        ValueError: the backend is not an s3:// URL, or no upstream credentials are set.
    """
    # The s3 extra (aiobotocore, most of a second to import) only when proxy mode is used.
    from aiocache_inode.backing.s3 import S3Config, open_client

    env = os.environ if environ is None else environ
    upstream = parse_backend(config.backend)
    key, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not key or not secret:
        raise ValueError("proxy mode needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    token = env.get("AWS_SESSION_TOKEN") or None
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    attempts = env.get("AWS_MAX_ATTEMPTS", "5")
    if not attempts.isdigit() or int(attempts) < 1:
        raise ValueError(f"AWS_MAX_ATTEMPTS={attempts!r}: expected a whole number >= 1")
    s3 = S3Config(
        endpoint_url=upstream.endpoint,
        access_key_id=key,
        secret_access_key=secret,
        session_token=token,
        region_name=region,
        max_attempts=int(attempts),
    )
    async with open_client(s3) as client, httpx.AsyncClient(timeout=60.0) as http:
        yield Proxy(
            upstream,
            store,
            client,
            http,
            Credentials(key, secret, token),
            region,
            config.revalidate,
        )
