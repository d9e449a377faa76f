"""Request authentication: AWS Signature Version 4 and 2, in headers and in presigned URLs.

One entry point, :func:`authenticate`, takes the request as the ASGI server delivered it (method,
``raw_path``, raw query string, header list) and returns an :class:`AuthContext` or raises
:class:`~.errors.S3Error` with the code S3 sends. What it accepts:

- SigV4 in the ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
  Signature=...`` header, with ``x-amz-content-sha256`` naming the payload mode: a hex digest
  ("signed": the body must hash to it, checked by :mod:`.checksums` as it streams),
  ``UNSIGNED-PAYLOAD``, or one of the aws-chunked streaming modes, decoded by :mod:`.chunked`
  with the signing key and seed signature carried in the context. The mode is read from this
  header alone: some clients send aws-chunked bodies without ``Content-Encoding: aws-chunked``.
- SigV4 presigned URLs (``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
  ``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature``); payload ``UNSIGNED-PAYLOAD``.
- SigV2 presigned URLs (``AWSAccessKeyId``, ``Expires``, ``Signature``), what boto3, the AWS CLI
  v1 and s3cmd make by default, and SigV2 headers (``Authorization: AWS key:signature``).

Canonical forms follow the S3 documents ("Signature Calculations for the Authorization Header",
"Authenticating Requests: Using Query Parameters", "Signing and Authenticating REST Requests"):
the path is the one the client sent (S3 neither decodes, normalises nor double-encodes it), the
query is built from the raw query string. The canonical form encodes exactly the unreserved set
``A-Z a-z 0-9 - _ . ~`` literally and everything else as upper-case ``%XX``, as AWS does on its
side. A client that sent something else (a literal ``!``, a lower-case escape) and signed what it
sent is verified on a second attempt over the raw bytes, so strict and sloppy signers both pass
and the cost of the second hash falls only on requests that would fail anyway.

Hot path: a request with an already-canonical path and query costs one pass over the headers,
one SHA-256 of the canonical request and one HMAC (the signing key is cached per secret, date,
region and service), tens of microseconds; botocore's signer, used by the tests as the oracle,
takes 160-420 us for the same work. Canonical requests are built as bytes throughout, so a header
value's bytes are hashed exactly as they arrived.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final, Literal, final
from urllib.parse import quote_from_bytes, unquote_to_bytes

from .errors import S3Error

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_SKEW_SECONDS",
    "AuthContext",
    "PayloadMode",
    "authenticate",
    "chunk_string_to_sign",
    "signing_key",
    "trailer_string_to_sign",
]

PayloadMode = Literal[
    "signed",
    "unsigned",
    "streaming-signed",
    "streaming-signed-trailer",
    "streaming-unsigned-trailer",
]

# Tunables.
MAX_SKEW_SECONDS: Final = 15 * 60  # S3's limit between request time and server time
MAX_PRESIGN_EXPIRES: Final = 7 * 24 * 3600  # X-Amz-Expires upper bound, one week as S3
_SIGNING_KEY_CACHE_MAX: Final = 256  # (secret, date, region, service) entries; cleared when full
#: Presigned requests whose signature was verified, remembered (oldest dropped first): the same
#: URL fetched again with the same headers has the same signature check, so only the time
#: window and the access key are checked again.
PRESIGNED_CACHE_SIZE: Final = 1024
_presigned: dict[
    tuple[str, bytes, bytes, tuple[tuple[bytes, bytes], ...]],
    tuple[AuthContext, float, int, str, str],
] = {}

EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()

# x-amz-content-sha256 sentinel -> payload mode.
_PAYLOAD_MODES: Final[dict[bytes, PayloadMode]] = {
    b"UNSIGNED-PAYLOAD": "unsigned",
    b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD": "streaming-signed",
    b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER": "streaming-signed-trailer",
    b"STREAMING-UNSIGNED-PAYLOAD-TRAILER": "streaming-unsigned-trailer",
}
_SIGV4A_PREFIX: Final = b"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"

# SigV2: the query parameters that are part of the canonical resource ("sub-resources"), the
# union of S3's documented list and what botocore's HmacV1Auth signs.
_V2_SUBRESOURCES: Final = frozenset(
    {
        "accelerate", "acl", "analytics", "cors", "defaultObjectAcl", "delete", "inventory",
        "lifecycle", "location", "logging", "metrics", "notification", "object-lock",
        "partNumber", "policy", "replication", "requestPayment", "restore", "select",
        "select-type", "storageClass", "tagging", "torrent", "uploadId", "uploads", "versionId",
        "versioning", "versions", "website", "response-cache-control",
        "response-content-disposition", "response-content-encoding", "response-content-language",
        "response-content-type", "response-expires",
    }
)  # fmt: skip

_CANONICAL_PATH: Final = re.compile(rb"(?:[A-Za-z0-9\-._~/]|%[0-9A-F]{2})*")
_CANONICAL_QUERY_PART: Final = re.compile(rb"(?:[A-Za-z0-9\-._~]|%[0-9A-F]{2})*")
_ISO_BASIC: Final = re.compile(rb"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z")
_UNRESERVED: Final = b"-_.~"

_ONE_AUTH: Final = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
    "string parameter or the Authorization header should be specified"
)
_V4_QUERY_PARAMS: Final = (
    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
    "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
)
_NO_DATE: Final = "AWS authentication requires a valid Date or x-amz-date header"


@final
@dataclass(frozen=True, slots=True)
class AuthContext:
    """Who signed a request, and what its body decoder and digests need to know.

    Attributes:
        access_key: the authenticated access key id.
        payload: how the body is protected: "signed" (``content_sha256`` is its SHA-256),
            "unsigned", or an aws-chunked streaming mode.
        content_sha256: the lower-case hex SHA-256 the body must have ("signed" only).
        signature_version: 4 or 2.
        presigned: the signature came in the query string.
        signing_key: the SigV4 signing key (streaming-signed modes verify chunks with it).
        seed_signature: the request's SigV4 signature, the first link of the chunk chain.
        scope: the SigV4 credential scope, ``date/region/service/aws4_request``.
        amz_date: the SigV4 request timestamp, ``YYYYMMDDTHHMMSSZ``.
    """

    access_key: str
    payload: PayloadMode
    content_sha256: str | None = None
    signature_version: Literal[2, 4] = 4
    presigned: bool = False
    signing_key: bytes | None = None
    seed_signature: str | None = None
    scope: str | None = None
    amz_date: str | None = None


# ---------------------------------------------------------------------------------------------
# Signing keys and string-to-sign helpers (shared with the chunk decoder)

# (secret, date, region, service) -> key. A plain dict: entries are tiny and change daily.
_signing_keys: dict[tuple[str, str, str, str], bytes] = {}


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    """The SigV4 signing key: HMAC chain over date, region, service and ``aws4_request``.

    Cached per (secret, date, region, service); four HMACs on a miss.
    """
    cache_key = (secret, date, region, service)
    key = _signing_keys.get(cache_key)
    if key is None:
        digest = hmac.digest
        key = digest(("AWS4" + secret).encode(), date.encode(), "sha256")
        key = digest(key, region.encode(), "sha256")
        key = digest(key, service.encode(), "sha256")
        key = digest(key, b"aws4_request", "sha256")
        if len(_signing_keys) >= _SIGNING_KEY_CACHE_MAX:
            _signing_keys.clear()
        _signing_keys[cache_key] = key
    return key


def chunk_string_to_sign(amz_date: str, scope: str, previous: str, chunk_sha256_hex: str) -> bytes:
    """The string a streaming chunk's signature covers (``AWS4-HMAC-SHA256-PAYLOAD``)."""
    return (
        f"AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n{EMPTY_SHA256}\n"
        f"{chunk_sha256_hex}"
    ).encode()


def trailer_string_to_sign(
    amz_date: str, scope: str, previous: str, trailer_sha256_hex: str
) -> bytes:
    """The string the trailer signature covers (``AWS4-HMAC-SHA256-TRAILER``)."""
    return (
        f"AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{previous}\n{trailer_sha256_hex}".encode()
    )


# ---------------------------------------------------------------------------------------------
# Canonical forms


def _canonical_segment(raw: bytes) -> bytes:
    return quote_from_bytes(unquote_to_bytes(raw), safe=_UNRESERVED).encode("ascii")


def _canonical_path(raw_path: bytes) -> bytes:
    if _CANONICAL_PATH.fullmatch(raw_path):
        return raw_path
    # Segment by segment, so an encoded slash (%2F) stays a part of its segment.
    return b"/".join(_canonical_segment(segment) for segment in raw_path.split(b"/"))


def _split_query(query_string: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for item in query_string.split(b"&"):
        if item:
            name, _, value = item.partition(b"=")
            pairs.append((name, value))
    return pairs


def _canonical_query(pairs: list[tuple[bytes, bytes]], skip: bytes | None, strict: bool) -> bytes:
    # strict: re-encode each name and value as AWS does; otherwise keep the bytes as sent.
    match = _CANONICAL_QUERY_PART.fullmatch
    out = []
    for name, value in pairs:
        if name == skip:
            continue
        if strict:
            if not match(name):
                name = _canonical_segment(name)
            if not match(value):
                value = _canonical_segment(value)
        out.append((name, value))
    out.sort()
    return b"&".join([name + b"=" + value for name, value in out])


def _unquote(raw: bytes) -> str:
    return unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


def _headers_dict(headers: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        lname = name.lower()
        values = out.get(lname)
        if values is None:
            out[lname] = [value]
        else:
            values.append(value)
    return out


def _first(found: dict[bytes, list[bytes]], name: bytes) -> bytes | None:
    values = found.get(name)
    return None if values is None else values[0]


def _text(raw: bytes) -> str:
    return raw.decode("latin-1")


# ---------------------------------------------------------------------------------------------
# Time

_last_date: tuple[bytes, float] = (b"", 0.0)


def _parse_amz_date(raw: bytes) -> float | None:
    global _last_date
    cached, epoch = _last_date
    if raw == cached:
        return epoch
    m = _ISO_BASIC.fullmatch(raw)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(x) for x in m.groups())
    try:
        # Validates the calendar (month 13, February 30, hour 25, ...).
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    epoch = float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))
    _last_date = (raw, epoch)
    return epoch


def _parse_http_date(raw: bytes) -> float | None:
    try:
        when = parsedate_to_datetime(_text(raw))
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_skew(request_time: float, now: float) -> None:
    if abs(request_time - now) > MAX_SKEW_SECONDS:
        raise S3Error(
            "RequestTimeTooSkewed",
            RequestTime=_iso(request_time),
            ServerTime=_iso(now),
            MaxAllowedSkewMilliseconds=str(MAX_SKEW_SECONDS * 1000),
        )


def _epoch(now: datetime) -> float:
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.timestamp()


# ---------------------------------------------------------------------------------------------
# Entry point


def authenticate(
    method: str,
    raw_path: bytes,
    query_string: bytes,
    headers: list[tuple[bytes, bytes]],
    lookup_secret: Callable[[str], str | None],
    now: datetime,
) -> AuthContext:
    """Verify a request's signature and say how its body is protected.

    Args:
        method: the HTTP method, upper case.
        raw_path: the path exactly as sent (ASGI ``scope["raw_path"]``), still percent-encoded.
        query_string: the raw query string (ASGI ``scope["query_string"]``), without ``?``.
        headers: the request headers (ASGI ``scope["headers"]``).
        lookup_secret: the secret key of an access key id, or None if it is unknown.
        now: the server's current time (timezone-aware; a naive value is taken as UTC).

    Returns:
        The authenticated context.

    Raises:
        S3Error: AccessDenied (no credentials, expired or not-yet-valid presigned URL),
            InvalidAccessKeyId, SignatureDoesNotMatch, RequestTimeTooSkewed,
            AuthorizationHeaderMalformed, AuthorizationQueryParametersError, InvalidArgument
            (unsupported scheme, two auth mechanisms, bad x-amz-content-sha256), InvalidRequest
            (SigV4 header auth without x-amz-content-sha256), NotImplemented (SigV4a).
    """
    found = _headers_dict(headers)
    authorization = _first(found, b"authorization")
    pairs = _split_query(query_string) if query_string else []
    names = {name for name, _ in pairs}
    v4_query = b"X-Amz-Algorithm" in names or b"X-Amz-Signature" in names
    v2_query = b"Signature" in names or b"AWSAccessKeyId" in names
    if authorization is not None:
        if v4_query or v2_query:
            raise S3Error("InvalidArgument", _ONE_AUTH)
        if authorization.startswith(b"AWS4-HMAC-SHA256 "):
            return _v4_header(method, raw_path, pairs, found, authorization, lookup_secret, now)
        if authorization.startswith(b"AWS "):
            return _v2(
                method, raw_path, query_string, pairs, found, authorization, lookup_secret, now
            )
        raise S3Error(
            "InvalidArgument",
            "Unsupported Authorization Type",
            ArgumentName="Authorization",
            ArgumentValue=_text(authorization.split(b" ", 1)[0]),
        )
    if v4_query and v2_query:
        raise S3Error("InvalidArgument", _ONE_AUTH)
    if v4_query:
        cache_key = (method, raw_path, query_string, tuple(headers))
        hit = _presigned.get(cache_key)
        if hit is not None:
            ctx, request_time, expires, expires_text, secret = hit
            _presigned_window(request_time, expires, expires_text, _epoch(now))
            if _secret_for(ctx.access_key, lookup_secret) == secret:
                return ctx
        ctx, entry = _v4_query(method, raw_path, pairs, found, lookup_secret, now)
        if len(_presigned) >= PRESIGNED_CACHE_SIZE:
            del _presigned[next(iter(_presigned))]
        _presigned[cache_key] = (ctx, *entry)
        return ctx
    if v2_query:
        return _v2(method, raw_path, query_string, pairs, found, None, lookup_secret, now)
    raise S3Error("AccessDenied")


def _secret_for(access_key: str, lookup_secret: Callable[[str], str | None]) -> str:
    secret = lookup_secret(access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key)
    return secret


def _same(expected: str, provided: str) -> bool:
    # compare_digest refuses non-ASCII str; a signature that is not ASCII matches nothing.
    return provided.isascii() and hmac.compare_digest(expected, provided)


def _mismatch(access_key: str, string_to_sign: bytes, provided: str, canonical: bytes) -> S3Error:
    fields = {
        "AWSAccessKeyId": access_key,
        "StringToSign": _text(string_to_sign),
        "SignatureProvided": provided,
    }
    if canonical:
        fields["CanonicalRequest"] = _text(canonical)
    err = S3Error("SignatureDoesNotMatch")
    err.fields.update(fields)
    return err


# ---------------------------------------------------------------------------------------------
# SigV4


def _malformed(detail: str) -> S3Error:
    return S3Error(
        "AuthorizationHeaderMalformed", f"The authorization header is malformed; {detail}"
    )


def _parse_credential(
    credential: str, error: Callable[[str], S3Error]
) -> tuple[str, str, str, str]:
    # AKID/date/region/service/aws4_request; the key id itself may not contain "/".
    parts = credential.split("/")
    if len(parts) != 5 or not parts[0]:
        raise error(
            "the Credential is mal-formed; expecting "
            '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    access_key, date, region, service, terminator = parts
    if terminator != "aws4_request":
        raise error(f'incorrect terminal "{terminator}". This endpoint uses "aws4_request".')
    if service != "s3":
        raise error(f'incorrect service "{service}". This endpoint belongs to "s3".')
    if len(date) != 8 or not date.isdigit():
        raise error(
            f'incorrect date format "{date}". This date in the credential must be in the '
            'format "yyyyMMdd".'
        )
    return access_key, date, region, service


def _canonical_headers(found: dict[bytes, list[bytes]], signed: bytes) -> bytes:
    # Trimall: outer whitespace removed, inner runs collapsed to one space (split-and-join is
    # cheaper than testing whether there is anything to collapse).
    out = []
    for name in signed.split(b";"):
        values = found.get(name)
        if values is None:
            # A signed header that did not arrive: the signature cannot match what was signed.
            out.append(name + b":\n")
        elif len(values) == 1:
            out.append(name + b":" + b" ".join(values[0].split()) + b"\n")
        else:
            out.append(name + b":" + b",".join([b" ".join(v.split()) for v in values]) + b"\n")
    return b"".join(out)


def _payload_mode(raw: bytes | None, presigned: bool) -> tuple[PayloadMode, str | None]:
    if raw is None:
        if presigned:
            return "unsigned", None
        raise S3Error(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    mode = _PAYLOAD_MODES.get(raw)
    if mode is not None:
        return mode, None
    if len(raw) == 64:
        try:
            bytes.fromhex(_text(raw))
        except ValueError:
            pass
        else:
            return "signed", _text(raw).lower()
    if raw.startswith(_SIGV4A_PREFIX):
        raise S3Error(
            "NotImplemented", "Signature Version 4A streaming payloads are not supported."
        )
    raise S3Error(
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, "
        "or a valid sha256 value.",
        ArgumentName="x-amz-content-sha256",
        ArgumentValue=_text(raw),
    )


def _v4_verify(
    method: str,
    raw_path: bytes,
    pairs: list[tuple[bytes, bytes]],
    found: dict[bytes, list[bytes]],
    *,
    skip: bytes | None,
    signed_headers: bytes,
    payload_hash: bytes,
    amz_date: bytes,
    scope: bytes,
    key: bytes,
    provided: str,
    access_key: str,
) -> None:
    head = method.encode() + b"\n"
    tail = (
        b"\n"
        + _canonical_headers(found, signed_headers)
        + b"\n"
        + signed_headers
        + b"\n"
        + payload_hash
    )
    sts_head = b"AWS4-HMAC-SHA256\n" + amz_date + b"\n" + scope + b"\n"
    path = _canonical_path(raw_path)
    canonical = head + path + b"\n" + _canonical_query(pairs, skip, strict=True) + tail
    string_to_sign = sts_head + hashlib.sha256(canonical).hexdigest().encode()
    expected = hmac.digest(key, string_to_sign, "sha256").hex()
    if _same(expected, provided):
        return
    # The second attempt: the path and query bytes exactly as sent, for a client that signed
    # what it sent rather than the canonical encoding.
    raw_canonical = head + raw_path + b"\n" + _canonical_query(pairs, skip, strict=False) + tail
    if raw_canonical != canonical:
        raw_sts = sts_head + hashlib.sha256(raw_canonical).hexdigest().encode()
        if _same(hmac.digest(key, raw_sts, "sha256").hex(), provided):
            return
    raise _mismatch(access_key, string_to_sign, provided, canonical)


def _v4_header(
    method: str,
    raw_path: bytes,
    pairs: list[tuple[bytes, bytes]],
    found: dict[bytes, list[bytes]],
    authorization: bytes,
    lookup_secret: Callable[[str], str | None],
    now: datetime,
) -> AuthContext:
    params: dict[str, str] = {}
    for item in _text(authorization[len(b"AWS4-HMAC-SHA256 ") :]).split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise _malformed(f"missing '=' in \"{item.strip()}\".")
        params[name] = value
    credential = params.get("Credential")
    signed = params.get("SignedHeaders")
    provided = params.get("Signature")
    if credential is None or signed is None or provided is None:
        missing = [n for n in ("Credential", "SignedHeaders", "Signature") if n not in params]
        raise _malformed(f"missing {', '.join(missing)}.")
    access_key, date, region, service = _parse_credential(credential, _malformed)
    raw_date = _first(found, b"x-amz-date")
    request_time = None if raw_date is None else _parse_amz_date(raw_date)
    if raw_date is None or request_time is None:
        # SigV4 allows a Date header instead of x-amz-date (botocore uses it when the caller set
        # one); the string to sign then carries that time in the ISO 8601 basic format.
        http_date = _first(found, b"date")
        request_time = None if http_date is None else _parse_http_date(http_date)
        if request_time is None:
            raise S3Error("AccessDenied", _NO_DATE)
        raw_date = datetime.fromtimestamp(request_time, UTC).strftime("%Y%m%dT%H%M%SZ").encode()
    amz_date = _text(raw_date)
    if amz_date[:8] != date:
        raise _malformed(
            f'Invalid credential date "{date}". This date is not the same as X-Amz-Date: '
            f'"{amz_date[:8]}".'
        )
    _check_skew(request_time, _epoch(now))
    secret = _secret_for(access_key, lookup_secret)
    payload_raw = _first(found, b"x-amz-content-sha256")
    mode, content_sha256 = _payload_mode(payload_raw, presigned=False)
    assert payload_raw is not None  # _payload_mode raised otherwise
    key = signing_key(secret, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    _v4_verify(
        method,
        raw_path,
        pairs,
        found,
        skip=None,
        signed_headers=signed.lower().encode("latin-1"),
        payload_hash=payload_raw,
        amz_date=raw_date,
        scope=scope.encode(),
        key=key,
        provided=provided,
        access_key=access_key,
    )
    return AuthContext(
        access_key=access_key,
        payload=mode,
        content_sha256=content_sha256,
        signature_version=4,
        signing_key=key,
        seed_signature=provided,
        scope=scope,
        amz_date=amz_date,
    )


def _query_error(detail: str) -> S3Error:
    return S3Error("AuthorizationQueryParametersError", detail)


def _v4_query(
    method: str,
    raw_path: bytes,
    pairs: list[tuple[bytes, bytes]],
    found: dict[bytes, list[bytes]],
    lookup_secret: Callable[[str], str | None],
    now: datetime,
) -> tuple[AuthContext, tuple[float, int, str, str]]:
    """Verify a presigned SigV4 request; also what re-checking it later needs.

    Returns:
        The context, and (request time, expiry seconds, expiry as sent, the secret used).
    """
    params: dict[bytes, bytes] = {}
    for name, value in pairs:
        if name.startswith(b"X-Amz-"):
            params.setdefault(name, value)
    try:
        algorithm = _unquote(params[b"X-Amz-Algorithm"])
        credential = _unquote(params[b"X-Amz-Credential"])
        raw_date = unquote_to_bytes(params[b"X-Amz-Date"])
        expires_text = _unquote(params[b"X-Amz-Expires"])
        signed = unquote_to_bytes(params[b"X-Amz-SignedHeaders"])
        provided = _unquote(params[b"X-Amz-Signature"])
    except KeyError:
        raise _query_error(_V4_QUERY_PARAMS) from None
    if algorithm != "AWS4-HMAC-SHA256":
        raise _query_error('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    access_key, date, region, service = _parse_credential(
        credential,
        lambda detail: _query_error(f"Error parsing the X-Amz-Credential parameter; {detail}"),
    )
    request_time = _parse_amz_date(raw_date)
    if request_time is None:
        raise _query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if raw_date[:8].decode() != date:
        raise _query_error(
            "Error parsing the X-Amz-Credential parameter; the date in the credential does not "
            "match X-Amz-Date."
        )
    if not expires_text.isdigit():
        raise _query_error("X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires > MAX_PRESIGN_EXPIRES:
        raise _query_error(
            f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGN_EXPIRES}"
        )
    _presigned_window(request_time, expires, expires_text, _epoch(now))
    secret = _secret_for(access_key, lookup_secret)
    # A presigned request's body is unsigned unless the client also signed a payload hash header.
    payload_raw = _first(found, b"x-amz-content-sha256")
    mode, content_sha256 = _payload_mode(payload_raw, presigned=True)
    if mode != "signed" and mode != "unsigned":
        raise S3Error("InvalidRequest", "Presigned requests do not support streaming payloads.")
    key = signing_key(secret, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    _v4_verify(
        method,
        raw_path,
        pairs,
        found,
        skip=b"X-Amz-Signature",
        signed_headers=signed.lower(),
        payload_hash=b"UNSIGNED-PAYLOAD" if payload_raw is None else payload_raw,
        amz_date=raw_date,
        scope=scope.encode(),
        key=key,
        provided=provided,
        access_key=access_key,
    )
    ctx = AuthContext(
        access_key=access_key,
        payload=mode,
        content_sha256=content_sha256,
        signature_version=4,
        presigned=True,
        signing_key=key,
        seed_signature=provided,
        scope=scope,
        amz_date=_text(raw_date),
    )
    return ctx, (request_time, expires, expires_text, secret)


def _presigned_window(request_time: float, expires: int, expires_text: str, server: float) -> None:
    """Raise AccessDenied unless a presigned request is valid at server time."""
    if request_time - server > MAX_SKEW_SECONDS:
        raise S3Error("AccessDenied", "Request is not yet valid")
    if server > request_time + expires:
        err = S3Error("AccessDenied", "Request has expired")
        err.fields["X-Amz-Expires"] = expires_text
        err.fields["Expires"] = _iso(request_time + expires)
        err.fields["ServerTime"] = _iso(server)
        raise err


# ---------------------------------------------------------------------------------------------
# SigV2


def _v2_resource(raw_path: bytes, query_string: bytes) -> bytes:
    # "uploads" and "uploads=" sign differently in SigV2, so this works on the raw items.
    subresources = []
    for item in query_string.split(b"&"):
        name, sep, value = item.partition(b"=")
        if _text(name) in _V2_SUBRESOURCES:
            subresources.append((name, sep + unquote_to_bytes(value)))
    if not subresources:
        return raw_path
    subresources.sort(key=lambda pair: pair[0])  # stable: repeated names keep their order
    return raw_path + b"?" + b"&".join([name + rest for name, rest in subresources])


def _v2_amz_headers(found: dict[bytes, list[bytes]], extra: dict[bytes, bytes]) -> bytes:
    amz: dict[bytes, bytes] = {}
    for name, values in found.items():
        if name.startswith(b"x-amz-"):
            amz[name] = b",".join(v.strip() for v in values)
    for name, value in extra.items():
        amz.setdefault(name, value)
    return b"".join(name + b":" + amz[name] + b"\n" for name in sorted(amz))


def _v2(
    method: str,
    raw_path: bytes,
    query_string: bytes,
    pairs: list[tuple[bytes, bytes]],
    found: dict[bytes, list[bytes]],
    authorization: bytes | None,
    lookup_secret: Callable[[str], str | None],
    now: datetime,
) -> AuthContext:
    server = _epoch(now)
    extra: dict[bytes, bytes] = {}
    content_md5 = _first(found, b"content-md5") or b""
    content_type = _first(found, b"content-type") or b""
    if authorization is None:
        params: dict[bytes, bytes] = {}
        for name, value in pairs:
            params.setdefault(name, value)
            lname = name.lower()
            # Presigners move signed x-amz-* headers (and Content-Type/MD5) into the query.
            if lname.startswith(b"x-amz-"):
                extra.setdefault(lname, unquote_to_bytes(value).strip())
        try:
            access_key = _unquote(params[b"AWSAccessKeyId"])
            provided = _unquote(params[b"Signature"])
            expires_raw = unquote_to_bytes(params[b"Expires"])
        except KeyError:
            raise S3Error(
                "AccessDenied",
                "Query-string authentication requires the Signature, Expires and AWSAccessKeyId "
                "parameters",
            ) from None
        if not expires_raw.isdigit():
            raise S3Error("AccessDenied", "Invalid date (should be seconds since epoch)")
        if server > int(expires_raw):
            raise S3Error(
                "AccessDenied",
                "Request has expired",
                Expires=_iso(int(expires_raw)),
                ServerTime=_iso(server),
            )
        content_md5 = content_md5 or unquote_to_bytes(params.get(b"content-md5", b""))
        content_type = content_type or unquote_to_bytes(params.get(b"content-type", b""))
        date_lines = [expires_raw]
    else:
        credential = _text(authorization[4:]).strip()
        access_key, sep, provided = credential.rpartition(":")
        if not sep or not access_key or not provided:
            raise S3Error(
                "InvalidArgument",
                "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
                ArgumentName="Authorization",
                ArgumentValue=_text(authorization),
            )
        amz_date = _first(found, b"x-amz-date")
        date = _first(found, b"date")
        when = None if amz_date is None else _parse_http_date(amz_date)
        if when is None:
            when = None if date is None else _parse_http_date(date)
        if when is None:
            raise S3Error("AccessDenied", _NO_DATE)
        _check_skew(when, server)
        # With x-amz-date present S3 signs an empty Date line; some signers keep the Date
        # header there anyway, so both are tried.
        date_lines = [b""] if amz_date is not None else []
        if date is not None:
            date_lines.append(date.strip())
    secret = _secret_for(access_key, lookup_secret)
    tail = _v2_amz_headers(found, extra) + _v2_resource(raw_path, query_string)
    head = method.encode() + b"\n" + content_md5.strip() + b"\n" + content_type.strip() + b"\n"
    key = secret.encode()
    first = b""
    for date_line in date_lines:
        string_to_sign = head + date_line + b"\n" + tail
        first = first or string_to_sign
        expected = base64.b64encode(hmac.digest(key, string_to_sign, "sha1")).decode("ascii")
        if _same(expected, provided):
            return AuthContext(
                access_key=access_key,
                payload="unsigned",
                signature_version=2,
                presigned=authorization is None,
            )
    raise _mismatch(access_key, first, provided, b"")
