"""Multipart uploads: create, upload part, upload part copy, complete, abort, list parts/uploads.

Parts are body files like any PUT body and survive restarts (their metadata is committed before
the part's 200). CompleteMultipartUpload stitches by reference: the object's segments are the
parts' segments in order, so completing costs a metadata transaction whatever the size. The
ETag is S3's: the hex MD5 of the concatenated binary part MD5s, then ``-N``. With a checksum
algorithm named at creation, each part's checksum is computed as it arrives, and the object's is
COMPOSITE (the checksum of the part checksums, ``-N``) or, for a CRC with
``x-amz-checksum-type: FULL_OBJECT``, the whole-object CRC combined from the parts' CRCs.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import TYPE_CHECKING, Final

from .bodies import read_small_body, receive_body
from .buckets import owner_xml
from .checksums import ALGORITHMS, CRC_ALGORITHMS, Digests, composite_checksum, full_object_crc
from .errors import S3Error
from .exchange import quote_etag
from .objects import parse_copy_source, read_range, request_metadata, slice_segments
from .storage import MAX_PARTS, ObjectMeta, PartMeta, Segment, UploadMeta
from .xml import MAX_XML_BYTES, document, elem, iso8601, parse_complete

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = [
    "abort_upload",
    "complete_upload",
    "create_upload",
    "list_parts",
    "list_uploads",
    "multipart_etag",
    "upload_part",
    "upload_part_copy",
]

MAX_PART_SIZE: Final = 5 << 30


def multipart_etag(part_etags: list[str]) -> str:
    """S3's multipart ETag: hex MD5 of the concatenated binary part MD5s, ``-N``."""
    md5 = hashlib.md5(b"".join(bytes.fromhex(e) for e in part_etags))
    return f"{md5.hexdigest()}-{len(part_etags)}"


def _part_number(ex: Exchange) -> int:
    raw = ex.query.get("partNumber", "")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_PARTS:
        raise S3Error(
            "InvalidArgument",
            "Part number must be an integer between 1 and 10000, inclusive",
            ArgumentName="partNumber",
            ArgumentValue=raw,
        )
    return n


def _upload(ex: Exchange) -> UploadMeta:
    return ex.gw.storage.get_upload(ex.query.get("uploadId", ""), ex.route.bucket, ex.route.key)


async def create_upload(ex: Exchange) -> None:
    """CreateMultipartUpload. Checkpoint: always."""
    gw = ex.gw
    bucket, key = ex.route.bucket, ex.route.key
    gw.storage.require_bucket(bucket)
    stored, user = request_metadata(ex.headers)
    algorithm = ex.headers.get("x-amz-checksum-algorithm")
    if algorithm is not None:
        algorithm = algorithm.strip().lower()
        if algorithm not in ALGORITHMS:
            raise S3Error("InvalidRequest", "Checksum algorithm provided is unsupported.")
    ctype = ex.headers.get("x-amz-checksum-type")
    if ctype is not None:
        ctype = ctype.strip().upper()
        if ctype not in ("COMPOSITE", "FULL_OBJECT") or algorithm is None:
            raise S3Error("InvalidRequest", "The x-amz-checksum-type header is invalid here.")
        if ctype == "FULL_OBJECT" and algorithm not in CRC_ALGORITHMS:
            raise S3Error("InvalidRequest", "FULL_OBJECT checksums need a CRC algorithm.")
    elif algorithm is not None:
        ctype = "COMPOSITE"
    await read_small_body(ex.receive, ex.auth, ex.headers, 0)
    upload = UploadMeta(
        upload_id=secrets.token_urlsafe(24),
        bucket=bucket,
        key=key,
        initiated_ns=time.time_ns(),
        headers=stored,
        user_metadata=user,
        checksum_algorithm=algorithm,
        checksum_type=ctype,
    )
    await gw.storage.create_upload(upload)
    inner = [elem("Bucket", bucket), elem("Key", key), elem("UploadId", upload.upload_id)]
    headers = []
    if algorithm:
        headers.append(("x-amz-checksum-algorithm", algorithm.upper()))
        headers.append(("x-amz-checksum-type", ctype or "COMPOSITE"))
    await ex.respond(200, document("InitiateMultipartUploadResult", inner), headers)


async def upload_part(ex: Exchange) -> None:
    """UploadPart: the body through the cache, durable before the 200. Checkpoint: always."""
    gw = ex.gw
    number = _part_number(ex)
    upload = _upload(ex)
    extra = [upload.checksum_algorithm] if upload.checksum_algorithm else []
    got = await receive_body(
        ex.receive, ex.auth, ex.headers, gw.store, gw.storage, gw.bodies, extra_checksums=extra
    )
    checksums = {a: got.digests.b64(a) for a in sorted(got.digests.want) if a in ALGORITHMS}
    if upload.checksum_algorithm is None:
        checksums = {}
    part = PartMeta(
        part_number=number,
        size=got.size,
        etag=got.digests.md5_hex(),
        last_modified_ns=time.time_ns(),
        checksums=checksums,
        segments=(Segment(got.body_id, 0, got.size),) if got.size else (),
    )
    await gw.storage.put_part(upload.upload_id, part, new_bodies=[got.body_id])
    if not got.size:
        await gw.bodies.free(got.body_id)
    headers = [("etag", quote_etag(part.etag))]
    headers.extend((f"x-amz-checksum-{a}", v) for a, v in checksums.items())
    await ex.respond(200, headers=headers)


def _copy_range(value: str, size: int) -> tuple[int, int]:
    v = value.strip()
    if not v.startswith("bytes="):
        raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form "
                      "bytes=first-last where first and last are the zero-based offsets of the "
                      "first and last bytes to copy", ArgumentName="x-amz-copy-source-range",
                      ArgumentValue=value)  # fmt: skip
    a, _, b = v[6:].partition("-")
    try:
        start, last = int(a), int(b)
    except ValueError:
        raise S3Error(
            "InvalidArgument", "Invalid x-amz-copy-source-range.",
            ArgumentName="x-amz-copy-source-range", ArgumentValue=value,
        ) from None  # fmt: skip
    if start < 0 or last < start or last >= size:
        raise S3Error("InvalidRange", RangeRequested=value, ActualObjectSize=str(size))
    return start, last + 1


async def upload_part_copy(ex: Exchange) -> None:
    """UploadPartCopy (optionally a byte range of the source), by reference.

    The part's segments point into the source's bodies; its bytes are read once (through the
    cache) for the part's MD5 and checksum.

    Checkpoint: always.
    """
    from .objects import check_conditions

    gw = ex.gw
    number = _part_number(ex)
    upload = _upload(ex)
    src_bucket, src_key = parse_copy_source(ex.headers["x-amz-copy-source"])
    src = gw.storage.get_object(src_bucket, src_key)
    check_conditions(ex.headers, src, "x-amz-copy-source-if-")
    rng = ex.headers.get("x-amz-copy-source-range")
    start, end = (0, src.size) if rng is None else _copy_range(rng, src.size)
    if end - start > MAX_PART_SIZE:
        raise S3Error("EntityTooLarge", MaxSizeAllowed=str(MAX_PART_SIZE))
    await read_small_body(ex.receive, ex.auth, ex.headers, 0)
    pieces = slice_segments(src.segments, start, end)
    body_ids = src.body_ids
    gw.storage.pin(body_ids)
    try:
        data = await read_range(ex, pieces)
        digests = Digests([upload.checksum_algorithm] if upload.checksum_algorithm else [])
        digests.update(data)
        del data
        part = PartMeta(
            part_number=number,
            size=end - start,
            etag=digests.md5_hex(),
            last_modified_ns=time.time_ns(),
            checksums=digests.checksums(),
            segments=tuple(pieces),
        )
        await gw.storage.put_part(upload.upload_id, part)
    finally:
        gw.storage.unpin(body_ids)
    inner = [
        elem("LastModified", iso8601(part.last_modified_ns)),
        elem("ETag", quote_etag(part.etag)),
    ]
    inner.extend(elem(f"Checksum{a.upper()}", v) for a, v in part.checksums.items())
    await ex.respond(200, document("CopyPartResult", inner))


def _object_checksums(upload: UploadMeta, parts: list[PartMeta]) -> dict[str, str]:
    algorithm = upload.checksum_algorithm
    if algorithm is None:
        return {}
    if any(algorithm not in p.checksums for p in parts):
        raise S3Error("InvalidRequest", f"A part has no {algorithm.upper()} checksum.")
    digests = [base64.b64decode(p.checksums[algorithm]) for p in parts]
    if upload.checksum_type == "FULL_OBJECT":
        crcs = [(int.from_bytes(d, "big"), p.size) for d, p in zip(digests, parts, strict=True)]
        return {algorithm: full_object_crc(algorithm, crcs)}
    return {algorithm: composite_checksum(algorithm, digests)}


async def complete_upload(ex: Exchange) -> None:
    """CompleteMultipartUpload: validate, stitch by reference, answer the ETag.

    Checkpoint: always.
    """
    gw = ex.gw
    bucket, key = ex.route.bucket, ex.route.key
    upload_id = ex.query.get("uploadId", "")
    gw.storage.get_upload(upload_id, bucket, key)
    body = await read_small_body(ex.receive, ex.auth, ex.headers, MAX_XML_BYTES)
    requested = parse_complete(body)
    now = time.time_ns()

    def build(upload: UploadMeta, parts: list[PartMeta]) -> ObjectMeta:
        checksums = _object_checksums(upload, parts)
        return ObjectMeta(
            bucket=bucket,
            key=key,
            size=sum(p.size for p in parts),
            etag=multipart_etag([p.etag for p in parts]),
            last_modified_ns=now,
            headers=dict(upload.headers),
            user_metadata=dict(upload.user_metadata),
            checksums=checksums,
            checksum_type=upload.checksum_type if checksums else None,
            parts_count=len(parts),
            segments=tuple(s for p in parts for s in p.segments),
        )

    meta = await gw.storage.complete_upload(upload_id, bucket, key, requested, build)
    scheme = "https" if ex.scope.get("scheme") == "https" else "http"
    host = ex.headers.get("host", "localhost")
    inner = [
        elem("Location", f"{scheme}://{host}/{bucket}/{key}"),
        elem("Bucket", bucket),
        elem("Key", key),
        elem("ETag", quote_etag(meta.etag)),
    ]
    inner.extend(elem(f"Checksum{a.upper()}", v) for a, v in meta.checksums.items())
    if meta.checksum_type:
        inner.append(elem("ChecksumType", meta.checksum_type))
    await ex.respond(200, document("CompleteMultipartUploadResult", inner))


async def abort_upload(ex: Exchange) -> None:
    """AbortMultipartUpload (its parts are freed). Checkpoint: always."""
    await ex.gw.storage.abort_upload(ex.query.get("uploadId", ""), ex.route.bucket, ex.route.key)
    await ex.respond(204)


def _int(ex: Exchange, name: str, default: int, cap: int) -> int:
    raw = ex.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise S3Error("InvalidArgument", f"Invalid {name}.", ArgumentName=name, ArgumentValue=raw)
    return min(n, cap)


async def list_parts(ex: Exchange) -> None:
    """ListParts (part-number-marker, max-parts). Checkpoint: always."""
    upload = _upload(ex)
    marker = _int(ex, "part-number-marker", 0, MAX_PARTS)
    max_parts = _int(ex, "max-parts", 1000, 1000)
    parts, truncated = ex.gw.storage.list_parts(
        upload.upload_id, marker=marker, max_parts=max_parts
    )
    inner = [
        elem("Bucket", upload.bucket),
        elem("Key", upload.key),
        elem("UploadId", upload.upload_id),
        owner_xml("Initiator"),
        owner_xml(),
        elem("StorageClass", "STANDARD"),
        elem("PartNumberMarker", marker),
        elem("NextPartNumberMarker", parts[-1].part_number if parts else marker),
        elem("MaxParts", max_parts),
        elem("IsTruncated", truncated),
    ]
    if upload.checksum_algorithm:
        inner.append(elem("ChecksumAlgorithm", upload.checksum_algorithm.upper()))
    for p in parts:
        inner.append("<Part>")
        inner += [
            elem("PartNumber", p.part_number),
            elem("LastModified", iso8601(p.last_modified_ns)),
            elem("ETag", quote_etag(p.etag)),
            elem("Size", p.size),
        ]
        inner.extend(elem(f"Checksum{a.upper()}", v) for a, v in p.checksums.items())
        inner.append("</Part>")
    await ex.respond(200, document("ListPartsResult", inner))


async def list_uploads(ex: Exchange) -> None:
    """ListMultipartUploads (prefix, key-marker, upload-id-marker, max-uploads).

    Checkpoint: always.
    """
    q = ex.query
    bucket = ex.route.bucket
    prefix = q.get("prefix", "")
    key_marker = q.get("key-marker", "")
    id_marker = q.get("upload-id-marker", "")
    max_uploads = _int(ex, "max-uploads", 1000, 1000)
    uploads, truncated = ex.gw.storage.list_uploads(
        bucket, prefix=prefix, key_marker=key_marker, upload_id_marker=id_marker,
        max_uploads=max_uploads,
    )  # fmt: skip
    inner = [
        elem("Bucket", bucket),
        elem("KeyMarker", key_marker),
        elem("UploadIdMarker", id_marker),
        elem("NextKeyMarker", uploads[-1].key if uploads else ""),
        elem("NextUploadIdMarker", uploads[-1].upload_id if uploads else ""),
        elem("Prefix", prefix),
        elem("MaxUploads", max_uploads),
        elem("IsTruncated", truncated),
    ]
    for u in uploads:
        inner += [
            "<Upload>",
            elem("Key", u.key),
            elem("UploadId", u.upload_id),
            owner_xml("Initiator"),
            owner_xml(),
            elem("StorageClass", "STANDARD"),
            elem("Initiated", iso8601(u.initiated_ns)),
        ]
        if u.checksum_algorithm:
            inner.append(elem("ChecksumAlgorithm", u.checksum_algorithm.upper()))
        inner.append("</Upload>")
    await ex.respond(200, document("ListMultipartUploadsResult", inner))
