"""Path-style S3 addressing: from method, raw path and query to an operation name.

``/`` is the service, ``/bucket`` the bucket, ``/bucket/key`` an object. The key is the raw path
after the bucket, percent-decoded once and decoded as strict UTF-8 (S3 refuses other bytes); the
decoded path the ASGI server offers is not used, since it may have replaced bad bytes.

The operation is chosen by level, method and subresource (query parameters such as ``uploads``,
``uploadId``, ``delete``, ``location``), as S3's REST API defines; a subresource naming a feature
this gateway does not have is ``NotImplemented`` (501), a method S3 has not at that level is
``MethodNotAllowed`` (405).

Routes are pure functions of (method, raw path, query string), so the last
:data:`ROUTE_CACHE_SIZE` distinct requests routed are remembered: a hot object's GET (the same
presigned URL, or the same path) skips the decoding. Errors are not remembered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote_to_bytes

from .errors import S3Error

__all__ = [
    "MAX_KEY_BYTES",
    "RESERVED_PATHS",
    "Route",
    "parse_query",
    "route",
    "validate_bucket_name",
]

MAX_KEY_BYTES: Final = 1024
# Paths the gateway itself serves; no bucket may take these names.
RESERVED_PATHS: Final = frozenset({"metrics", "healthz"})

# Subresources of features left out: S3 has them, this gateway answers NotImplemented.
_UNSUPPORTED: Final = frozenset(
    {
        "acl", "accelerate", "analytics", "attributes", "cors", "encryption",
        "intelligent-tiering", "inventory", "legal-hold", "lifecycle", "logging", "metrics",
        "notification", "object-lock", "ownershipControls", "policy", "policyStatus",
        "publicAccessBlock", "replication", "requestPayment", "restore", "retention", "select",
        "tagging", "torrent", "versioning", "versions", "website",
    }
)  # fmt: skip
#: Distinct (method, raw path, query string) routes kept (oldest dropped first).
ROUTE_CACHE_SIZE: Final = 1024
_routes: dict[tuple[str, bytes, bytes], Route] = {}
_BUCKET_RE: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE: Final = re.compile(r"\d+\.\d+\.\d+\.\d+")


@dataclass(frozen=True, slots=True)
class Route:
    """What a request addresses and which S3 operation it is.

    Attributes:
        operation: the S3 operation name (``GetObject``, ``ListObjectsV2``, ...).
        bucket: the bucket name ("" for the service).
        key: the object key ("" for the service and buckets).
        query: query parameters, decoded, first value of each (shared by every request
            with the same route: read it, never change it).
    """

    operation: str
    bucket: str = ""
    key: str = ""
    query: dict[str, str] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        """The resource as S3 names it in error documents (``/bucket/key``)."""
        if not self.bucket:
            return "/"
        return f"/{self.bucket}/{self.key}" if self.key else f"/{self.bucket}"


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidArgument", f"The {what} is not valid UTF-8.") from None


def parse_query(query_string: bytes) -> dict[str, str]:
    """Decode a raw query string (``+`` is a space, as in forms); the first value of each name.

    Raises:
        S3Error: InvalidArgument (a name or value that is not UTF-8).
    """
    out: dict[str, str] = {}
    if not query_string:
        return out
    for item in query_string.split(b"&"):
        if not item:
            continue
        name, _, value = item.partition(b"=")
        n = _utf8(unquote_to_bytes(name.replace(b"+", b" ")), "query string")
        v = _utf8(unquote_to_bytes(value.replace(b"+", b" ")), "query string")
        out.setdefault(n, v)
    return out


def validate_bucket_name(name: str) -> None:
    """Check S3's bucket naming rules (3-63 of a-z 0-9 . -, no IP address, no ``..``).

    Raises:
        S3Error: InvalidBucketName.
    """
    if (
        not _BUCKET_RE.fullmatch(name)
        or ".." in name
        or ".-" in name
        or "-." in name
        or _IPV4_RE.fullmatch(name)
    ):
        raise S3Error("InvalidBucketName", BucketName=name)
    if name in RESERVED_PATHS:
        raise S3Error(
            "InvalidBucketName",
            f"The bucket name {name!r} is reserved for the gateway's own endpoint.",
            BucketName=name,
        )


def validate_key(key: str) -> None:
    """Check an object key: non-empty, at most 1,024 bytes of UTF-8.

    Raises:
        S3Error: KeyTooLongError; InvalidArgument for an empty key.
    """
    n = len(key.encode("utf-8", "surrogatepass"))
    if n > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", Size=str(n), MaxSizeAllowed=str(MAX_KEY_BYTES))
    if not key:
        raise S3Error("InvalidArgument", "The key must not be empty.")


def _split(raw_path: bytes) -> tuple[str, str | None]:
    if not raw_path.startswith(b"/"):
        raise S3Error("InvalidArgument", "The request path must start with '/'.")
    rest = raw_path[1:]
    bucket_raw, slash, key_raw = rest.partition(b"/")
    bucket = _utf8(unquote_to_bytes(bucket_raw), "bucket name")
    if not slash or not key_raw:
        return bucket, None
    return bucket, _utf8(unquote_to_bytes(key_raw), "object key")


def route(method: str, raw_path: bytes, query_string: bytes) -> Route:
    """Decide which operation a request is (remembered for the latest distinct requests).

    Raises:
        S3Error: InvalidArgument (bad UTF-8), InvalidBucketName, KeyTooLongError,
            NotImplemented (an unsupported subresource), MethodNotAllowed.
    """
    cache_key = (method, raw_path, query_string)
    found = _routes.get(cache_key)
    if found is None:
        found = _route(method, raw_path, query_string)
        if len(_routes) >= ROUTE_CACHE_SIZE:
            del _routes[next(iter(_routes))]
        _routes[cache_key] = found
    return found


def _route(method: str, raw_path: bytes, query_string: bytes) -> Route:
    query = parse_query(query_string)
    bucket, key = _split(raw_path)
    for name in query:
        if name in _UNSUPPORTED:
            raise S3Error(
                "NotImplemented",
                f"The {name!r} subresource is not implemented by this gateway.",
            )
    if not bucket:
        if method in ("GET", "HEAD"):
            return Route("ListBuckets", query=query)
        raise S3Error("MethodNotAllowed", Method=method, ResourceType="SERVICE")
    validate_bucket_name(bucket)
    if key is None:
        op = _bucket_operation(method, query)
        return Route(op, bucket, "", query)
    validate_key(key)
    return Route(_object_operation(method, query), bucket, key, query)


def _bucket_operation(method: str, query: dict[str, str]) -> str:
    if method == "GET":
        if "location" in query:
            return "GetBucketLocation"
        if "uploads" in query:
            return "ListMultipartUploads"
        if query.get("list-type") == "2":
            return "ListObjectsV2"
        if "list-type" in query:
            raise S3Error("InvalidArgument", "Invalid list-type.", ArgumentName="list-type")
        return "ListObjects"
    if method == "HEAD":
        return "HeadBucket"
    if method == "PUT":
        return "CreateBucket"
    if method == "DELETE":
        return "DeleteBucket"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    raise S3Error("MethodNotAllowed", Method=method, ResourceType="BUCKET")


def _object_operation(method: str, query: dict[str, str]) -> str:
    upload = "uploadId" in query
    if method in ("GET", "HEAD"):
        if upload and method == "GET":
            return "ListParts"
        return "GetObject" if method == "GET" else "HeadObject"
    if method == "PUT":
        if upload or "partNumber" in query:
            return "UploadPart"
        return "PutObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if upload else "DeleteObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if upload:
            return "CompleteMultipartUpload"
        raise S3Error("NotImplemented", "POST object uploads (HTML forms) are not implemented.")
    raise S3Error("MethodNotAllowed", Method=method, ResourceType="OBJECT")
