"""Proxy mode: gateways in process in front of real S3 servers, their TTL on an injected clock.

Every test that talks to an upstream runs on each of them (``upstream`` fixture): moto's
standalone server and a one-node Ceph RGW (skipped, saying why, when the Ceph packages are not
installed). The faults (throttling, a killed store) come from a :class:`FaultProxy` between the
gateway and the upstream. Time is the injected clock, never a sleep.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import urllib.parse
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from defusedxml.ElementTree import fromstring

from examples.object_store_gateway.app import create_app
from examples.object_store_gateway.config import ConfigError, GatewayConfig, parse_args
from examples.object_store_gateway.proxy import Proxy, parse_backend

from ...backing.s3_servers import ACCESS_KEY as UP_KEY
from ...backing.s3_servers import SECRET_KEY as UP_SECRET
from ...backing.s3_servers import Endpoint, FaultProxy
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


@pytest.fixture(params=["moto", "ceph"])
def upstream(request: pytest.FixtureRequest) -> Endpoint:
    """The S3 server the gateways front (session fixtures of tests/conftest.py)."""
    if request.param == "moto":
        return request.getfixturevalue("moto_endpoint")  # type: ignore[no-any-return]
    http, _https = request.getfixturevalue("ceph_endpoints")
    return http  # type: ignore[no-any-return]


@pytest.fixture
def bucket(upstream: Endpoint) -> str:
    name = f"proxy-{next(_buckets)}-{random.getrandbits(32):08x}"
    upstream.boto3().create_bucket(Bucket=name)
    return name


@pytest.fixture
def faults(upstream: Endpoint) -> Iterator[FaultProxy]:
    """A misbehaving TCP proxy between the gateways and the upstream."""
    proxy = FaultProxy(int(upstream.url.rsplit(":", 1)[1]))
    try:
        yield proxy
    finally:
        proxy.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gateways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], contextlib.AbstractAsyncContextManager[tuple[InProcessGateway, Clock]]]:
    """Start an in-process gateway over an ``s3://`` backend; each has its own fake clock.

    Each one builds its own upstream clients, so a fresh gateway holds no pooled connection:
    its first request to the upstream opens a new one (the fault proxy decides per connection).
    """
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


def backend(url: str, bucket: str, prefix: str = "") -> str:
    """The ``--backend`` value for ``bucket`` of the S3 server at ``url``."""
    path = f"/{prefix}" if prefix else ""
    return f"s3://{bucket}{path}?endpoint={urllib.parse.quote(url, safe='')}"


def upstream_get(up: Endpoint, bucket: str, key: str) -> bytes:
    return bytes(up.boto3().get_object(Bucket=bucket, Key=key)["Body"].read())


def upstream_put(up: Endpoint, bucket: str, key: str, data: bytes) -> None:
    up.boto3().put_object(Bucket=bucket, Key=key, Body=data)


def upstream_has(up: Endpoint, bucket: str, key: str) -> bool:
    try:
        up.boto3().head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise
    return True


def pattern(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ...backing.s3_servers import free_port

    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    # Refused before any request: no server behind the endpoint is needed.
    dead = backend(f"http://127.0.0.1:{free_port()}", "b")
    config = GatewayConfig(data_dir=str(tmp_path / "d"), backend=dead)
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
    gateways: Any, upstream: Endpoint, bucket: str
) -> None:
    data = bytes(range(256)) * 1024
    upstream_put(upstream, bucket, "dir/obj", data)
    async with gateways(backend(upstream.url, bucket)) as (gw, _clock):
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


async def test_an_out_of_band_overwrite_is_revalidated_after_the_ttl(
    gateways: Any, upstream: Endpoint, bucket: str
) -> None:
    old, new = pattern(300_000, seed=1), pattern(123_457, seed=2)
    upstream_put(upstream, bucket, "k", old)
    async with gateways(backend(upstream.url, bucket)) as (gw, clock):
        r = await gw.request("GET", f"/{bucket}/k")
        assert (r.content, r.headers["x-cache"]) == (old, "MISS")
        old_etag = r.headers["etag"]
        upstream_put(upstream, bucket, "k", new)  # behind the gateway's back
        # Within the TTL the gateway trusts what it knows and asks nothing.
        clock.now += TTL * 0.99
        r = await gw.request("GET", f"/{bucket}/k", headers={"range": "bytes=1000-1999"})
        assert (r.status_code, r.content, r.headers["x-cache"]) == (206, old[1000:2000], "HIT")
        assert r.headers["etag"] == old_etag
        # At the TTL it asks with If-None-Match, sees the new version and serves only that.
        clock.now += TTL * 0.01
        r = await gw.request("HEAD", f"/{bucket}/k")
        assert r.headers["content-length"] == str(len(new))
        new_etag = r.headers["etag"]
        assert new_etag != old_etag
        r = await gw.request("GET", f"/{bucket}/k", headers={"range": "bytes=1000-1999"})
        assert (r.status_code, r.content, r.headers["x-cache"]) == (206, new[1000:2000], "MISS")
        assert r.headers["content-range"] == f"bytes 1000-1999/{len(new)}"
        r = await gw.request("GET", f"/{bucket}/k")
        assert (r.content, r.headers["etag"]) == (new, new_etag)
        r = await gw.request("GET", f"/{bucket}/k", headers={"if-none-match": old_etag})
        assert r.status_code == 200  # the old validator no longer matches
        # Deleted upstream: NoSuchKey after the next TTL, not the cached bytes.
        upstream.boto3().delete_object(Bucket=bucket, Key="k")
        assert (await gw.request("GET", f"/{bucket}/k")).content == new
        clock.now += TTL
        r = await gw.request("GET", f"/{bucket}/k")
        assert r.status_code == 404
        assert b"NoSuchKey" in r.content


async def test_cold_reads_go_upstream_in_large_ranged_gets(
    gateways: Any, upstream: Endpoint, bucket: str
) -> None:
    from examples.object_store_gateway.proxy import PROXY_READAHEAD_REQUEST

    size = 6 * PROXY_READAHEAD_REQUEST
    data = pattern(size, seed=5)
    upstream_put(upstream, bucket, "big", data)
    async with gateways(backend(upstream.url, bucket)) as (gw, _clock):
        r = await gw.request("GET", f"/{bucket}/big")
        assert r.content == data
        proxy: Proxy = gw.app.state.proxy.current
        obj = proxy._entries["big"].obj
        # The first read of 64 KiB, then readahead windows cut into requests of at most
        # PROXY_READAHEAD_REQUEST bytes (the library's 256 KiB default would take 24 or more).
        assert obj.stats.requests["GetObject"] <= size // PROXY_READAHEAD_REQUEST + 2
        assert obj.stats.bytes_downloaded == size


async def test_two_gateways_stay_coherent_within_the_ttl(
    gateways: Any, upstream: Endpoint, bucket: str
) -> None:
    upstream_put(upstream, bucket, "k", b"v1")
    async with (
        gateways(backend(upstream.url, bucket)) as (a, clock_a),
        gateways(backend(upstream.url, bucket)) as (b, clock_b),
    ):
        assert (await a.request("GET", f"/{bucket}/k")).content == b"v1"
        assert (await b.request("GET", f"/{bucket}/k")).content == b"v1"
        # A write through A is acknowledged once the upstream has it; A sees it at once.
        r = await a.request("PUT", f"/{bucket}/k", b"v2-through-a")
        assert r.status_code == 200
        assert upstream_get(upstream, bucket, "k") == b"v2-through-a"
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
        upstream_put(upstream, bucket, "k", b"v3-direct")
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
    gateways: Any, upstream: Endpoint, bucket: str
) -> None:
    """A fill of a version replaced upstream meets If-Match, asks again, serves the new one."""
    old = b"o" * (256 << 10)
    upstream_put(upstream, bucket, "big", old)
    async with gateways(backend(upstream.url, bucket)) as (gw, _clock):
        r = await gw.request("HEAD", f"/{bucket}/big")  # knows the version, caches no bytes
        assert r.status_code == 200
        upstream_put(upstream, bucket, "big", b"n" * 1000)
        r = await gw.request("GET", f"/{bucket}/big")
        assert r.status_code == 200
        assert r.content == b"n" * 1000


# --------------------------------------------------------------------------------------------
# Passed through
# --------------------------------------------------------------------------------------------


async def test_listings_copies_and_multipart_pass_through_under_a_prefix(
    gateways: Any, upstream: Endpoint, bucket: str
) -> None:
    async with gateways(backend(upstream.url, bucket, "tenant")) as (gw, _clock):
        assert (await gw.request("PUT", f"/{bucket}/a/one", b"1")).status_code == 200
        assert (await gw.request("PUT", f"/{bucket}/a/two", b"22")).status_code == 200
        assert upstream_get(upstream, bucket, "tenant/a/one") == b"1"
        r = await gw.request("GET", f"/{bucket}?list-type=2&prefix=a/")
        assert r.status_code == 200
        root = fromstring(r.content)
        keys = [e.text for e in root.iter(f"{NS}Key")]
        assert keys == ["a/one", "a/two"]
        assert root.findtext(f"{NS}Prefix") == "a/"
        # encoding-type=url (boto3's default): stores encode differently (Ceph RGW encodes "/",
        # moto does not); either way the client decodes names without the upstream prefix.
        r = await gw.request("GET", f"/{bucket}?list-type=2&prefix=a/&encoding-type=url")
        root = fromstring(r.content)
        keys = [urllib.parse.unquote(e.text or "") for e in root.iter(f"{NS}Key")]
        assert keys == ["a/one", "a/two"]
        assert urllib.parse.unquote(root.findtext(f"{NS}Prefix") or "") == "a/"
        # A copy names the served bucket; the upstream gets its own key.
        await gw.request("GET", f"/{bucket}/a/copy")  # a miss remembered as nothing
        r = await gw.request(
            "PUT", f"/{bucket}/a/copy", headers={"x-amz-copy-source": f"/{bucket}/a/two"}
        )
        assert r.status_code == 200, r.content
        assert upstream_get(upstream, bucket, "tenant/a/copy") == b"22"
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
        assert upstream_get(upstream, bucket, "tenant/a/one") == b"parted"
        assert (await gw.request("GET", f"/{bucket}/a/one")).content == b"parted"


async def test_a_body_over_the_limit_is_refused_before_the_upstream_sees_it(
    gateways: Any, upstream: Endpoint, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import examples.object_store_gateway.proxy as proxy_module

    monkeypatch.setattr(proxy_module, "MAX_BODY", 1024)
    async with gateways(backend(upstream.url, bucket)) as (gw, _clock):
        r = await gw.request("PUT", f"/{bucket}/big", b"x" * 2048)
        assert r.status_code == 400
        assert b"EntityTooLarge" in r.content
        assert (await gw.request("GET", f"/{bucket}/big")).status_code == 404
        assert (await gw.request("PUT", f"/{bucket}/big", b"x" * 1024)).status_code == 200


async def test_an_unreachable_upstream_is_a_clear_error(
    gateways: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ...backing.s3_servers import free_port

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one refused connection, not five with backoff
    bucket = "nowhere"
    dead = f"s3://{bucket}?endpoint=http://127.0.0.1:{free_port()}"
    async with gateways(dead) as (gw, _clock):
        r = await gw.request("PUT", f"/{bucket}/k", b"x")
        assert r.status_code == 503
        assert b"ServiceUnavailable" in r.content
        r = await gw.request("GET", f"/{bucket}/k")
        assert r.status_code == 503


# --------------------------------------------------------------------------------------------
# A misbehaving upstream (through a FaultProxy)
# --------------------------------------------------------------------------------------------


async def test_throttling_is_retried_and_past_the_attempts_is_a_clear_error(
    gateways: Any,
    upstream: Endpoint,
    bucket: str,
    faults: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = pattern(100_000, seed=3)
    upstream_put(upstream, bucket, "k", data)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    via = backend(faults.url, bucket)
    async with gateways(via) as (gw, _clock):
        # Reads go through botocore's retries: two SlowDowns, then the answer.
        faults.slow_down(2)
        r = await gw.request("GET", f"/{bucket}/k")
        assert (r.status_code, r.content) == (200, data)
        assert faults.slowdowns_sent == 2
    async with gateways(via) as (gw, _clock):
        # Past the attempts: a clear S3 error, nothing remembered; the next read goes through.
        faults.slow_down(3)
        r = await gw.request("GET", f"/{bucket}/k")
        assert r.status_code == 503
        assert b"ServiceUnavailable" in r.content
        assert faults.slowdowns_sent == 5
        r = await gw.request("GET", f"/{bucket}/k")
        assert (r.status_code, r.content, r.headers["x-cache"]) == (200, data, "MISS")
    async with gateways(via) as (gw, _clock):
        # A passed-through write is answered with the upstream's own answer, never acknowledged
        # before the upstream did: the client sees SlowDown (and its SDK retries it).
        faults.slow_down(1)
        r = await gw.request("PUT", f"/{bucket}/w", b"written")
        assert r.status_code == 503
        assert b"SlowDown" in r.content
        assert not upstream_has(upstream, bucket, "w")
        assert (await gw.request("PUT", f"/{bucket}/w", b"written")).status_code == 200
        assert upstream_get(upstream, bucket, "w") == b"written"
        assert faults.slowdowns_sent == 6


async def test_a_killed_upstream_is_a_clear_error_loses_nothing_and_recovers(
    gateways: Any,
    upstream: Endpoint,
    bucket: str,
    faults: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = pattern(200_000, seed=4)
    upstream_put(upstream, bucket, "k", data)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # each failure at once, no backoff
    async with gateways(backend(faults.url, bucket)) as (gw, clock):
        r = await gw.request("GET", f"/{bucket}/k")
        assert (r.content, r.headers["x-cache"]) == (data, "MISS")
        etag = r.headers["etag"]
        faults.kill()
        # Within the TTL the cache answers alone.
        r = await gw.request("GET", f"/{bucket}/k")
        assert (r.status_code, r.content, r.headers["x-cache"]) == (200, data, "HIT")
        # Writes are not acknowledged: the upstream does not have them.
        r = await gw.request("PUT", f"/{bucket}/w", b"while down")
        assert r.status_code == 503
        assert b"ServiceUnavailable" in r.content
        # What must ask the upstream says so: an unknown key, a version past its TTL.
        r = await gw.request("GET", f"/{bucket}/other")
        assert r.status_code == 503
        assert b"ServiceUnavailable" in r.content
        clock.now += TTL
        r = await gw.request("GET", f"/{bucket}/k")
        assert r.status_code == 503
        assert b"Upstream unreachable" in r.content
        assert not upstream_has(upstream, bucket, "w")
        faults.revive()
        # Back: the version is confirmed unchanged and the cached pages are served as they were.
        r = await gw.request("GET", f"/{bucket}/k")
        assert (r.status_code, r.content, r.headers["x-cache"]) == (200, data, "HIT")
        assert r.headers["etag"] == etag
        assert (await gw.request("PUT", f"/{bucket}/w", b"after")).status_code == 200
        assert upstream_get(upstream, bucket, "w") == b"after"
        assert (await gw.request("GET", f"/{bucket}/w")).content == b"after"


# --------------------------------------------------------------------------------------------
# Ceph RGW over https: which checksum setting each path to the upstream needs
# --------------------------------------------------------------------------------------------


async def test_ceph_over_https_needs_no_checksum_setting_in_proxy_mode(
    request: pytest.FixtureRequest, gateways: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proxy mode keeps botocore's default checksums, which RGW rejects over https for uploads.

    An upload through botocore with them (``S3Object`` syncing, tests/backing/test_s3.py) is an
    ``aws-chunked`` body that RGW Pacific refuses over https (``MissingContentLength``), so a
    backing writing there needs ``request_checksum_calculation="when_required"``. The gateway
    never uploads through botocore: it decodes the client's body and forwards it whole, signed,
    and botocore only reads (GetObject, HeadObject). So moto, RGW over http and RGW over https
    all work with the defaults here; this test breaks if proxy mode starts uploading through
    botocore without the setting.
    """
    http, https = request.getfixturevalue("ceph_endpoints")
    assert https is not None
    cert = https.options["verify"]
    monkeypatch.setenv("AWS_CA_BUNDLE", cert)  # botocore: the reads through the cache
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # httpx: the requests forwarded as they are
    name = f"proxy-tls-{next(_buckets)}-{random.getrandbits(32):08x}"
    http.boto3().create_bucket(Bucket=name)  # one cluster: http and https see the same bucket
    old, new = pattern(200_000, seed=3), pattern(70_001, seed=4)
    async with gateways(backend(https.url, name)) as (gw, clock):
        r = await gw.request("PUT", f"/{name}/k", old)
        assert r.status_code == 200, r.content
        assert upstream_get(http, name, "k") == old
        r = await gw.request("GET", f"/{name}/k")
        assert (r.status_code, r.content, r.headers["x-cache"]) == (200, old, "MISS")
        upstream_put(http, name, "k", new)
        clock.now += TTL
        r = await gw.request("GET", f"/{name}/k", headers={"range": "bytes=70000-"})
        assert (r.status_code, r.content) == (206, new[70000:])
        assert (await gw.request("GET", f"/{name}/k")).content == new


# --------------------------------------------------------------------------------------------
# The real server, with boto3 (aws-chunked uploads and all)
# --------------------------------------------------------------------------------------------


def test_boto3_through_a_proxy_gateway_process(
    tmp_path: Path, upstream: Endpoint, bucket: str
) -> None:
    from .conftest import boto3_client, start_gateway

    gw = start_gateway(
        tmp_path,
        extra_args=["--backend", backend(upstream.url, bucket, "p"), "--revalidate", "0"],
        extra_env={"AWS_ACCESS_KEY_ID": UP_KEY, "AWS_SECRET_ACCESS_KEY": UP_SECRET},
    )
    try:
        s3 = boto3_client(gw)
        data = bytes(range(256)) * 4096
        s3.put_object(Bucket=bucket, Key="x/y", Body=data)
        assert upstream_get(upstream, bucket, "p/x/y") == data
        got = s3.get_object(Bucket=bucket, Key="x/y")
        assert got["Body"].read() == data
        assert (
            s3.get_object(Bucket=bucket, Key="x/y", Range="bytes=5-9")["Body"].read() == data[5:10]
        )
        listing = s3.list_objects_v2(Bucket=bucket, Prefix="x/")
        assert [o["Key"] for o in listing["Contents"]] == ["x/y"]
        # --revalidate 0: every read asks, so a direct overwrite is seen at once.
        upstream_put(upstream, bucket, "p/x/y", b"direct")
        assert s3.get_object(Bucket=bucket, Key="x/y")["Body"].read() == b"direct"
        s3.delete_object(Bucket=bucket, Key="x/y")
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="x/")
        s3.close()
    except BaseException:
        gw.kill()
        raise
    assert gw.stop() == 0
