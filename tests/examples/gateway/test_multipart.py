"""Multipart uploads and listings in process (parts of at least 1 KiB in the fixture)."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from defusedxml.ElementTree import fromstring

if TYPE_CHECKING:
    from .conftest import InProcessGateway

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def texts(body: bytes, tag: str) -> list[str]:
    return [e.text or "" for e in fromstring(body).iter(NS + tag)]


def complete_xml(parts: list[tuple[int, str]]) -> bytes:
    inner = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in parts)
    return f"<CompleteMultipartUpload>{inner}</CompleteMultipartUpload>".encode()


async def test_multipart_upload_copy_complete_and_errors(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await gw.request("PUT", "/mpu")
    await gw.request("PUT", "/mpu/src", bytes(range(256)) * 20)  # 5120 bytes
    r = await gw.request("POST", "/mpu/obj?uploads")
    upload = texts(r.content, "UploadId")[0]
    parts = [os.urandom(2000), os.urandom(1500)]
    etags = []
    for n, data in enumerate(parts, 1):
        r = await gw.request("PUT", f"/mpu/obj?partNumber={n}&uploadId={upload}", data)
        assert r.status_code == 200, r.text
        etags.append(r.headers["etag"])
    r = await gw.request(
        "PUT",
        f"/mpu/obj?partNumber=3&uploadId={upload}",
        headers={"x-amz-copy-source": "/mpu/src", "x-amz-copy-source-range": "bytes=100-1299"},
    )
    assert r.status_code == 200, r.text
    etags.append(texts(r.content, "ETag")[0])
    parts.append((bytes(range(256)) * 20)[100:1300])
    r = await gw.request("GET", f"/mpu/obj?uploadId={upload}")
    assert texts(r.content, "PartNumber") == ["1", "2", "3"]
    r = await gw.request("GET", "/mpu?uploads")
    assert texts(r.content, "UploadId") == [upload]
    # Errors: order, unknown part, too small a middle part.
    for body, code in (
        (complete_xml([(2, etags[1]), (1, etags[0])]), "InvalidPartOrder"),
        (complete_xml([(1, etags[0]), (9, etags[0])]), "InvalidPart"),
        (complete_xml([(1, '"' + "0" * 32 + '"')]), "InvalidPart"),
    ):
        r = await gw.request("POST", f"/mpu/obj?uploadId={upload}", body)
        assert r.status_code == 400, r.text
        assert fromstring(r.content).findtext("Code") == code
    r = await gw.request("PUT", f"/mpu/obj?partNumber=4&uploadId={upload}", b"tiny")
    tiny = r.headers["etag"]
    r = await gw.request("PUT", f"/mpu/obj?partNumber=5&uploadId={upload}", b"last")
    last = r.headers["etag"]
    r = await gw.request(
        "POST", f"/mpu/obj?uploadId={upload}", complete_xml([(1, etags[0]), (4, tiny), (5, last)])
    )
    assert fromstring(r.content).findtext("Code") == "EntityTooSmall"
    r = await gw.request(
        "POST", f"/mpu/obj?uploadId={upload}", complete_xml(list(enumerate(etags, 1)))
    )
    assert r.status_code == 200, r.text
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    expected = f'"{hashlib.md5(md5s).hexdigest()}-3"'
    assert texts(r.content, "ETag") == [expected]
    whole = b"".join(parts)
    r = await gw.request("GET", "/mpu/obj")
    assert r.content == whole
    assert r.headers["etag"] == expected
    # A range across the part boundaries.
    r = await gw.request("GET", "/mpu/obj", headers={"range": "bytes=1990-3600"})
    assert r.status_code == 206
    assert r.content == whole[1990:3601]
    # The upload is gone; the unused parts 4 and 5 were freed.
    r = await gw.request("GET", f"/mpu/obj?uploadId={upload}")
    assert fromstring(r.content).findtext("Code") == "NoSuchUpload"
    # Abort frees the parts of another upload.
    r = await gw.request("POST", "/mpu/gone?uploads")
    other = texts(r.content, "UploadId")[0]
    await gw.request("PUT", f"/mpu/gone?partNumber=1&uploadId={other}", b"abc")
    assert (await gw.request("DELETE", f"/mpu/gone?uploadId={other}")).status_code == 204
    r = await gw.request("PUT", f"/mpu/gone?partNumber=0&uploadId={other}", b"abc")
    assert fromstring(r.content).findtext("Code") == "InvalidArgument"


async def test_listing_v2_and_v1(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await gw.request("PUT", "/lsb")
    keys = ["a", "a/1", "a/2", "b c+d", "c/x/1", "c/y", "d"]
    for k in keys:
        await gw.request("PUT", "/lsb/" + quote(k), b"x")
    r = await gw.request("GET", "/lsb?list-type=2&delimiter=/")
    assert texts(r.content, "Key") == ["a", "b c+d", "d"]
    assert texts(r.content, "Prefix")[1:] == ["a/", "c/"]
    assert texts(r.content, "KeyCount") == ["5"]
    # Pages of two, by continuation token; IsTruncated exact.
    seen: list[str] = []
    token = None
    while True:
        url = "/lsb?list-type=2&max-keys=2&delimiter=/"
        if token:
            url += "&continuation-token=" + quote(token, safe="")
        r = await gw.request("GET", url)
        seen += texts(r.content, "Key") + texts(r.content, "Prefix")[1:]
        truncated = texts(r.content, "IsTruncated") == ["true"]
        tokens = texts(r.content, "NextContinuationToken")
        assert bool(tokens) == truncated
        if not truncated:
            break
        token = tokens[0]
    assert sorted(seen) == ["a", "a/", "b c+d", "c/", "d"]
    r = await gw.request("GET", "/lsb?list-type=2&start-after=c/x/1&encoding-type=url")
    assert texts(r.content, "Key") == ["c/y", "d"]
    r = await gw.request("GET", "/lsb?list-type=2&prefix=b&encoding-type=url")
    assert texts(r.content, "Key") == ["b%20c%2Bd"]
    r = await gw.request("GET", "/lsb?list-type=2&fetch-owner=true&prefix=d")
    assert fromstring(r.content).find(f"{NS}Contents/{NS}Owner") is not None
    # v1: Marker, NextMarker with a delimiter.
    r = await gw.request("GET", "/lsb?delimiter=/&max-keys=2")
    assert texts(r.content, "NextMarker") == ["a/"]
    r = await gw.request("GET", "/lsb?delimiter=/&max-keys=2&marker=a/")
    assert texts(r.content, "Key") == ["b c+d"]
    assert texts(r.content, "Prefix")[1:] == ["c/"]
    assert texts(r.content, "IsTruncated") == ["true"]
    r = await gw.request("GET", "/lsb?marker=c/y")
    assert texts(r.content, "Key") == ["d"]
    assert texts(r.content, "IsTruncated") == ["false"]
