"""Object operations: Get/Head (range, conditionals, overrides), Put, Delete, DeleteObjects, Copy.

A GET looks the object up (a synchronous indexed read), pins its bodies in storage so an
overwrite or delete cannot remove them mid-stream, answers the conditionals, then streams the
requested range segment by segment, each from its body's caching inode with
:func:`aiocache_inode.asgi.send_inode_range` (pinned pool views, sent without copying), watching
for ``http.disconnect``. ``x-cache`` says whether the range was already cached when the request
came: HIT (all of it), MISS (none) or PARTIAL.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote

from aiocache_inode.asgi import COPY_THRESHOLD, run_until_disconnect, send_inode_range

from .bodies import read_small_body, receive_body
from .errors import S3Error
from .exchange import http_date, parse_http_date, quote_etag
from .routing import validate_bucket_name, validate_key
from .storage import HEADER_COLUMNS, ObjectMeta, Segment
from .xml import MAX_XML_BYTES, document, elem, iso8601, parse_delete

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aiocache_inode import CachingInode

    from .exchange import Exchange

__all__ = [
    "copy_object",
    "delete_object",
    "delete_objects",
    "get_object",
    "object_headers",
    "put_object",
    "read_range",
    "slice_segments",
]

_RANGE: Final = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")
_META_PREFIX: Final = "x-amz-meta-"
MAX_METADATA_BYTES: Final = 2048  # S3's limit on user metadata (names and values)
_OVERRIDES: Final = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}
DEFAULT_CONTENT_TYPE: Final = "binary/octet-stream"


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """The byte range [start, end) a Range header asks of an object of size bytes.

    ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n``. A header S3 would ignore (malformed, several
    ranges, a reversed range) gives None: the whole object, 200.

    Raises:
        S3Error: InvalidRange (416) when the range starts at or past the end, or asks for the
            last 0 bytes.
    """
    m = _RANGE.fullmatch(value)
    if m is None:
        return None
    a, b = m.group(1), m.group(2)
    if not a and not b:
        return None
    if not a:
        n = int(b)
        if n == 0:
            raise S3Error("InvalidRange", RangeRequested=value, ActualObjectSize=str(size))
        return max(0, size - n), size
    start = int(a)
    end = size if not b else int(b) + 1
    if b and end <= start:
        return None
    if start >= size:
        raise S3Error("InvalidRange", RangeRequested=value, ActualObjectSize=str(size))
    return start, min(end, size)


def _etag_matches(header: str, etag: str) -> bool:
    for item in header.split(","):
        tag = item.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == etag:
            return True
    return False


def check_conditions(headers: Mapping[str, str], meta: ObjectMeta, prefix: str = "if-") -> None:
    """Check RFC 7232 preconditions as S3 applies them.

    If-Match wins over If-Unmodified-Since, If-None-Match over If-Modified-Since.

    Args:
        headers: request headers.
        meta: the object.
        prefix: ``if-`` for GET/HEAD, ``x-amz-copy-source-if-`` for copies (both give 412).

    Raises:
        S3Error: PreconditionFailed (412), NotModified (304, GET/HEAD only).
    """
    copy = prefix != "if-"
    modified = meta.last_modified_ns // 1_000_000_000
    if_match = headers.get(prefix + "match")
    if_none = headers.get(prefix + "none-match")
    if if_match is not None and not _etag_matches(if_match, meta.etag):
        raise S3Error("PreconditionFailed", Condition=prefix.title() + "Match")
    if if_match is None:
        since = headers.get(prefix + "unmodified-since")
        t = parse_http_date(since) if since is not None else None
        if t is not None and modified > t:
            raise S3Error("PreconditionFailed", Condition=prefix.title() + "Unmodified-Since")
    if if_none is not None and _etag_matches(if_none, meta.etag):
        if copy:
            raise S3Error("PreconditionFailed", Condition=prefix.title() + "None-Match")
        raise S3Error("NotModified")
    if if_none is None:
        since = headers.get(prefix + "modified-since")
        t = parse_http_date(since) if since is not None else None
        if t is not None and modified <= t and t <= time.time():
            if copy:
                raise S3Error("PreconditionFailed", Condition=prefix.title() + "Modified-Since")
            raise S3Error("NotModified")


def object_headers(meta: ObjectMeta) -> list[tuple[str, str]]:
    """The headers an object's GET and HEAD carry (not length, range or cache state)."""
    out = [
        ("etag", quote_etag(meta.etag)),
        ("last-modified", http_date(meta.last_modified_ns)),
        ("accept-ranges", "bytes"),
    ]
    h = meta.headers
    out.append(("content-type", h.get("content-type", DEFAULT_CONTENT_TYPE)))
    out.extend((name, h[name]) for _c, name in HEADER_COLUMNS[1:] if name in h)
    out.extend((_META_PREFIX + k, v) for k, v in meta.user_metadata.items())
    if meta.parts_count:
        out.append(("x-amz-mp-parts-count", str(meta.parts_count)))
    return out


def slice_segments(segments: tuple[Segment, ...], start: int, end: int) -> list[Segment]:
    """The pieces of segments that hold object bytes [start, end), in order."""
    out: list[Segment] = []
    pos = 0
    for s in segments:
        s_end = pos + s.length
        lo, hi = max(start, pos), min(end, s_end)
        if lo < hi:
            out.append(Segment(s.body_id, s.offset + (lo - pos), hi - lo))
        pos = s_end
        if pos >= end:
            break
    return out


def _cache_state(ex: Exchange, pieces: list[Segment]) -> str:
    store = ex.gw.store
    full = 0
    some = 0
    for p in pieces:
        if p.body_id not in store:
            continue
        inode = store.get(p.body_id)
        cached = inode.cached_bytes
        if cached >= inode.size:
            full += 1
        elif cached:
            some += 1
    if full == len(pieces):
        return "HIT"
    if full or some:
        return "PARTIAL"
    return "MISS"


def _version(ex: Exchange) -> None:
    version = ex.query.get("versionId")
    if version is not None and version != "null":
        raise S3Error("NoSuchVersion", Key=ex.route.key, VersionId=version)


async def get_object(ex: Exchange) -> None:
    """GetObject and HeadObject.

    Checkpoint: always.
    Cancellation: the response stops; pins are dropped; nothing is left held.
    """
    _version(ex)
    storage = ex.gw.storage
    meta = storage.get_object(ex.route.bucket, ex.route.key)
    head = ex.scope["method"] == "HEAD"
    try:
        check_conditions(ex.headers, meta)
    except S3Error as exc:
        if exc.status != 304:
            raise
        # 304 carries the validators and no body.
        validators = [
            ("etag", quote_etag(meta.etag)),
            ("last-modified", http_date(meta.last_modified_ns)),
        ]
        await ex.respond(304, headers=validators)
        return
    if "partNumber" in ex.query:
        raise S3Error("NotImplemented", "GetObject by partNumber is not implemented.")
    size = meta.size
    status = 200
    start, end = 0, size
    rng = ex.headers.get("range")
    if rng is not None:
        r = parse_range(rng, size)
        if r is not None:
            start, end = r
            status = 206
    headers = object_headers(meta)
    for q, name in _OVERRIDES.items():
        if q in ex.query:
            headers = [(k, v) for k, v in headers if k != name]
            headers.append((name, ex.query[q]))
    if ex.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED" and status == 200:
        headers.extend((f"x-amz-checksum-{a}", v) for a, v in meta.checksums.items())
        if meta.checksum_type:
            headers.append(("x-amz-checksum-type", meta.checksum_type))
    if status == 206:
        headers.append(("content-range", f"bytes {start}-{end - 1}/{size}"))
    headers.append(("content-length", str(end - start)))
    pieces = slice_segments(meta.segments, start, end)
    body_ids = meta.body_ids
    storage.pin(body_ids)
    try:
        ex.cache_result = _cache_state(ex, pieces)
        headers.append(("x-cache", ex.cache_result))
        if head or not pieces:
            await ex.start(status, headers)
            await ex.send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        # The first body is opened before the status goes out, so a failure to open it is
        # still answered with an S3 error rather than a cut-off 200.
        async with ex.gw.bodies.open(pieces[0].body_id) as first:
            await ex.start(status, headers)
            if end - start <= COPY_THRESHOLD:
                # A small body goes out as a few copies, and a send waiting for a client that
                # left returns (the server resumes writing on connection loss): a disconnect
                # watcher's task and cancel scope would cost more than the body itself.
                await _stream(ex, pieces, first)
            else:
                await run_until_disconnect(ex.receive, _stream, ex, pieces, first)
    finally:
        storage.unpin(body_ids)


async def _stream(ex: Exchange, pieces: list[Segment], first: CachingInode) -> None:
    bodies = ex.gw.bodies
    zero_copy = ex.gw.config.zero_copy
    last = len(pieces) - 1
    for i, p in enumerate(pieces):
        async with contextlib.AsyncExitStack() as stack:
            inode = first if i == 0 else await stack.enter_async_context(bodies.open(p.body_id))
            zero_copy = await send_inode_range(
                ex.send,
                inode,
                p.offset,
                p.offset + p.length,
                more_body_after=i != last,
                zero_copy=zero_copy,
            )


async def read_range(ex: Exchange, pieces: list[Segment]) -> bytes:
    """The bytes of pieces, read through the cache (for copies that need them).

    Checkpoint: always.
    """
    out = bytearray()
    bodies = ex.gw.bodies
    for p in pieces:
        async with bodies.open(p.body_id) as inode:
            data = await inode.read(p.offset, p.length)
        if len(data) != p.length:
            raise S3Error("InternalError", "A body file is shorter than its metadata says.")
        out += data
    return bytes(out)


def request_metadata(headers: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The standard headers and user metadata a PUT, copy (REPLACE) or multipart create stores.

    ``aws-chunked`` is removed from Content-Encoding: it describes the transfer, not the object.

    Raises:
        S3Error: MetadataTooLarge over 2 KiB of user metadata.
    """
    stored: dict[str, str] = {}
    for _c, name in HEADER_COLUMNS:
        value = headers.get(name)
        if value is None:
            continue
        if name == "content-encoding":
            kept = [e.strip() for e in value.split(",") if e.strip().lower() != "aws-chunked"]
            if not kept:
                continue
            value = ",".join(kept)
        stored[name] = value
    user = {k[len(_META_PREFIX) :]: v for k, v in headers.items() if k.startswith(_META_PREFIX)}
    if sum(len(k) + len(v) for k, v in user.items()) > MAX_METADATA_BYTES:
        raise S3Error(
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size.",
            MaxSizeAllowed=str(MAX_METADATA_BYTES),
        )
    return stored, user


def declared_checksums(headers: Mapping[str, str]) -> set[str]:
    """The flexible checksum algorithms a request declared (header, trailer or SDK header)."""
    out: set[str] = set()
    for name in headers:
        if name.startswith("x-amz-checksum-") and name not in (
            "x-amz-checksum-type", "x-amz-checksum-mode", "x-amz-checksum-algorithm",
        ):  # fmt: skip
            out.add(name[len("x-amz-checksum-") :])
    for item in headers.get("x-amz-trailer", "").split(","):
        item = item.strip().lower()
        if item.startswith("x-amz-checksum-"):
            out.add(item[len("x-amz-checksum-") :])
    sdk = headers.get("x-amz-sdk-checksum-algorithm")
    if sdk:
        out.add(sdk.strip().lower())
    return out


async def put_object(ex: Exchange) -> None:
    """PutObject: the body through the cache, durable before the 200.

    Checkpoint: always.
    Cancellation: before the metadata commit nothing remains; after, the object exists.
    """
    gw = ex.gw
    bucket, key = ex.route.bucket, ex.route.key
    gw.storage.require_bucket(bucket)
    stored, user = request_metadata(ex.headers)
    got = await receive_body(ex.receive, ex.auth, ex.headers, gw.store, gw.storage, gw.bodies)
    declared = declared_checksums(ex.headers)
    checksums = {a: got.digests.b64(a) for a in sorted(declared) if a in got.digests.want}
    meta = ObjectMeta(
        bucket=bucket,
        key=key,
        size=got.size,
        etag=got.digests.md5_hex(),
        last_modified_ns=time.time_ns(),
        headers=stored,
        user_metadata=user,
        checksums=checksums,
        checksum_type="FULL_OBJECT" if checksums else None,
        segments=(Segment(got.body_id, 0, got.size),) if got.size else (),
    )
    await gw.storage.put_object(meta, new_bodies=[got.body_id])
    if not got.size:
        # An empty object needs no body file.
        await gw.bodies.free(got.body_id)
    headers = [("etag", quote_etag(meta.etag))]
    headers.extend((f"x-amz-checksum-{a}", v) for a, v in checksums.items())
    await ex.respond(200, headers=headers)


async def delete_object(ex: Exchange) -> None:
    """DeleteObject (204 whether or not it existed). Checkpoint: always."""
    _version(ex)
    await ex.gw.storage.delete_object(ex.route.bucket, ex.route.key)
    await ex.respond(204)


async def delete_objects(ex: Exchange) -> None:
    """DeleteObjects, Quiet mode included. Checkpoint: always."""
    bucket = ex.route.bucket
    ex.gw.storage.require_bucket(bucket)
    body = await read_small_body(ex.receive, ex.auth, ex.headers, MAX_XML_BYTES)
    keys, quiet = parse_delete(body)
    valid: list[str] = []
    errors: list[str] = []
    for k in keys:
        try:
            validate_key(k)
        except S3Error as exc:
            fields = elem("Key", k) + elem("Code", exc.code) + elem("Message", exc.message)
            errors.append(f"<Error>{fields}</Error>")
            continue
        valid.append(k)
    await ex.gw.storage.delete_objects(bucket, valid)
    inner = [] if quiet else [f"<Deleted>{elem('Key', k)}</Deleted>" for k in valid]
    inner += errors
    await ex.respond(200, document("DeleteResult", inner))


def parse_copy_source(value: str) -> tuple[str, str]:
    """Bucket and key of an ``x-amz-copy-source`` (``/bucket/key`` or ``bucket/key``, encoded).

    Raises:
        S3Error: InvalidArgument for a malformed source; NoSuchVersion for a versionId other
            than ``null``.
    """
    src, _, query = value.partition("?")
    if query:
        for item in query.split("&"):
            name, _, v = item.partition("=")
            if name == "versionId" and v != "null":
                raise S3Error("NoSuchVersion", VersionId=v)
    try:
        text = unquote(src, errors="strict")
    except UnicodeDecodeError:
        text = ""
    bucket, _, key = text.lstrip("/").partition("/")
    if not bucket or not key:
        raise S3Error(
            "InvalidArgument", "Copy Source must mention the source bucket and key: "
            "sourcebucket/sourcekey", ArgumentName="x-amz-copy-source", ArgumentValue=value,
        )  # fmt: skip
    validate_bucket_name(bucket)
    validate_key(key)
    return bucket, key


async def copy_object(ex: Exchange) -> None:
    """CopyObject by reference: the new object shares the source's bodies.

    Metadata directive COPY (default) keeps the source's headers and metadata, REPLACE takes
    the request's; a copy onto itself must REPLACE. The ``x-amz-copy-source-if-*`` conditions
    are checked in the same transaction as the copy.

    Checkpoint: always.
    """
    gw = ex.gw
    bucket, key = ex.route.bucket, ex.route.key
    src_bucket, src_key = parse_copy_source(ex.headers["x-amz-copy-source"])
    directive = ex.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.",
                      ArgumentName="x-amz-metadata-directive", ArgumentValue=directive)  # fmt: skip
    if (src_bucket, src_key) == (bucket, key) and directive != "REPLACE":
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata, storage class, website redirect location "
            "or encryption attributes.",
        )
    stored, user = request_metadata(ex.headers)
    await read_small_body(ex.receive, ex.auth, ex.headers, 0)
    now = time.time_ns()

    def check(src: ObjectMeta) -> None:
        check_conditions(ex.headers, src, "x-amz-copy-source-if-")

    def build(src: ObjectMeta) -> ObjectMeta:
        return ObjectMeta(
            bucket=bucket,
            key=key,
            size=src.size,
            etag=src.etag,
            last_modified_ns=now,
            headers=stored if directive == "REPLACE" else dict(src.headers),
            user_metadata=user if directive == "REPLACE" else dict(src.user_metadata),
            checksums=dict(src.checksums),
            checksum_type=src.checksum_type,
            parts_count=src.parts_count,
            segments=src.segments,
        )

    gw.storage.require_bucket(bucket)
    meta = await gw.storage.copy_object(src_bucket, src_key, build, check)
    inner = [
        elem("LastModified", iso8601(meta.last_modified_ns)),
        elem("ETag", quote_etag(meta.etag)),
    ]
    inner.extend(elem(f"Checksum{a.upper()}", v) for a, v in meta.checksums.items())
    await ex.respond(200, document("CopyObjectResult", inner))


def md5_etag(data: bytes) -> str:
    """The hex MD5 of data (a single-part ETag)."""
    return hashlib.md5(data).hexdigest()
