"""Proxy mode: gateways in process in front of a moto server, their TTL on an injected clock."""

from __future__ import annotations

import contextlib
import itertools
import urllib.parse
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from defusedxml.ElementTree import fromstring

from examples.object_store_gateway.app import create_app
from examples.object_store_gateway.config import ConfigError, GatewayConfig, parse_args
from examples.object_store_gateway.proxy import Proxy, parse_backend

from ...backing.s3_servers import ACCESS_KEY as UP_KEY
from ...backing.s3_servers import SECRET_KEY as UP_SECRET
from ...backing.s3_servers import Endpoint, MotoServer
from .conftest import ACCESS_KEY, SECRET_KEY, InProcessGateway

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
TTL = 1.0
_buckets = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def moto() -> Iterator[Endpoint]:
    server = MotoServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def bucket(moto: Endpoint) -> str:
    name = f"proxy-{next(_buckets)}"
    moto.boto3().create_bucket(Bucket=name)
    return name


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gateways(
    tmp_path: Path, moto: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], contextlib.AbstractAsyncContextManager[tuple[InProcessGateway, Clock]]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", UP_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", UP_SECRET)
    names = itertools.count()

    @contextlib.asynccontextmanager
    async def start(backend: str) -> AsyncIterator[tuple[InProcessGateway, Clock]]:
        data = tmp_path / f"gw{next(names)}"
        config = GatewayConfig(
            data_dir=str(data),
            memory_limit=16 << 20,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            backend=backend,
            revalidate=TTL,
        )
        app = create_app(config)
        async with app.router.lifespan_context(app):
            proxy: Proxy | None = app.state.proxy.current
            assert proxy is not None
            clock = Clock()
            proxy.clock = clock
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
                yield InProcessGateway(c, app, data), clock

    return start


def backend(moto: Endpoint, bucket: str, prefix: str = "") -> str:
    path = f"/{prefix}" if prefix else ""
    return f"s3://{bucket}{path}?endpoint={urllib.parse.quote(moto.url, safe='')}"


def upstream_get(moto: Endpoint, bucket: str, key: str) -> bytes:
    return bytes(moto.boto3().get_object(Bucket=bucket, Key=key)["Body"].read())


def upstream_put(moto: Endpoint, bucket: str, key: str, data: bytes) -> None:
    moto.boto3().put_object(Bucket=bucket, Key=key, Body=data)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def test_backend_url_is_parsed() -> None:
    up = parse_backend("s3://data/some/prefix?endpoint=http://127.0.0.1:9000/")
    assert (up.bucket, up.prefix, up.endpoint) == ("data", "some/prefix/", "http://127.0.0.1:9000")
    assert parse_backend("s3://data?endpoint=https://s3.example").prefix == ""
    config = parse_args(["--backend", "s3://b?endpoint=http://h:1", "--revalidate", "2.5"], {})
    assert config.backend == "s3://b?endpoint=http://h:1"
    assert config.revalidate == 2.5


@pytest.mark.parametrize(
    "value",
    ["s3://", "s3://bucket", "s3://bucket?endpoint=ftp://h", "http://bucket?endpoint=http://h"],
)
def test_bad_backend_urls_are_refused_with_the_form(value: str) -> None:
    with pytest.raises(ConfigError, match=r"s3://BUCKET\[/PREFIX\]\?endpoint=URL|endpoint=URL"):
        parse_args(["--backend", value], {})


async def test_missing_upstream_credentials_are_refused(
    tmp_path: Path, moto: Endpoint, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    config = GatewayConfig(data_dir=str(tmp_path / "d"), backend=backend(moto, bucket))
    app = create_app(config)
    with pytest.raises(ValueError, match="AWS_ACCESS_KEY_ID"):
        async with app.router.lifespan_context(app):
            pass
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", UP_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", UP_SECRET)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "many")
    again = create_app(config)
    with pytest.raises(ValueError, match="AWS_MAX_ATTEMPTS"):
        async with again.router.lifespan_context(again):
            pass


# --------------------------------------------------------------------------------------------
# Reads through the cache
# --------------------------------------------------------------------------------------------


async def test_get_head_and_ranges_through_the_cache(
    gateways: Any, moto: Endpoint, bucket: str
) -> None:
    data = bytes(range(256)) * 1024
    upstream_put(moto, bucket, "dir/obj", data)
    async with gateways(backend(moto, bucket)) as (gw, _clock):
        r = await gw.request("GET", f"/{bucket}/dir/obj")
        assert r.status_code == 200
        assert r.content == data
        assert r.headers["x-cache"] == "MISS"
        etag = r.headers["etag"]
        r = await gw.request("GET", f"/{bucket}/dir/obj")
        assert r.content == data
        assert r.headers["x-cache"] == "HIT"
        r = await gw.request("HEAD", f"/{bucket}/dir/obj")
        assert r.status_code == 200
        assert r.headers["content-length"] == str(len(data))
        assert r.headers["etag"] == etag
        r = await gw.request("GET", f"/{bucket}/dir/obj", headers={"range": "bytes=10-19"})
        assert r.status_code == 206
        assert r.content == data[10:20]
        assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
        r = await gw.request("GET", f"/{bucket}/dir/obj", headers={"if-none-match": etag})
        assert r.status_code == 304
        assert r.headers["etag"] == etag
        r = await gw.request("GET", f"/{bucket}/dir/obj", headers={"if-match": '"other"'})
        assert r.status_code == 412
        r = await gw.request("GET", f"/{bucket}/missing")
        assert r.status_code == 404
        assert b"NoSuchKey" in r.content
        r = await gw.request("GET", "/other-bucket/dir/obj")
        assert r.status_code == 404
        assert b"NoSuchBucket" in r.content


async def test_two_gateways_stay_coherent_within_the_ttl(
    gateways: Any, moto: Endpoint, bucket: str
) -> None:
    upstream_put(moto, bucket, "k", b"v1")
    async with (
        gateways(backend(moto, bucket)) as (a, clock_a),
        gateways(backend(moto, bucket)) as (b, clock_b),
    ):
        assert (await a.request("GET", f"/{bucket}/k")).content == b"v1"
        assert (await b.request("GET", f"/{bucket}/k")).content == b"v1"
        # A write through A is acknowledged once the upstream has it; A sees it at once.
        r = await a.request("PUT", f"/{bucket}/k", b"v2-through-a")
        assert r.status_code == 200
        assert upstream_get(moto, bucket, "k") == b"v2-through-a"
        assert (await a.request("GET", f"/{bucket}/k")).content == b"v2-through-a"
        # B trusts what it knows for the TTL, then asks and follows.
        assert (await b.request("GET", f"/{bucket}/k")).content == b"v1"
        clock_b.now += TTL
        r = await b.request("GET", f"/{bucket}/k")
        assert r.content == b"v2-through-a"
        assert r.headers["x-cache"] == "MISS"
        # Unchanged after another TTL: a 304 upstream keeps the cached pages.
        clock_b.now += TTL
        r = await b.request("GET", f"/{bucket}/k")
        assert r.content == b"v2-through-a"
        assert r.headers["x-cache"] == "HIT"
        # A write made directly upstream: seen by both after their TTL.
        upstream_put(moto, bucket, "k", b"v3-direct")
        assert (await a.request("GET", f"/{bucket}/k")).content == b"v2-through-a"
        clock_a.now += TTL
        clock_b.now += TTL
        assert (await a.request("GET", f"/{bucket}/k")).content == b"v3-direct"
        assert (await b.request("GET", f"/{bucket}/k")).content == b"v3-direct"
        # A delete through B: B at once, A after its TTL.
        assert (await b.request("DELETE", f"/{bucket}/k")).status_code == 204
        assert (await b.request("GET", f"/{bucket}/k")).status_code == 404
        assert (await a.request("GET", f"/{bucket}/k")).status_code == 200
        clock_a.now += TTL
        assert (await a.request("GET", f"/{bucket}/k")).status_code == 404


async def test_a_replacement_within_the_ttl_is_never_mixed(
    gateways: Any, moto: Endpoint, bucket: str
) -> None:
    """A fill of a version replaced upstream meets If-Match, asks again, serves the new one."""
    old = b"o" * (256 << 10)
    upstream_put(moto, bucket, "big", old)
    async with gateways(backend(moto, bucket)) as (gw, _clock):
        r = await gw.request("HEAD", f"/{bucket}/big")  # knows the version, caches no bytes
        assert r.status_code == 200
        upstream_put(moto, bucket, "big", b"n" * 1000)
        r = await gw.request("GET", f"/{bucket}/big")
        assert r.status_code == 200
        assert r.content == b"n" * 1000


# --------------------------------------------------------------------------------------------
# Passed through
# --------------------------------------------------------------------------------------------


async def test_listings_copies_and_multipart_pass_through_under_a_prefix(
    gateways: Any, moto: Endpoint, bucket: str
) -> None:
    async with gateways(backend(moto, bucket, "tenant")) as (gw, _clock):
        assert (await gw.request("PUT", f"/{bucket}/a/one", b"1")).status_code == 200
        assert (await gw.request("PUT", f"/{bucket}/a/two", b"22")).status_code == 200
        assert upstream_get(moto, bucket, "tenant/a/one") == b"1"
        r = await gw.request("GET", f"/{bucket}?list-type=2&prefix=a/")
        assert r.status_code == 200
        root = fromstring(r.content)
        keys = [e.text for e in root.iter(f"{NS}Key")]
        assert keys == ["a/one", "a/two"]
        assert root.findtext(f"{NS}Prefix") == "a/"
        # A copy names the served bucket; the upstream gets its own key.
        await gw.request("GET", f"/{bucket}/a/copy")  # a miss remembered as nothing
        r = await gw.request(
            "PUT", f"/{bucket}/a/copy", headers={"x-amz-copy-source": f"/{bucket}/a/two"}
        )
        assert r.status_code == 200, r.content
        assert upstream_get(moto, bucket, "tenant/a/copy") == b"22"
        assert (await gw.request("GET", f"/{bucket}/a/copy")).content == b"22"
        r = await gw.request(
            "PUT", f"/{bucket}/a/copy", headers={"x-amz-copy-source": "/elsewhere/x"}
        )
        assert r.status_code == 400
        assert b"InvalidArgument" in r.content
        # Multipart: create, one part, complete; the cached version is dropped.
        r = await gw.request("POST", f"/{bucket}/a/one?uploads")
        assert r.status_code == 200
        upload = fromstring(r.content).findtext(f"{NS}UploadId")
        assert (await gw.request("GET", f"/{bucket}/a/one")).content == b"1"
        r = await gw.request("PUT", f"/{bucket}/a/one?partNumber=1&uploadId={upload}", b"parted")
        assert r.status_code == 200
        part = r.headers["etag"]
        done = (
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
            f"<ETag>{part}</ETag></Part></CompleteMultipartUpload>"
        ).encode()
        r = await gw.request("POST", f"/{bucket}/a/one?uploadId={upload}", done)
        assert r.status_code == 200, r.content
        assert upstream_get(moto, bucket, "tenant/a/one") == b"parted"
        assert (await gw.request("GET", f"/{bucket}/a/one")).content == b"parted"


async def test_a_body_over_the_limit_is_refused_before_the_upstream_sees_it(
    gateways: Any, moto: Endpoint, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import examples.object_store_gateway.proxy as proxy_module

    monkeypatch.setattr(proxy_module, "MAX_BODY", 1024)
    async with gateways(backend(moto, bucket)) as (gw, _clock):
        r = await gw.request("PUT", f"/{bucket}/big", b"x" * 2048)
        assert r.status_code == 400
        assert b"EntityTooLarge" in r.content
        assert (await gw.request("GET", f"/{bucket}/big")).status_code == 404
        assert (await gw.request("PUT", f"/{bucket}/big", b"x" * 1024)).status_code == 200


async def test_an_unreachable_upstream_is_a_clear_error(
    gateways: Any, moto: Endpoint, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ...backing.s3_servers import free_port

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one refused connection, not five with backoff

    dead = f"s3://{bucket}?endpoint=http://127.0.0.1:{free_port()}"
    async with gateways(dead) as (gw, _clock):
        r = await gw.request("PUT", f"/{bucket}/k", b"x")
        assert r.status_code == 503
        assert b"ServiceUnavailable" in r.content
        r = await gw.request("GET", f"/{bucket}/k")
        assert r.status_code == 503


# --------------------------------------------------------------------------------------------
# The real server, with boto3 (aws-chunked uploads and all)
# --------------------------------------------------------------------------------------------


def test_boto3_through_a_proxy_gateway_process(tmp_path: Path, moto: Endpoint, bucket: str) -> None:
    from .conftest import boto3_client, start_gateway

    gw = start_gateway(
        tmp_path,
        extra_args=["--backend", backend(moto, bucket, "p"), "--revalidate", "0"],
        extra_env={"AWS_ACCESS_KEY_ID": UP_KEY, "AWS_SECRET_ACCESS_KEY": UP_SECRET},
    )
    try:
        s3 = boto3_client(gw)
        data = bytes(range(256)) * 4096
        s3.put_object(Bucket=bucket, Key="x/y", Body=data)
        assert upstream_get(moto, bucket, "p/x/y") == data
        got = s3.get_object(Bucket=bucket, Key="x/y")
        assert got["Body"].read() == data
        assert (
            s3.get_object(Bucket=bucket, Key="x/y", Range="bytes=5-9")["Body"].read() == data[5:10]
        )
        listing = s3.list_objects_v2(Bucket=bucket, Prefix="x/")
        assert [o["Key"] for o in listing["Contents"]] == ["x/y"]
        # --revalidate 0: every read asks, so a direct overwrite is seen at once.
        upstream_put(moto, bucket, "p/x/y", b"direct")
        assert s3.get_object(Bucket=bucket, Key="x/y")["Body"].read() == b"direct"
        s3.delete_object(Bucket=bucket, Key="x/y")
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="x/")
        s3.close()
    except BaseException:
        gw.kill()
        raise
    assert gw.stop() == 0
