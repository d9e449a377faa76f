"""The S3 API in process (httpx ASGITransport, SigV4 by botocore): objects, copies, conditionals."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from typing import TYPE_CHECKING

import pytest
from defusedxml.ElementTree import fromstring

from examples.object_store_gateway.checksums import Digests

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from .conftest import InProcessGateway

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def xml(body: bytes) -> Element:
    root: Element = fromstring(body)
    return root


def find(el: Element, path: str) -> str:
    node = el.find(_ns(path))
    assert node is not None, path
    return node.text or ""


def _ns(path: str) -> str:
    return "/".join(NS + p for p in path.split("/"))


def error_code(body: bytes) -> str:
    root = xml(body)
    assert root.tag == "Error"
    assert root.findtext("RequestId")
    return root.findtext("Code") or ""


async def make_bucket(gw: InProcessGateway, name: str = "bkt") -> None:
    r = await gw.request("PUT", f"/{name}")
    assert r.status_code == 200, r.text


async def test_health_and_metrics_need_no_auth(gateway_app: InProcessGateway) -> None:
    r = await gateway_app.request("GET", "/healthz", signed=False)
    assert r.status_code == 200
    await make_bucket(gateway_app)
    r = await gateway_app.request("GET", "/metrics", signed=False)
    assert r.status_code == 200
    text = r.text
    for name in (
        "aiocache_gateway_requests_total",
        "aiocache_gateway_request_seconds_bucket",
        "aiocache_gateway_received_bytes_total",
        "aiocache_gateway_sent_bytes_total",
        "aiocache_gateway_requests_in_flight",
        "aiocache_gateway_cache_results_total",
        "aiocache_inode_cached_bytes",
        "aiocache_inode_dirty_bytes",
    ):
        assert name in text, name
    assert 'aiocache_gateway_requests_total{operation="CreateBucket",status="200"} 1.0' in text


async def test_unsigned_request_is_refused(gateway_app: InProcessGateway) -> None:
    r = await gateway_app.request("GET", "/", signed=False)
    assert r.status_code == 403
    assert error_code(r.content) == "AccessDenied"
    assert r.headers["x-amz-request-id"]


async def test_put_get_head_delete(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await make_bucket(gw)
    data = os.urandom(300_000)
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    r = await gw.request(
        "PUT",
        "/bkt/dir/obj.bin",
        data,
        {
            "content-type": "application/x-test",
            "content-md5": md5,
            "x-amz-meta-colour": "blue",
            "cache-control": "max-age=60",
            "content-disposition": "attachment",
        },
    )
    assert r.status_code == 200, r.text
    etag = r.headers["etag"]
    assert etag == f'"{hashlib.md5(data).hexdigest()}"'
    r = await gw.request("GET", "/bkt/dir/obj.bin")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["etag"] == etag
    assert r.headers["content-type"] == "application/x-test"
    assert r.headers["x-amz-meta-colour"] == "blue"
    assert r.headers["cache-control"] == "max-age=60"
    assert r.headers["x-cache"] == "HIT"  # written through the cache: hot
    assert r.headers["x-amz-request-id"]
    r = await gw.request("HEAD", "/bkt/dir/obj.bin")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(data))
    assert r.content == b""
    r = await gw.request("DELETE", "/bkt/dir/obj.bin")
    assert r.status_code == 204
    r = await gw.request("GET", "/bkt/dir/obj.bin")
    assert r.status_code == 404
    assert error_code(r.content) == "NoSuchKey"
    r = await gw.request("HEAD", "/bkt/dir/obj.bin")
    assert r.status_code == 404
    # Deleting again is fine, as in S3.
    r = await gw.request("DELETE", "/bkt/dir/obj.bin")
    assert r.status_code == 204


async def test_cold_read_is_a_miss_then_a_hit(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await make_bucket(gw)
    data = os.urandom(200_000)
    assert (await gw.request("PUT", "/bkt/k", data)).status_code == 200
    state = gw.app.state.gateway
    await state.bodies.close()  # forget every inode: the next read comes from the file
    r = await gw.request("GET", "/bkt/k")
    assert r.headers["x-cache"] == "MISS"
    assert r.content == data
    r = await gw.request("GET", "/bkt/k", headers={"range": "bytes=0-9"})
    assert r.headers["x-cache"] == "HIT"
    metrics = (await gw.request("GET", "/metrics", signed=False)).text
    assert 'aiocache_gateway_cache_results_total{result="MISS"} 1.0' in metrics


async def test_ranges(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await make_bucket(gw)
    data = bytes(range(256)) * 40
    await gw.request("PUT", "/bkt/r", data)
    size = len(data)
    for header, start, end in (
        ("bytes=0-9", 0, 10),
        ("bytes=100-", 100, size),
        ("bytes=-5", size - 5, size),
        ("bytes=10-99999", 10, size),
        ("bytes=-99999", 0, size),
    ):
        r = await gw.request("GET", "/bkt/r", headers={"range": header})
        assert r.status_code == 206, header
        assert r.content == data[start:end], header
        assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
    for header in (f"bytes={size}-", "bytes=-0", f"bytes={size + 5}-{size + 9}"):
        r = await gw.request("GET", "/bkt/r", headers={"range": header})
        assert r.status_code == 416, header
        assert error_code(r.content) == "InvalidRange"
        assert r.headers["content-range"] == f"bytes */{size}"
    # Malformed or multiple ranges are ignored, as S3 does: the whole object.
    for header in ("bytes=abc", "items=0-1", "bytes=5-2", "bytes=0-1,4-5"):
        r = await gw.request("GET", "/bkt/r", headers={"range": header})
        assert r.status_code == 200, header
        assert r.content == data


async def test_conditionals(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await make_bucket(gw)
    r = await gw.request("PUT", "/bkt/c", b"conditional")
    etag = r.headers["etag"]
    r = await gw.request("GET", "/bkt/c")
    last_modified = r.headers["last-modified"]
    past = "Sat, 01 Jan 2000 00:00:00 GMT"
    cases = [
        ({"if-match": etag}, 200),
        ({"if-match": '"nope"'}, 412),
        ({"if-match": "*"}, 200),
        ({"if-none-match": etag}, 304),
        ({"if-none-match": '"nope"'}, 200),
        ({"if-modified-since": last_modified}, 304),
        ({"if-modified-since": past}, 200),
        ({"if-unmodified-since": past}, 412),
        ({"if-unmodified-since": last_modified}, 200),
        # If-Match wins over If-Unmodified-Since; If-None-Match over If-Modified-Since.
        ({"if-match": etag, "if-unmodified-since": past}, 200),
        ({"if-none-match": '"nope"', "if-modified-since": last_modified}, 200),
        # Bad dates are ignored.
        ({"if-modified-since": "yesterday"}, 200),
    ]
    for headers, status in cases:
        r = await gw.request("GET", "/bkt/c", headers=headers)
        assert r.status_code == status, headers
        if status == 304:
            assert r.content == b""
            assert r.headers["etag"] == etag or "etag" not in r.headers
        if status == 412:
            assert error_code(r.content) == "PreconditionFailed"
        r = await gw.request("HEAD", "/bkt/c", headers=headers)
        assert r.status_code == status, headers


async def test_response_overrides_and_checksum_mode(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await make_bucket(gw)
    data = b"checksummed body"
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    r = await gw.request("PUT", "/bkt/o", data, {"x-amz-checksum-crc32": crc})
    assert r.status_code == 200, r.text
    assert r.headers["x-amz-checksum-crc32"] == crc
    url = "/bkt/o?response-content-type=text%2Fplain&response-content-disposition=inline"
    r = await gw.request("GET", url)
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["content-disposition"] == "inline"
    r = await gw.request("GET", "/bkt/o")
    assert "x-amz-checksum-crc32" not in r.headers
    r = await gw.request("GET", "/bkt/o", headers={"x-amz-checksum-mode": "ENABLED"})
    assert r.headers["x-amz-checksum-crc32"] == crc
    # A wrong checksum is BadDigest and stores nothing.
    r = await gw.request("PUT", "/bkt/bad", data, {"x-amz-checksum-crc32": "AAAAAA=="})
    assert r.status_code == 400
    assert error_code(r.content) == "BadDigest"
    r = await gw.request("HEAD", "/bkt/bad")
    assert r.status_code == 404


async def test_every_checksum_algorithm(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await make_bucket(gw)
    data = os.urandom(5000)
    for algorithm in ("crc32", "crc32c", "crc64nvme", "sha1", "sha256"):
        d = Digests({algorithm})
        d.update(data)
        value = d.b64(algorithm)
        r = await gw.request(
            "PUT", f"/bkt/{algorithm}", data, {f"x-amz-checksum-{algorithm}": value}
        )
        assert r.status_code == 200, (algorithm, r.text)
        r = await gw.request(
            "HEAD", f"/bkt/{algorithm}", headers={"x-amz-checksum-mode": "ENABLED"}
        )
        assert r.headers[f"x-amz-checksum-{algorithm}"] == value
        bad = base64.b64encode(bytes(len(d.digest(algorithm)))).decode()
        r = await gw.request("PUT", "/bkt/x", data, {f"x-amz-checksum-{algorithm}": bad})
        assert error_code(r.content) == "BadDigest", algorithm
    r = await gw.request("PUT", "/bkt/md5", data, {"content-md5": "bm90IGFuIG1kNQ=="})
    assert error_code(r.content) == "InvalidDigest"


async def test_overwrite_keeps_a_pinned_body(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await make_bucket(gw)
    await gw.request("PUT", "/bkt/k", b"first version")
    state = gw.app.state.gateway
    old = state.storage.get_object("bkt", "k")
    state.storage.pin(old.body_ids)  # as a GET in flight does
    await gw.request("PUT", "/bkt/k", b"second version")
    path = state.storage.body_path(old.body_ids[0])
    with open(path, "rb") as f:  # noqa: ASYNC230  (a small local file)
        assert f.read() == b"first version"
    state.storage.unpin(old.body_ids)
    r = await gw.request("GET", "/bkt/k")
    assert r.content == b"second version"


async def test_copy_object(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await make_bucket(gw)
    await make_bucket(gw, "other")
    r = await gw.request(
        "PUT", "/bkt/src", b"copy me", {"content-type": "text/x-src", "x-amz-meta-a": "1"}
    )
    etag = r.headers["etag"]
    r = await gw.request("PUT", "/other/dst", headers={"x-amz-copy-source": "/bkt/src"})
    assert r.status_code == 200, r.text
    assert find(xml(r.content), "ETag") == etag
    r = await gw.request("GET", "/other/dst")
    assert r.content == b"copy me"
    assert r.headers["content-type"] == "text/x-src"
    assert r.headers["x-amz-meta-a"] == "1"
    # REPLACE takes the request's metadata.
    r = await gw.request(
        "PUT",
        "/bkt/dst2",
        headers={
            "x-amz-copy-source": "bkt/src",
            "x-amz-metadata-directive": "REPLACE",
            "content-type": "text/x-new",
            "x-amz-meta-b": "2",
        },
    )
    assert r.status_code == 200
    r = await gw.request("HEAD", "/bkt/dst2")
    assert r.headers["content-type"] == "text/x-new"
    assert "x-amz-meta-a" not in r.headers
    assert r.headers["x-amz-meta-b"] == "2"
    # Onto itself: only with REPLACE.
    r = await gw.request("PUT", "/bkt/src", headers={"x-amz-copy-source": "/bkt/src"})
    assert r.status_code == 400
    assert error_code(r.content) == "InvalidRequest"
    r = await gw.request(
        "PUT",
        "/bkt/src",
        headers={
            "x-amz-copy-source": "/bkt/src",
            "x-amz-metadata-directive": "REPLACE",
            "x-amz-meta-c": "3",
        },
    )
    assert r.status_code == 200
    r = await gw.request("GET", "/bkt/src")
    assert r.content == b"copy me"
    assert r.headers["x-amz-meta-c"] == "3"
    # Conditional copies.
    for headers, status in (
        ({"x-amz-copy-source-if-match": '"nope"'}, 412),
        ({"x-amz-copy-source-if-none-match": etag}, 412),
        ({"x-amz-copy-source-if-unmodified-since": "Sat, 01 Jan 2000 00:00:00 GMT"}, 412),
        ({"x-amz-copy-source-if-match": etag}, 200),
    ):
        r = await gw.request(
            "PUT", "/bkt/cond", headers={"x-amz-copy-source": "/bkt/src", **headers}
        )
        assert r.status_code == status, headers
    r = await gw.request("PUT", "/bkt/x", headers={"x-amz-copy-source": "/bkt/missing"})
    assert error_code(r.content) == "NoSuchKey"
    r = await gw.request("PUT", "/bkt/x", headers={"x-amz-copy-source": "/nobucket/k"})
    assert error_code(r.content) == "NoSuchBucket"
    # Deleting the source leaves the copy intact (shared body, counted references).
    await gw.request("DELETE", "/bkt/src")
    r = await gw.request("GET", "/other/dst")
    assert r.content == b"copy me"


async def test_delete_objects(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await make_bucket(gw)
    for k in ("a", "b", "c"):
        await gw.request("PUT", f"/bkt/{k}", b"x")

    def body(keys: list[str], quiet: bool) -> bytes:
        objs = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
        q = "<Quiet>true</Quiet>" if quiet else ""
        return f"<Delete>{q}{objs}</Delete>".encode()

    def md5(b: bytes) -> dict[str, str]:
        return {"content-md5": base64.b64encode(hashlib.md5(b).digest()).decode()}

    b = body(["a", "zz"], False)
    r = await gw.request("POST", "/bkt?delete", b, md5(b))
    assert r.status_code == 200, r.text
    root = xml(r.content)
    assert [e.text for e in root.iter(NS + "Key")] == ["a", "zz"]
    b = body(["b", "c"], True)
    r = await gw.request("POST", "/bkt?delete", b, md5(b))
    assert list(xml(r.content)) == []
    r = await gw.request("GET", "/bkt?list-type=2")
    assert xml(r.content).find(NS + "Contents") is None
    r = await gw.request("POST", "/bkt?delete", b"<Delete>", md5(b"<Delete>"))
    assert error_code(r.content) == "MalformedXML"


async def test_buckets(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await make_bucket(gw, "bk1")
    r = await gw.request("PUT", "/bk1")
    assert r.status_code == 409
    assert error_code(r.content) == "BucketAlreadyOwnedByYou"
    r = await gw.request("GET", "/")
    assert [e.text for e in xml(r.content).iter(NS + "Name")] == ["bk1"]
    assert (await gw.request("HEAD", "/bk1")).status_code == 200
    assert (await gw.request("HEAD", "/bk2")).status_code == 404
    r = await gw.request("GET", "/bk1?location")
    assert r.status_code == 200
    assert xml(r.content).tag == NS + "LocationConstraint"
    await gw.request("PUT", "/bk1/k", b"x")
    r = await gw.request("DELETE", "/bk1")
    assert r.status_code == 409
    assert error_code(r.content) == "BucketNotEmpty"
    await gw.request("DELETE", "/bk1/k")
    assert (await gw.request("DELETE", "/bk1")).status_code == 204
    r = await gw.request("DELETE", "/bk1")
    assert error_code(r.content) == "NoSuchBucket"
    for bad in ("ab", "UPPER", "a..b", "192.168.1.1", "-start", "metrics", "x" * 64):
        r = await gw.request("PUT", f"/{bad}")
        assert r.status_code == 400, bad
        assert error_code(r.content) == "InvalidBucketName", bad


async def test_empty_object(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await make_bucket(gw)
    r = await gw.request("PUT", "/bkt/empty", b"")
    assert r.status_code == 200
    assert r.headers["etag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    r = await gw.request("GET", "/bkt/empty")
    assert r.status_code == 200
    assert r.content == b""
    assert gw.app.state.gateway.storage.body_files() == []
