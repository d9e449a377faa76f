from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.auth import (  # type: ignore[import-untyped]
    HmacV1Auth,
    HmacV1QueryAuth,
    S3SigV4Auth,
    S3SigV4QueryAuth,
)
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.object_store_gateway.auth import (
    MAX_SKEW_SECONDS,
    AuthContext,
    authenticate,
    signing_key,
)
from examples.object_store_gateway.errors import S3Error

if TYPE_CHECKING:
    from collections.abc import Callable

ACCESS = "test-access"
SECRET = "test-secret-key"
ENDPOINT = "http://127.0.0.1:9000"
SECRETS = {ACCESS: SECRET, "other": "other-secret"}

Request = tuple[str, bytes, bytes, list[tuple[bytes, bytes]]]
REST = b"SignedHeaders=host, Signature=0"


def lookup(key: str) -> str | None:
    return SECRETS.get(key)


def wire(method: str, url: str, headers: Any) -> Request:
    """What the ASGI server would hand over for a request botocore prepared."""
    parts = urlsplit(url)
    out = [
        (k.lower().encode(), v if isinstance(v, bytes) else v.encode()) for k, v in headers.items()
    ]
    if not any(k == b"host" for k, _ in out):
        out.append((b"host", parts.netloc.encode()))
    return method, parts.path.encode(), parts.query.encode(), out


def sign_v4(
    method: str = "GET",
    path: str = "/bucket/key",
    query: str = "",
    headers: dict[str, str] | None = None,
    *,
    body: bytes = b"",
    secret: str = SECRET,
    access: str = ACCESS,
    region: str = "us-east-1",
    payload: str | None = None,
) -> Request:
    url = ENDPOINT + path + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
    signer = S3SigV4Auth(Credentials(access, secret), "s3", region)
    if payload is not None:
        signer.payload = lambda _request: payload
    signer.add_auth(request)
    return wire(method, request.url, request.headers)


def presign_v4(
    method: str = "GET", path: str = "/bucket/key", query: str = "", expires: int = 3600, **kw: Any
) -> Request:
    url = ENDPOINT + path + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers=dict(kw.pop("headers", {})))
    S3SigV4QueryAuth(
        Credentials(ACCESS, kw.pop("secret", SECRET)), "s3", "us-east-1", expires
    ).add_auth(request)
    return wire(method, request.url, request.headers)


def sign_v2(
    method: str = "GET",
    path: str = "/bucket/key",
    query: str = "",
    headers: dict[str, str] | None = None,
) -> Request:
    url = ENDPOINT + path + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}))
    HmacV1Auth(Credentials(ACCESS, SECRET)).add_auth(request)
    return wire(method, request.url, request.headers)


def presign_v2(
    method: str = "GET", path: str = "/bucket/key", query: str = "", expires: int = 3600
) -> Request:
    url = ENDPOINT + path + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers={})
    HmacV1QueryAuth(Credentials(ACCESS, SECRET), expires).add_auth(request)
    return wire(method, request.url, request.headers)


def now() -> datetime:
    return datetime.now(UTC)


def check(request: Request, when: datetime | None = None) -> AuthContext:
    method, path, query, headers = request
    return authenticate(method, path, query, headers, lookup, when or now())


def code(request: Request, when: datetime | None = None) -> str:
    with pytest.raises(S3Error) as info:
        check(request, when)
    assert info.value.status < 500 or info.value.code == "NotImplemented"
    return info.value.code


def replace_header(request: Request, name: bytes, value: bytes) -> Request:
    method, path, query, headers = request
    return method, path, query, [(k, value if k == name else v) for k, v in headers]


KEYS = [
    "key",
    "dir/sub/file.txt",
    "with space",
    "plus+sign",
    "tilde~and-dash_dot.",
    "unicode-éü漢字",
    "reserved!$&'()*,;=:@",
    "percent%41",
    "a//double/slash/",
    "q?mark#hash",
]


class TestSigV4Header:
    @pytest.mark.parametrize("key", KEYS)
    def test_paths(self, key: str) -> None:
        # botocore quotes the key into the URL (safe "/~") and signs that path unchanged.
        ctx = check(sign_v4(path="/bucket/" + quote(key, safe="/~")))
        assert ctx.access_key == ACCESS
        assert ctx.signature_version == 4
        assert not ctx.presigned

    @pytest.mark.parametrize(
        "query",
        [
            "list-type=2&prefix=dir%2F&delimiter=%2F",
            "uploads",
            "uploadId=abc&partNumber=3",
            "prefix=a%20b&max-keys=2&continuation-token=x%2By%3D%3D",
            "b=2&a=1&a=0",
            "versionId=null",
            "response-content-disposition=attachment%3B%20filename%3D%22x%22",
        ],
    )
    def test_queries(self, query: str) -> None:
        assert check(sign_v4(query=query)).access_key == ACCESS

    def test_signed_payload(self) -> None:
        body = b"hello"
        ctx = check(sign_v4("PUT", body=body))
        assert ctx.payload == "signed"
        assert ctx.content_sha256 == hashlib.sha256(body).hexdigest()
        assert ctx.signing_key == signing_key(
            SECRET, ctx.amz_date[:8] if ctx.amz_date else "", "us-east-1"
        )
        assert ctx.scope is not None
        assert ctx.scope.endswith("/us-east-1/s3/aws4_request")

    @pytest.mark.parametrize(
        ("payload", "mode"),
        [
            ("UNSIGNED-PAYLOAD", "unsigned"),
            ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "streaming-signed"),
            ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", "streaming-signed-trailer"),
            ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", "streaming-unsigned-trailer"),
        ],
    )
    def test_payload_modes(self, payload: str, mode: str) -> None:
        request = sign_v4("PUT", payload=payload)
        ctx = check(request)
        assert ctx.payload == mode
        assert ctx.content_sha256 is None
        # The seed signature is the Authorization header's.
        auth = dict(request[3])[b"authorization"].decode()
        assert ctx.seed_signature is not None
        assert auth.endswith("Signature=" + ctx.seed_signature)

    def test_date_header_instead_of_x_amz_date(self) -> None:
        from email.utils import formatdate

        request = sign_v4(headers={"Date": formatdate(usegmt=True)})
        names = [k for k, _ in request[3]]
        assert b"date" in names
        assert b"x-amz-date" not in names
        ctx = check(request)
        assert ctx.amz_date is not None
        assert ctx.amz_date.endswith("Z")

    def test_regions_and_metadata_headers(self) -> None:
        headers = {
            "x-amz-meta-name": "  padded   value ",
            "Content-Type": "text/plain",
            "Range": "bytes=0-1",
        }
        for region in ("us-east-1", "eu-west-3", "auto"):
            assert check(sign_v4(headers=headers, region=region)).scope is not None

    def test_repeated_header_values(self) -> None:
        # A header sent twice is signed as its values joined by ",", each trimmed.
        aws = AWSRequest(method="GET", url=ENDPOINT + "/bucket/key", headers={})
        aws.headers.add_header("x-amz-meta-a", " 1 ")
        aws.headers.add_header("x-amz-meta-a", "2  3")
        S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", "us-east-1").add_auth(aws)
        headers = [(b"host", b"127.0.0.1:9000")]
        headers += [(name.lower().encode(), value.encode()) for name, value in aws.headers.items()]
        assert [v for k, v in headers if k == b"x-amz-meta-a"] == [b" 1 ", b"2  3"]
        assert check(("GET", b"/bucket/key", b"", headers)).access_key == ACCESS
        swapped = [(k, {b" 1 ": b"2  3", b"2  3": b" 1 "}.get(v, v)) for k, v in headers]
        assert code(("GET", b"/bucket/key", b"", swapped)) == "SignatureDoesNotMatch"

    def test_lenient_raw_path(self) -> None:
        # A client that sends (and signs) a literal "!" rather than %21 still verifies.
        assert check(sign_v4(path="/bucket/a!b(c)")).access_key == ACCESS
        assert check(sign_v4(path="/bucket/x", query="prefix=a/b")).access_key == ACCESS

    @pytest.mark.parametrize(
        "tamper",
        ["method", "path", "query", "header", "signature", "secret", "payload", "host"],
    )
    def test_tampering(self, tamper: str) -> None:
        method, path, query, headers = sign_v4(
            "PUT", "/bucket/key", "partNumber=1&uploadId=u", {"x-amz-meta-a": "v"}, body=b"data"
        )
        if tamper == "method":
            method = "POST"
        elif tamper == "path":
            path = b"/bucket/kez"
        elif tamper == "query":
            query = b"partNumber=2&uploadId=u"
        elif tamper == "header":
            headers = [(k, b"w" if k == b"x-amz-meta-a" else v) for k, v in headers]
        elif tamper == "signature":
            headers = [
                (k, v[:-1] + (b"0" if v[-1:] != b"0" else b"1") if k == b"authorization" else v)
                for k, v in headers
            ]
        elif tamper == "payload":
            headers = [
                (
                    k,
                    hashlib.sha256(b"other").hexdigest().encode()
                    if k == b"x-amz-content-sha256"
                    else v,
                )
                for k, v in headers
            ]
        elif tamper == "host":
            headers = [(k, b"evil:9000" if k == b"host" else v) for k, v in headers]
        else:
            method, path, query, headers = sign_v4("PUT", access="other", secret="not-other-secret")
        with pytest.raises(S3Error) as info:
            authenticate(method, path, query, headers, lookup, now())
        assert info.value.code == "SignatureDoesNotMatch"
        assert info.value.status == 403
        assert info.value.fields["AWSAccessKeyId"] in (ACCESS, "other")
        assert "AWS4-HMAC-SHA256" in info.value.fields["StringToSign"]
        assert "CanonicalRequest" in info.value.fields

    def test_unknown_access_key(self) -> None:
        with pytest.raises(S3Error) as info:
            check(sign_v4(access="nobody"))
        assert info.value.code == "InvalidAccessKeyId"
        assert info.value.fields["AWSAccessKeyId"] == "nobody"

    def test_clock_skew(self) -> None:
        request = sign_v4()
        limit = timedelta(seconds=MAX_SKEW_SECONDS)
        check(request, now() + limit - timedelta(seconds=30))
        check(request, now() - limit + timedelta(seconds=30))
        assert code(request, now() + limit + timedelta(seconds=30)) == "RequestTimeTooSkewed"
        with pytest.raises(S3Error) as info:
            check(request, now() - limit - timedelta(seconds=30))
        assert info.value.code == "RequestTimeTooSkewed"
        assert info.value.status == 403
        assert info.value.fields["MaxAllowedSkewMilliseconds"] == "900000"

    def test_naive_now_is_utc(self) -> None:
        assert check(sign_v4(), datetime.now(UTC).replace(tzinfo=None)).access_key == ACCESS

    @pytest.mark.parametrize(
        ("header", "value", "expected"),
        [
            (b"x-amz-content-sha256", b"nonsense", "InvalidArgument"),
            (b"x-amz-content-sha256", b"z" * 64, "InvalidArgument"),
            (
                b"x-amz-content-sha256",
                b"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
                "NotImplemented",
            ),
            (b"x-amz-date", b"20250101", "AccessDenied"),
            (b"x-amz-date", b"20251301T000000Z", "AccessDenied"),
        ],
    )
    def test_bad_headers(self, header: bytes, value: bytes, expected: str) -> None:
        assert code(replace_header(sign_v4(), header, value)) == expected

    def test_missing_content_sha256(self) -> None:
        method, path, query, headers = sign_v4()
        headers = [(k, v) for k, v in headers if k != b"x-amz-content-sha256"]
        assert code((method, path, query, headers)) == "InvalidRequest"

    @pytest.mark.parametrize(
        "authorization",
        [
            b"AWS4-HMAC-SHA256 Credential=test-access/20250101/us-east-1/s3/aws4_request",
            b"AWS4-HMAC-SHA256 garbage",
            b"AWS4-HMAC-SHA256 Credential=test-access/2025/us-east-1/s3/aws4_request, " + REST,
            b"AWS4-HMAC-SHA256 Credential=test-access/20250101/us-east-1/ec2/aws4_request, " + REST,
            b"AWS4-HMAC-SHA256 Credential=test-access/20250101/us-east-1/s3/aws5_request, " + REST,
            b"AWS4-HMAC-SHA256 Credential=test-access, SignedHeaders=host, Signature=0",
        ],
    )
    def test_malformed_authorization(self, authorization: bytes) -> None:
        assert (
            code(replace_header(sign_v4(), b"authorization", authorization))
            == "AuthorizationHeaderMalformed"
        )

    def test_credential_date_must_match(self) -> None:
        request = sign_v4()
        auth = dict(request[3])[b"authorization"]
        date = dict(request[3])[b"x-amz-date"][:8]
        other = b"19990101" if date != b"19990101" else b"19990102"
        assert code(replace_header(request, b"authorization", auth.replace(date, other))) == (
            "AuthorizationHeaderMalformed"
        )

    def test_unsupported_scheme_and_no_auth(self) -> None:
        assert code(replace_header(sign_v4(), b"authorization", b"Bearer xyz")) == "InvalidArgument"
        assert code(("GET", b"/bucket/key", b"", [(b"host", b"h")])) == "AccessDenied"

    def test_two_mechanisms(self) -> None:
        method, path, _, headers = sign_v4()
        assert (
            code((method, path, b"X-Amz-Algorithm=AWS4-HMAC-SHA256", headers)) == "InvalidArgument"
        )
        assert code(("GET", b"/b/k", b"Signature=x&X-Amz-Signature=y", [])) == "InvalidArgument"


class TestSigV4Presigned:
    @pytest.mark.parametrize("key", KEYS)
    def test_paths(self, key: str) -> None:
        ctx = check(presign_v4(path="/bucket/" + quote(key, safe="/~")))
        assert ctx.presigned
        assert ctx.payload == "unsigned"
        assert ctx.signature_version == 4

    def test_with_operation_query_and_headers(self) -> None:
        request = presign_v4(
            "PUT",
            query="partNumber=1&uploadId=x%2By",
            headers={"x-amz-meta-a": "b", "Content-Type": "t/x"},
        )
        assert check(request).access_key == ACCESS

    def test_boto3_presigned_v4(self) -> None:
        client = boto3.client(
            "s3",
            endpoint_url=ENDPOINT,
            aws_access_key_id=ACCESS,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
            config=Config(signature_version="s3v4"),
        )
        url = client.generate_presigned_url(
            "get_object",
            Params={"Bucket": "bucket", "Key": "a b/ü+x", "ResponseContentType": "text/plain"},
            ExpiresIn=60,
        )
        assert "X-Amz-Signature=" in url
        ctx = check(wire("GET", url, {}))
        assert ctx.presigned
        assert code(wire("GET", url, {}), now() + timedelta(seconds=120)) == "AccessDenied"

    def test_expiry(self) -> None:
        request = presign_v4(expires=60)
        check(request, now() + timedelta(seconds=30))
        with pytest.raises(S3Error) as info:
            check(request, now() + timedelta(seconds=120))
        assert info.value.code == "AccessDenied"
        assert info.value.status == 403
        assert info.value.message == "Request has expired"
        assert info.value.fields["X-Amz-Expires"] == "60"
        # Presigned URLs are checked against their expiry, not the 15-minute skew.
        long_lived = presign_v4(expires=7200)
        check(long_lived, now() + timedelta(hours=1))
        assert code(presign_v4(), now() - timedelta(hours=1)) == "AccessDenied"  # not yet valid

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            (b"X-Amz-Expires", b"604801"),
            (b"X-Amz-Expires", b"-1"),
            (b"X-Amz-Expires", b"soon"),
            (b"X-Amz-Algorithm", b"AWS4-HMAC-SHA512"),
            (b"X-Amz-Date", b"yesterday"),
            (b"X-Amz-Credential", b"test-access%2F2025"),
        ],
    )
    def test_bad_parameters(self, name: bytes, value: bytes) -> None:
        method, path, query, headers = presign_v4()
        items = [item.partition(b"=") for item in query.split(b"&")]
        query = b"&".join(k + b"=" + (value if k == name else v) for k, _, v in items)
        assert code((method, path, query, headers)) == "AuthorizationQueryParametersError"

    def test_missing_parameter(self) -> None:
        method, path, query, headers = presign_v4()
        query = b"&".join(
            item for item in query.split(b"&") if not item.startswith(b"X-Amz-Expires")
        )
        assert code((method, path, query, headers)) == "AuthorizationQueryParametersError"

    @pytest.mark.parametrize("tamper", ["path", "query", "signature", "expires"])
    def test_tampering(self, tamper: str) -> None:
        method, path, query, headers = presign_v4(query="versionId=1")
        if tamper == "path":
            path += b"x"
        elif tamper == "query":
            query = query.replace(b"versionId=1", b"versionId=2")
        elif tamper == "signature":
            query = query[:-1] + (b"0" if query[-1:] != b"0" else b"1")
        else:
            query = query.replace(b"X-Amz-Expires=3600", b"X-Amz-Expires=7200")
        assert code((method, path, query, headers)) == "SignatureDoesNotMatch"

    def test_streaming_refused(self) -> None:
        request = presign_v4("PUT")
        method, path, query, headers = request
        headers = [*headers, (b"x-amz-content-sha256", b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD")]
        assert code((method, path, query, headers)) == "InvalidRequest"


class TestRealBoto3Requests:
    """Requests exactly as boto3 sends them (captured before they hit the wire)."""

    class Captured(Exception):
        pass

    def capture(self, endpoint: str, operation: str, **params: Any) -> tuple[Request, Any]:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=ACCESS,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        seen: list[Any] = []

        def hook(request: Any, **_: Any) -> None:
            seen.append(request)
            raise self.Captured

        client.meta.events.register("before-send", hook)
        with pytest.raises(self.Captured):
            getattr(client, operation)(**params)
        request = seen[0]
        return wire(request.method, request.url, request.headers), request.body

    @pytest.mark.parametrize(
        ("operation", "params"),
        [
            ("list_buckets", {}),
            ("create_bucket", {"Bucket": "bucket"}),
            (
                "list_objects_v2",
                {"Bucket": "bucket", "Prefix": "a b/", "Delimiter": "/", "MaxKeys": 3},
            ),
            ("list_objects", {"Bucket": "bucket", "Marker": "m+1"}),
            ("get_object", {"Bucket": "bucket", "Key": "dir/ü x", "Range": "bytes=0-9"}),
            ("head_object", {"Bucket": "bucket", "Key": "k", "VersionId": "null"}),
            (
                "delete_objects",
                {"Bucket": "bucket", "Delete": {"Objects": [{"Key": "a"}], "Quiet": True}},
            ),
            ("create_multipart_upload", {"Bucket": "bucket", "Key": "big"}),
            (
                "upload_part",
                {
                    "Bucket": "bucket",
                    "Key": "big",
                    "UploadId": "u/1+",
                    "PartNumber": 1,
                    "Body": b"x",
                },
            ),
            ("copy_object", {"Bucket": "bucket", "Key": "dst", "CopySource": "bucket/src ü"}),
        ],
    )
    @pytest.mark.parametrize("endpoint", [ENDPOINT, "https://127.0.0.1:9443"])
    def test_operations(self, endpoint: str, operation: str, params: dict[str, Any]) -> None:
        request, _ = self.capture(endpoint, operation, **params)
        assert check(request).access_key == ACCESS

    def test_put_over_http_signs_the_payload(self) -> None:
        body = os.urandom(1000)
        request, _ = self.capture(ENDPOINT, "put_object", Bucket="bucket", Key="k", Body=body)
        ctx = check(request)
        assert ctx.payload == "signed"
        assert ctx.content_sha256 == hashlib.sha256(body).hexdigest()
        assert b"x-amz-checksum-crc32" in dict(request[3])

    def test_put_over_https_streams_with_a_trailer(self) -> None:
        request, body = self.capture(
            "https://127.0.0.1:9443", "put_object", Bucket="bucket", Key="k", Body=b"x" * 100
        )
        ctx = check(request)
        assert ctx.payload == "streaming-unsigned-trailer"
        assert dict(request[3])[b"x-amz-trailer"] == b"x-amz-checksum-crc32"
        assert body is not None


# Hypothesis: any mutation of a signed request yields an S3Error (or, rarely, still verifies);
# never another exception.
_MUTABLE_HEADERS = [
    b"authorization",
    b"x-amz-date",
    b"x-amz-content-sha256",
    b"host",
    b"date",
    b"content-md5",
]


@st.composite
def mutated(draw: st.DrawFn) -> Request:
    signers: list[Callable[[], Request]] = [sign_v4, presign_v4, sign_v2, presign_v2]
    base = draw(st.sampled_from(signers))()
    method, path, query, headers = base
    junk = st.binary(max_size=40) | st.sampled_from(
        [
            b"",
            b"%",
            b"%zz",
            b"\xff\xfe",
            b"=",
            b"&&",
            b";",
            b",",
            b"AWS4-HMAC-SHA256 ",
            b"AWS ",
            b"Credential=/////",
        ]
    )
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(["header", "drop", "query", "path", "method", "add"]))
        if target == "header":
            name = draw(st.sampled_from(_MUTABLE_HEADERS))
            value = draw(junk)
            headers = [(k, value if k == name else v) for k, v in headers]
        elif target == "add":
            headers = [*headers, (draw(st.sampled_from(_MUTABLE_HEADERS)), draw(junk))]
        elif target == "drop" and headers:
            del headers[draw(st.integers(0, len(headers) - 1))]
        elif target == "query":
            items = query.split(b"&")
            i = draw(st.integers(0, len(items)))
            items.insert(i, draw(junk))
            if draw(st.booleans()) and len(items) > 1:
                del items[draw(st.integers(0, len(items) - 1))]
            query = b"&".join(items)
        elif target == "path":
            path = path + draw(junk)
        else:
            method = draw(st.sampled_from(["PUT", "DELETE", "get", "\u00e9"]))
    return method, path, query, headers


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mutated(), st.integers(-(10**6), 10**6))
def test_mutations_never_crash(request: Request, offset: int) -> None:
    method, path, query, headers = request
    error: S3Error | None = None
    try:
        authenticate(method, path, query, headers, lookup, now() + timedelta(seconds=offset))
    except S3Error as err:
        error = err
    if error is not None:
        assert 400 <= error.status < 500 or error.code == "NotImplemented"
