from __future__ import annotations

import base64
import hmac
from datetime import timedelta
from email.utils import formatdate
from urllib.parse import quote

import boto3  # type: ignore[import-untyped]
import pytest

from examples.object_store_gateway.errors import S3Error

from .test_auth import (
    ACCESS,
    ENDPOINT,
    KEYS,
    SECRET,
    check,
    code,
    now,
    presign_v2,
    replace_header,
    sign_v2,
    wire,
)


class TestSigV2:
    @pytest.mark.parametrize("key", KEYS)
    def test_presigned_paths(self, key: str) -> None:
        ctx = check(presign_v2(path="/bucket/" + quote(key, safe="/~")))
        assert (ctx.signature_version, ctx.presigned, ctx.payload) == (2, True, "unsigned")

    @pytest.mark.parametrize(
        "query",
        [
            "",
            "uploads",
            "uploadId=abc&partNumber=2",
            "response-content-type=text%2Fplain&response-content-disposition=attachment",
            "versionId=null&prefix=ignored",
            "acl",
            "delete",
        ],
    )
    def test_header_and_presigned_subresources(self, query: str) -> None:
        ctx = check(
            sign_v2("POST", query=query, headers={"x-amz-meta-x": " a ", "Content-Type": "t/p"})
        )
        assert (ctx.signature_version, ctx.presigned) == (2, False)
        assert check(presign_v2(query=query)).presigned

    def test_content_md5_is_signed(self) -> None:
        request = sign_v2("PUT", headers={"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="})
        check(request)
        assert code(replace_header(request, b"content-md5", b"XXXXXXXXXXXXXXXXXXXXXX==")) == (
            "SignatureDoesNotMatch"
        )

    def test_x_amz_date_blanks_the_date_line(self) -> None:
        # S3: with x-amz-date present, the Date line of the string to sign is empty.
        amz_date = formatdate(usegmt=True)
        sts = f"GET\n\n\n\nx-amz-date:{amz_date}\n/bucket/key".encode()
        sig = base64.b64encode(hmac.digest(SECRET.encode(), sts, "sha1"))
        headers = [
            (b"x-amz-date", amz_date.encode()),
            (b"authorization", b"AWS test-access:" + sig),
        ]
        assert check(("GET", b"/bucket/key", b"", headers)).signature_version == 2

    def test_boto3_default_presign_is_v2(self) -> None:
        client = boto3.client(
            "s3",
            endpoint_url=ENDPOINT,
            aws_access_key_id=ACCESS,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": "bucket", "Key": "k ü"}, ExpiresIn=60
        )
        assert "AWSAccessKeyId=" in url
        assert check(wire("GET", url, {})).signature_version == 2
        with pytest.raises(S3Error) as info:
            check(wire("GET", url, {}), now() + timedelta(seconds=120))
        assert (info.value.code, info.value.message) == ("AccessDenied", "Request has expired")

    @pytest.mark.parametrize(
        "tamper", ["method", "path", "subresource", "signature", "expires", "amz"]
    )
    def test_tampering(self, tamper: str) -> None:
        method, path, query, headers = sign_v2(
            "PUT", query="uploadId=1", headers={"x-amz-meta-a": "b"}
        )
        if tamper == "method":
            method = "GET"
        elif tamper == "path":
            path = b"/bucket/other"
        elif tamper == "subresource":
            query = b"uploadId=2"
        elif tamper == "signature":
            headers = [(k, v[:-2] + b"A=" if k == b"authorization" else v) for k, v in headers]
        elif tamper == "amz":
            headers = [(k, b"c" if k == b"x-amz-meta-a" else v) for k, v in headers]
        else:
            method, path, query, headers = presign_v2()
            query = query.replace(b"Expires=", b"Expires=1")
        assert code((method, path, query, headers)) == "SignatureDoesNotMatch"

    def test_errors(self) -> None:
        assert (
            code(("GET", b"/b/k", b"AWSAccessKeyId=test-access&Signature=x", [])) == "AccessDenied"
        )
        assert code(
            ("GET", b"/b/k", b"AWSAccessKeyId=nobody&Signature=x&Expires=99999999999", [])
        ) == ("InvalidAccessKeyId")
        assert (
            code(("GET", b"/b/k", b"AWSAccessKeyId=a&Signature=x&Expires=soon", []))
            == "AccessDenied"
        )
        assert (
            code(("GET", b"/b/k", b"", [(b"authorization", b"AWS nocolon")])) == "InvalidArgument"
        )
        assert (
            code(("GET", b"/b/k", b"", [(b"authorization", b"AWS test-access:x")]))
            == "AccessDenied"
        )
        request = sign_v2()
        assert code(request, now() + timedelta(minutes=16)) == "RequestTimeTooSkewed"
        assert code(replace_header(sign_v2(), b"date", b"not a date")) == "AccessDenied"
