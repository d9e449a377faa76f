"""Bucket operations and listings.

ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation, ListObjects (v1) and
ListObjectsV2.

Listings echo what S3 echoes (Prefix, Delimiter, MaxKeys, Marker / ContinuationToken /
StartAfter, EncodingType) and set IsTruncated exactly: storage reads one entry past the page to
know. A continuation token is opaque to clients: ``1`` or ``0`` (resume at, or after) and the
key in URL-safe base64.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

from .bodies import read_small_body
from .errors import S3Error
from .exchange import quote_etag
from .storage import key_successor
from .xml import HEAD, NS, document, elem, iso8601, parse_location, text

if TYPE_CHECKING:
    from collections.abc import Callable

    from .exchange import Exchange
    from .storage import ListPage, ObjectMeta

__all__ = [
    "create_bucket",
    "decode_token",
    "delete_bucket",
    "encode_token",
    "get_bucket_location",
    "head_bucket",
    "list_buckets",
    "list_objects_v1",
    "list_objects_v2",
    "owner_xml",
]

OWNER_ID: Final = "aiocache0gateway0owner0id"
MAX_KEYS: Final = 1000


def owner_xml(tag: str = "Owner") -> str:
    """The one owner every bucket and object has."""
    return f"<{tag}><ID>{OWNER_ID}</ID><DisplayName>aiocache</DisplayName></{tag}>"


async def list_buckets(ex: Exchange) -> None:
    """ListBuckets. Checkpoint: always. Cancellation: the response may be incomplete."""
    rows = ex.gw.storage.list_buckets()
    inner = [owner_xml(), "<Buckets>"]
    for name, created in rows:
        inner.append(
            f"<Bucket>{elem('Name', name)}{elem('CreationDate', iso8601(created))}</Bucket>"
        )
    inner.append("</Buckets>")
    await ex.respond(200, document("ListAllMyBucketsResult", inner))


async def create_bucket(ex: Exchange) -> None:
    """CreateBucket (a LocationConstraint body is accepted and ignored).

    Checkpoint: always. Cancellation: the bucket may have been created.
    """
    bucket = ex.route.bucket
    body = await read_small_body(ex.receive, ex.auth, ex.headers, 64 << 10)
    parse_location(body)
    await ex.gw.storage.create_bucket(bucket)
    await ex.respond(200, headers=[("location", f"/{bucket}")])


async def head_bucket(ex: Exchange) -> None:
    """HeadBucket. Checkpoint: always."""
    ex.gw.storage.require_bucket(ex.route.bucket)
    await ex.respond(200, headers=[("x-amz-bucket-region", ex.gw.config.region)])


async def delete_bucket(ex: Exchange) -> None:
    """DeleteBucket (BucketNotEmpty unless empty). Checkpoint: always."""
    await ex.gw.storage.delete_bucket(ex.route.bucket)
    await ex.respond(204)


async def get_bucket_location(ex: Exchange) -> None:
    """GetBucketLocation: empty for us-east-1, as S3 answers. Checkpoint: always."""
    ex.gw.storage.require_bucket(ex.route.bucket)
    region = ex.gw.config.region
    value = "" if region == "us-east-1" else region
    body = f'{HEAD}<LocationConstraint xmlns="{NS}">{text(value)}</LocationConstraint>'
    await ex.respond(200, body.encode())


def _max_keys(query: dict[str, str], name: str = "max-keys") -> int:
    raw = query.get(name)
    if raw is None:
        return MAX_KEYS
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise S3Error(
            "InvalidArgument", f"Provided {name} not an integer or within integer range",
            ArgumentName=name, ArgumentValue=raw,
        )  # fmt: skip
    return min(n, MAX_KEYS)


def _encoder(query: dict[str, str]) -> tuple[str | None, Callable[[str], str]]:
    enc = query.get("encoding-type")
    if enc is None:
        return None, _same
    if enc.lower() != "url":
        raise S3Error(
            "InvalidArgument", "Invalid Encoding Method specified in Request",
            ArgumentName="encoding-type", ArgumentValue=enc,
        )  # fmt: skip
    return "url", lambda s: quote(s, safe="/")


def _same(s: str) -> str:
    return s


def encode_token(start: tuple[str, bool]) -> str:
    """The continuation token for resuming at start (key, inclusive)."""
    key, inclusive = start
    return ("1" if inclusive else "0") + base64.urlsafe_b64encode(key.encode()).decode()


def decode_token(token: str) -> tuple[str, bool]:
    """Where a continuation token resumes.

    Raises:
        S3Error: InvalidArgument for a token this gateway did not make.
    """
    try:
        if token[:1] not in ("0", "1"):
            raise ValueError(token)
        key = base64.urlsafe_b64decode(token[1:].encode("ascii")).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeError):
        raise S3Error(
            "InvalidArgument", "The continuation token provided is incorrect",
            ArgumentName="continuation-token",
        ) from None  # fmt: skip
    return key, token[0] == "1"


def _contents(obj: ObjectMeta, enc: Callable[[str], str], owner: bool) -> str:
    parts = [
        "<Contents>",
        elem("Key", enc(obj.key)),
        elem("LastModified", iso8601(obj.last_modified_ns)),
        elem("ETag", quote_etag(obj.etag)),
    ]
    parts.extend(elem("ChecksumAlgorithm", a.upper()) for a in obj.checksums)
    if obj.checksum_type:
        parts.append(elem("ChecksumType", obj.checksum_type))
    parts += [elem("Size", obj.size), elem("StorageClass", "STANDARD")]
    if owner:
        parts.append(owner_xml())
    parts.append("</Contents>")
    return "".join(parts)


def _prefixes(page: ListPage, enc: Callable[[str], str]) -> list[str]:
    return [
        f"<CommonPrefixes>{elem('Prefix', enc(p))}</CommonPrefixes>" for p in page.common_prefixes
    ]


async def list_objects_v2(ex: Exchange) -> None:
    """ListObjectsV2. Checkpoint: always."""
    q = ex.query
    bucket = ex.route.bucket
    prefix = q.get("prefix", "")
    delimiter = q.get("delimiter", "")
    max_keys = _max_keys(q)
    enc_name, enc = _encoder(q)
    token = q.get("continuation-token")
    start_after = q.get("start-after")
    start: tuple[str, bool] | None = None
    if token is not None:
        start = decode_token(token)
    elif start_after:
        start = (start_after, False)
    page = ex.gw.storage.list_objects(
        bucket, prefix=prefix, delimiter=delimiter, start=start, max_keys=max_keys
    )
    fetch_owner = q.get("fetch-owner", "").lower() == "true"
    inner = [elem("Name", bucket), elem("Prefix", enc(prefix))]
    if delimiter:
        inner.append(elem("Delimiter", enc(delimiter)))
    inner += [
        elem("MaxKeys", max_keys),
        elem("KeyCount", len(page.objects) + len(page.common_prefixes)),
        elem("IsTruncated", page.truncated),
    ]
    if token is not None:
        inner.append(elem("ContinuationToken", token))
    if page.truncated and page.next_start is not None:
        inner.append(elem("NextContinuationToken", encode_token(page.next_start)))
    if start_after is not None:
        inner.append(elem("StartAfter", enc(start_after)))
    if enc_name:
        inner.append(elem("EncodingType", enc_name))
    inner += [_contents(o, enc, fetch_owner) for o in page.objects]
    inner += _prefixes(page, enc)
    await ex.respond(200, document("ListBucketResult", inner))


async def list_objects_v1(ex: Exchange) -> None:
    """ListObjects (v1): Marker, and NextMarker when a delimiter is given. Checkpoint: always."""
    q = ex.query
    bucket = ex.route.bucket
    prefix = q.get("prefix", "")
    delimiter = q.get("delimiter", "")
    max_keys = _max_keys(q)
    enc_name, enc = _encoder(q)
    marker = q.get("marker", "")
    start: tuple[str, bool] | None = None
    if marker:
        start = (marker, False)
        if delimiter and marker.startswith(prefix) and marker.endswith(delimiter):
            # A NextMarker that is a common prefix: resume after everything under it.
            nxt = key_successor(marker)
            start = (nxt, True) if nxt is not None else (marker, False)
    page = ex.gw.storage.list_objects(
        bucket, prefix=prefix, delimiter=delimiter, start=start, max_keys=max_keys
    )
    inner = [elem("Name", bucket), elem("Prefix", enc(prefix)), elem("Marker", enc(marker))]
    if page.truncated and delimiter and page.last is not None:
        inner.append(elem("NextMarker", enc(page.last)))
    inner.append(elem("MaxKeys", max_keys))
    if delimiter:
        inner.append(elem("Delimiter", enc(delimiter)))
    inner.append(elem("IsTruncated", page.truncated))
    if enc_name:
        inner.append(elem("EncodingType", enc_name))
    inner += [_contents(o, enc, True) for o in page.objects]
    inner += _prefixes(page, enc)
    await ex.respond(200, document("ListBucketResult", inner))
