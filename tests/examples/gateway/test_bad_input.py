"""Bad input: S3's error and status, never a 500, never a partial object; the gateway stays up."""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

import httpx
import pytest
from defusedxml.ElementTree import fromstring
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from .conftest import InProcessGateway


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def assert_s3_error(status: int, body: bytes, method: str) -> None:
    """A client error, or 501 NotImplemented (S3's answer to an unknown operation)."""
    assert status < 500 or status == 501, (status, body[:300])
    if status >= 400 and method != "HEAD" and body:
        root = fromstring(body)
        assert root.tag == "Error"
        assert root.findtext("Code")
        assert root.findtext("RequestId")
        if status == 501:
            assert root.findtext("Code") == "NotImplemented"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Delete><Object><Key>&lol3;</Key></Object></Delete>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&x;</ETag></Part>
</CompleteMultipartUpload>"""


async def test_named_bad_inputs(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    assert (await gw.request("PUT", "/bkt")).status_code == 200
    cases: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
        ("POST", "/bkt?delete", BILLION_LAUGHS, {}, 400, "MalformedXML"),
        ("POST", "/bkt?delete", b"<Delete" + b"x" * 100, {}, 400, "MalformedXML"),
        (
            "POST",
            "/bkt?delete",
            b"<Delete>" + b" " * (3 << 20) + b"</Delete>",
            {},
            400,
            "MalformedXML",
        ),
        ("PUT", "/bkt/" + "k" * 1025, b"x", {}, 400, "KeyTooLongError"),
        ("PUT", "/bkt/%ff%fe", b"x", {}, 400, "InvalidArgument"),
        ("GET", "/bkt?acl", b"", {}, 501, "NotImplemented"),
        ("GET", "/bkt/k?tagging", b"", {}, 501, "NotImplemented"),
        ("PATCH", "/bkt/k", b"", {}, 405, "MethodNotAllowed"),
        ("GET", "/bkt?list-type=2&max-keys=-1", b"", {}, 400, "InvalidArgument"),
        ("GET", "/bkt?list-type=2&continuation-token=zzz", b"", {}, 400, "InvalidArgument"),
        ("GET", "/bkt?list-type=2&encoding-type=base64", b"", {}, 400, "InvalidArgument"),
        ("GET", "/nobucket?list-type=2", b"", {}, 404, "NoSuchBucket"),
        ("PUT", "/bkt/k", b"abc", {"content-md5": "!!!"}, 400, "InvalidDigest"),
        ("PUT", "/bkt/k", b"abc", {"x-amz-checksum-crc32": "bad"}, 400, "InvalidRequest"),
        ("PUT", "/bkt/k", b"abc", {"x-amz-checksum-whirlpool": "AAAA"}, 400, "InvalidRequest"),
    ]
    for method, url, body, headers, status, code in cases:
        r = await gw.request(method, url, body, headers)
        assert r.status_code == status, (method, url, r.text[:300])
        assert fromstring(r.content).findtext("Code") == code, (method, url)
    r = await gw.request("POST", "/bkt/k?uploadId=x", XXE)
    assert r.status_code in (400, 404)
    assert b"root:" not in r.content
    # Nothing was stored by any of them.
    r = await gw.request("GET", "/bkt?list-type=2")
    assert b"<Contents>" not in r.content


async def test_body_shorter_or_longer_than_declared_stores_nothing(
    gateway_app: InProcessGateway,
) -> None:
    gw = gateway_app
    await gw.request("PUT", "/bkt")
    state = gw.app.state.gateway
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    for declared in ("10", "2"):
        sent.clear()
        headers = gw.sign("PUT", "/bkt/short", b"", payload="UNSIGNED-PAYLOAD")
        headers["content-length"] = declared

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"12345", "more_body": False}

        scope = {
            "type": "http", "method": "PUT", "path": "/bkt/short", "raw_path": b"/bkt/short",
            "query_string": b"", "scheme": "http", "http_version": "1.1",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            + [(b"host", b"gateway")],
        }  # fmt: skip
        await gw.app(scope, receive, send)
        assert sent[0]["status"] == 400
        assert b"IncompleteBody" in sent[1]["body"]  # type: ignore[operator]
    r = await gw.request("HEAD", "/bkt/short")
    assert r.status_code == 404
    assert state.storage.body_files() == []


async def test_upload_cut_off_mid_body_leaves_no_object(gateway_app: InProcessGateway) -> None:
    gw = gateway_app
    await gw.request("PUT", "/bkt")
    state = gw.app.state.gateway
    headers = gw.sign("PUT", "/bkt/cut", b"", payload="UNSIGNED-PAYLOAD")
    headers["content-length"] = str(1 << 20)
    messages: list[dict[str, object]] = [
        {"type": "http.request", "body": b"x" * 100_000, "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        raise AssertionError("no response to a client that left")

    scope = {
        "type": "http", "method": "PUT", "path": "/bkt/cut", "raw_path": b"/bkt/cut",
        "query_string": b"", "scheme": "http", "http_version": "1.1",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"host", b"gateway")],
    }  # fmt: skip
    await gw.app(scope, receive, send)
    assert (await gw.request("HEAD", "/bkt/cut")).status_code == 404
    assert state.storage.body_files() == []
    assert state.store.dirty_bytes == 0


_methods = st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"])
_segment = st.text(
    alphabet=string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@ ", max_size=12
)
_paths = st.lists(_segment, max_size=4).map(lambda parts: "/" + "/".join(parts))
_query_names = st.sampled_from(
    ["uploads", "uploadId", "partNumber", "delete", "location", "list-type", "max-keys",
     "prefix", "delimiter", "continuation-token", "marker", "versionId", "acl", "x", ""]
)  # fmt: skip
_queries = st.lists(st.tuples(_query_names, _segment), max_size=4).map(
    lambda items: "&".join(f"{k}={v}" if v else k for k, v in items)
)
_header_names = st.sampled_from(
    ["range", "if-match", "if-none-match", "if-modified-since", "content-md5",
     "x-amz-checksum-crc32", "x-amz-copy-source", "x-amz-metadata-directive",
     "x-amz-checksum-algorithm", "x-amz-copy-source-range", "content-type", "x-amz-meta-a",
     "x-amz-trailer", "x-amz-decoded-content-length"]
)  # fmt: skip
_header_values = st.text(alphabet=string.printable.replace("\r", "").replace("\n", ""), max_size=30)
_headers = st.dictionaries(_header_names, _header_values, max_size=4)
_bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"<Delete><Object><Key>a</Key></Object></Delete>", b"<a>", XXE]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=_methods, path=_paths, query=_queries, headers=_headers, body=_bodies)
async def test_generated_bad_requests_get_s3_errors(
    gateway_app: InProcessGateway,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    gw = gateway_app
    if not gw.app.state.gateway.storage.bucket_exists("bkt"):
        await gw.request("PUT", "/bkt")
    url = path + ("?" + query if query else "")
    for signed in (True, False):
        try:
            r = await gw.request(method, url, body, headers, signed=signed)
        except (ValueError, httpx.InvalidURL):
            return  # botocore or httpx refuse to build this request at all (e.g. "//::")
        assert_s3_error(r.status_code, r.content, method)
    r = await gw.request("GET", "/healthz", signed=False)
    assert r.status_code == 200
