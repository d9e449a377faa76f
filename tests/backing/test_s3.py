"""S3Object against real S3 servers on loopback: moto's standalone server and a one-node Ceph.

Every server test runs on each endpoint (``endpoint`` fixture) and both anyio backends. The
backing contract suite (test_contract.py) is re-collected here over S3Object.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiocache_inode import CacheStore
from aiocache_inode.attrs import AttrMask, Attrs
from aiocache_inode.backing import S3Object
from aiocache_inode.backing.s3 import (
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    ObjectChangedError,
    ObjectMissingError,
    S3Config,
    S3Error,
    S3UnavailableError,
    _Overlay,
    _plan_parts,
    _Scatter,
    open_client,
)
from aiocache_inode.errors import BackingError

from . import test_contract
from .s3_servers import Endpoint, FaultProxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

MiB = 1 << 20
_names = itertools.count()


# --------------------------------------------------------------------------------------------
# Servers and clients
# --------------------------------------------------------------------------------------------


# moto_endpoint and ceph_endpoints are session fixtures of tests/conftest.py.


@pytest.fixture(params=["moto", "ceph"])
def endpoint(request: pytest.FixtureRequest) -> Endpoint:
    if request.param == "moto":
        return request.getfixturevalue("moto_endpoint")  # type: ignore[no-any-return]
    http, _ = request.getfixturevalue("ceph_endpoints")
    return http  # type: ignore[no-any-return]


@pytest.fixture
async def client(endpoint: Endpoint) -> AsyncIterator[Any]:
    async with open_client(endpoint.config()) as s3:
        yield s3


def new_key() -> str:
    return f"obj-{next(_names)}-{random.getrandbits(32):08x}"


def put(endpoint: Endpoint, key: str, data: bytes) -> str:
    """Store ``data`` out of band (plain boto3); return its ETag."""
    return str(endpoint.boto3().put_object(Bucket=endpoint.bucket, Key=key, Body=data)["ETag"])


def get(endpoint: Endpoint, key: str) -> bytes:
    """What the store holds, read by an independent client."""
    body = endpoint.boto3().get_object(Bucket=endpoint.bucket, Key=key)["Body"]
    return bytes(body.read())


async def read(obj: S3Object, offset: int, size: int) -> bytes:
    buf = bytearray(size)
    n = await obj.read_into(offset, [memoryview(buf)])
    return bytes(buf[:n])


def pattern(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# --------------------------------------------------------------------------------------------
# The backing contract, over S3Object on each endpoint
# --------------------------------------------------------------------------------------------


class Maker:
    """test_contract's factory, building S3Objects over objects stored beforehand."""

    kind = "s3"

    def __init__(self, endpoint: Endpoint, client: Any) -> None:
        self._endpoint = endpoint
        self._client = client
        self.opened: list[S3Object] = []

    async def __call__(self, data: bytes = b"") -> S3Object:
        key = new_key()
        await self._client.put_object(Bucket=self._endpoint.bucket, Key=key, Body=data)
        obj = await S3Object.open(self._client, self._endpoint.bucket, key)
        self.opened.append(obj)
        return obj

    async def aclose(self) -> None:
        for obj in self.opened:
            await obj.aclose()


@pytest.fixture
async def make(endpoint: Endpoint, client: Any) -> AsyncIterator[Maker]:
    maker = Maker(endpoint, client)
    try:
        yield maker
    finally:
        await maker.aclose()


for _name in dir(test_contract):
    if _name.startswith("test_"):
        globals()[_name] = getattr(test_contract, _name)


# --------------------------------------------------------------------------------------------
# Against the servers
# --------------------------------------------------------------------------------------------


async def test_open_missing_object(endpoint: Endpoint, client: Any) -> None:
    with pytest.raises(ObjectMissingError) as info:
        await S3Object.open(client, endpoint.bucket, new_key())
    assert info.value.status == 404
    assert isinstance(info.value, BackingError)
    assert isinstance(info.value, FileNotFoundError)


async def test_open_create_makes_an_empty_object(endpoint: Endpoint, client: Any) -> None:
    key = new_key()
    async with await S3Object.open(client, endpoint.bucket, key, create=True) as obj:
        assert (await obj.get_attributes()).size == 0
        assert get(endpoint, key) == b""
    # create=True opens an object that exists, never replaces it
    put(endpoint, key, b"theirs")
    async with await S3Object.open(client, endpoint.bucket, key, create=True) as obj:
        assert await read(obj, 0, 10) == b"theirs"


async def test_writes_sync_and_fresh_client_reads_back(endpoint: Endpoint, client: Any) -> None:
    key = new_key()
    original = pattern(100_000)
    put(endpoint, key, original)
    obj = await S3Object.open(client, endpoint.bucket, key)
    old_etag = obj.etag
    await obj.write_from(10, [memoryview(b"hello")])
    await obj.write_from(99_998, [memoryview(b"tail!")])  # extends by 3
    assert obj.dirty_bytes == 10
    await obj.sync()
    assert obj.etag != old_etag
    assert not obj.dirty
    expected = original[:10] + b"hello" + original[15:99_998] + b"tail!"
    assert get(endpoint, key) == expected
    assert obj.stats.requests["PutObject"] == 1
    async with open_client(endpoint.config()) as other:
        fresh = await S3Object.open(other, endpoint.bucket, key)
        assert fresh.etag == obj.etag
        assert await read(fresh, 0, 200_000) == expected
        await fresh.aclose()
    await obj.aclose()


async def test_sync_with_nothing_to_do_sends_nothing(endpoint: Endpoint, client: Any) -> None:
    key = new_key()
    put(endpoint, key, b"abc")
    async with await S3Object.open(client, endpoint.bucket, key) as obj:
        before = dict(obj.stats.requests)
        await obj.sync()
        await obj.set_attributes(AttrMask.SIZE, Attrs(size=3), False)  # unchanged
        await obj.sync()
        assert obj.stats.requests == before


async def test_ranged_reads(endpoint: Endpoint, client: Any) -> None:
    key = new_key()
    data = pattern(1 * MiB + 123, seed=7)
    put(endpoint, key, data)
    rng = random.Random(3)
    async with await S3Object.open(client, endpoint.bucket, key) as obj:
        wanted = 0
        for _ in range(20):
            offset = rng.randrange(len(data))
            size = rng.randrange(1, 300_000)
            got = await read(obj, offset, size)
            assert got == data[offset : offset + size]
            wanted += len(got)
        assert obj.stats.requests["GetObject"] == 20
        assert obj.stats.bytes_downloaded == wanted  # ranged: never more than asked


async def test_reads_of_dirty_ranges_come_from_the_overlay(endpoint: Endpoint, client: Any) -> None:
    key = new_key()
    data = pattern(50_000, seed=2)
    put(endpoint, key, data)
    async with await S3Object.open(client, endpoint.bucket, key) as obj:
        await obj.write_from(1000, [memoryview(b"x" * 2000)])
        assert await read(obj, 1500, 1000) == b"x" * 1000
        assert "GetObject" not in obj.stats.requests  # all dirty: nothing fetched
        assert await read(obj, 0, 5000) == data[:1000] + b"x" * 2000 + data[3000:5000]
        await obj.set_attributes(AttrMask.SIZE, Attrs(size=2000), False)
        await obj.set_attributes(AttrMask.SIZE, Attrs(size=4000), False)
        assert await read(obj, 0, 10_000) == data[:1000] + b"x" * 1000 + bytes(2000)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_partial_rewrite_of_large_object_copies_server_side(
    endpoint: Endpoint, client: Any
) -> None:
    key = new_key()
    size = 24 * MiB
    data = bytearray(pattern(size, seed=24))
    put(endpoint, key, bytes(data))
    async with await S3Object.open(client, endpoint.bucket, key) as obj:
        patch = b"\xa5" * 4096
        await obj.write_from(12 * MiB, [memoryview(patch)])
        assert obj.dirty_bytes == 4096
        await obj.sync()
        data[12 * MiB : 12 * MiB + 4096] = patch
        stats = obj.stats
        # One 5 MiB part carries the 4 KiB (padded with clean bytes read back); the other
        # 19 MiB are copied by the store from the old version.
        assert stats.bytes_uploaded == MIN_PART_SIZE
        assert stats.bytes_copied == size - MIN_PART_SIZE
        assert stats.bytes_downloaded == MIN_PART_SIZE - 4096
        assert stats.requests["UploadPart"] == 1
        assert stats.requests["UploadPartCopy"] == 2
        assert stats.requests["CompleteMultipartUpload"] == 1
        assert obj.etag.strip('"').endswith("-3")
    stored = get(endpoint, key)
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_large_object_truncate_and_extend(endpoint: Endpoint, client: Any) -> None:
    key = new_key()
    data = pattern(12 * MiB, seed=18)
    put(endpoint, key, data)
    async with await S3Object.open(client, endpoint.bucket, key, multipart_threshold=MiB) as obj:
        await obj.set_attributes(AttrMask.SIZE, Attrs(size=11 * MiB), False)
        await obj.allocate(0, 13 * MiB)  # zero-extended by 2 MiB
        await obj.write_from(0, [memoryview(b"head")])
        await obj.sync()
        assert obj.stats.bytes_copied == 6 * MiB
        assert obj.stats.bytes_uploaded == 7 * MiB  # 5 MiB part + 2 MiB of zeros
    expected = b"head" + data[4 : 11 * MiB] + bytes(2 * MiB)
    assert get(endpoint, key) == expected


async def test_out_of_band_overwrite_is_detected(endpoint: Endpoint, client: Any) -> None:
    key = new_key()
    put(endpoint, key, b"version one " * 100)
    obj = await S3Object.open(client, endpoint.bucket, key)
    assert await read(obj, 0, 7) == b"version"
    new_etag = put(endpoint, key, b"VERSION TWO!" * 50)
    buf = bytearray(b"\0" * 8)
    with pytest.raises(ObjectChangedError) as info:
        await obj.read_into(100, [memoryview(buf)])
    assert info.value.status == 412
    assert info.value.code == "PreconditionFailed"
    assert info.value.current is not None
    assert info.value.current.etag == new_etag
    assert info.value.current.size == 600
    assert bytes(buf) == b"\0" * 8  # nothing of the new version leaked into the buffer
    assert await obj.refresh() is True
    assert obj.etag == new_etag
    assert (await obj.get_attributes()).size == 600
    assert await read(obj, 0, 11) == b"VERSION TWO"
    assert await obj.refresh() is False
    await obj.aclose()


async def test_deleted_upstream_is_a_change(endpoint: Endpoint, client: Any) -> None:
    key = new_key()
    put(endpoint, key, b"short-lived")
    obj = await S3Object.open(client, endpoint.bucket, key)
    await obj.write_from(0, [memoryview(b"S")])
    endpoint.boto3().delete_object(Bucket=endpoint.bucket, Key=key)
    with pytest.raises(ObjectChangedError) as info:
        await read(obj, 0, 5)
    assert (info.value.status, info.value.current) == (404, None)
    with pytest.raises(ObjectChangedError):
        await obj.sync()  # never resurrects a deleted object from a partial overlay
    assert obj.dirty_bytes == 1
    with pytest.raises(ObjectMissingError):
        await obj.refresh()
    await obj.aclose()


async def test_sync_never_overwrites_a_version_it_did_not_see(
    endpoint: Endpoint, client: Any
) -> None:
    key = new_key()
    put(endpoint, key, b"mine")
    obj = await S3Object.open(client, endpoint.bucket, key)
    await obj.write_from(0, [memoryview(b"MINE")])
    theirs = put(endpoint, key, b"theirs")
    with pytest.raises(ObjectChangedError) as info:
        await obj.sync()
    assert info.value.current is not None
    assert info.value.current.etag == theirs
    assert get(endpoint, key) == b"theirs"
    assert obj.dirty_bytes == 4  # kept, not lost
    with pytest.raises(ObjectChangedError):
        await obj.refresh()  # changed with local changes pending: the caller decides
    await obj.aclose()


async def test_large_sync_never_overwrites_a_version_it_did_not_see(
    endpoint: Endpoint, client: Any
) -> None:
    key = new_key()
    data = pattern(12 * MiB, seed=12)
    put(endpoint, key, data)
    obj = await S3Object.open(client, endpoint.bucket, key, multipart_threshold=MiB)
    await obj.write_from(0, [memoryview(b"x" * 100)])
    put(endpoint, key, b"theirs")
    with pytest.raises(ObjectChangedError):
        await obj.sync()
    assert get(endpoint, key) == b"theirs"
    assert "CreateMultipartUpload" not in obj.stats.requests
    await obj.aclose()


async def test_attributes_persist_in_metadata(endpoint: Endpoint, client: Any) -> None:
    key = new_key()
    put(endpoint, key, b"x" * 10)
    sec = 1_000_000_000
    async with await S3Object.open(client, endpoint.bucket, key) as obj:
        await obj.set_attributes(AttrMask.MODE | AttrMask.UID, Attrs(mode=0o600, uid=7), False)
        await obj.set_attributes(AttrMask.MTIME, Attrs(mtime=1234 * sec), True)
        await obj.sync()
        assert obj.stats.requests["CopyObject"] == 1  # metadata only: copied onto itself
        assert "PutObject" not in obj.stats.requests
    async with await S3Object.open(client, endpoint.bucket, key) as obj:
        got = await obj.get_attributes()
        assert (got.mode, got.uid, got.mtime, got.size) == (0o600, 7, 1234 * sec, 10)
    assert get(endpoint, key) == b"x" * 10


async def test_through_a_cache_store(endpoint: Endpoint, client: Any) -> None:
    key = new_key()
    data = pattern(300_000, seed=5)
    put(endpoint, key, data)
    obj = await S3Object.open(client, endpoint.bucket, key)
    store = CacheStore(memory_limit=16 * MiB, registry=False)
    async with store, store.open(key, obj) as inode:
        assert await inode.read(1000, 5000) == data[1000:6000]
        assert await inode.read(0, len(data)) == data
        assert await inode.write(2000, b"cached write") == 12
        await inode.write_out()
    assert get(endpoint, key) == data[:2000] + b"cached write" + data[2012:]
    await obj.aclose()


# --------------------------------------------------------------------------------------------
# Faults: throttling, errors, a dead upstream, cancellation
# --------------------------------------------------------------------------------------------


@pytest.fixture
def proxy(endpoint: Endpoint) -> Iterator[FaultProxy]:
    port = int(endpoint.url.rsplit(":", 1)[1])
    fault_proxy = FaultProxy(port)
    try:
        yield fault_proxy
    finally:
        fault_proxy.close()


async def test_throttling_is_retried_by_botocore(endpoint: Endpoint, proxy: FaultProxy) -> None:
    key = new_key()
    put(endpoint, key, b"abcdef" * 1000)
    async with open_client(endpoint.config(proxy.url, max_attempts=4, keepalive_timeout=0)) as s3:
        obj = await S3Object.open(s3, endpoint.bucket, key)
        proxy.slow_down(2)
        assert await read(obj, 6, 6) == b"abcdef"
        assert proxy.slowdowns_sent == 2
        assert obj.stats.retries == 2
        assert obj.stats.requests["GetObject"] == 1
        await obj.write_from(0, [memoryview(b"ABCDEF")])
        retries = obj.stats.retries
        proxy.slow_down(1)
        await obj.sync()
        assert proxy.slowdowns_sent == 3
        assert obj.stats.retries == retries + 1
        await obj.aclose()
    assert get(endpoint, key)[:12] == b"ABCDEFabcdef"


async def test_throttling_past_max_attempts_is_a_clear_error(
    endpoint: Endpoint, proxy: FaultProxy
) -> None:
    key = new_key()
    put(endpoint, key, b"abc")
    async with open_client(endpoint.config(proxy.url, max_attempts=1, keepalive_timeout=0)) as s3:
        obj = await S3Object.open(s3, endpoint.bucket, key)
        proxy.slow_down(1)
        with pytest.raises(S3Error) as info:
            await read(obj, 0, 3)
        assert (info.value.code, info.value.status) == ("SlowDown", 503), str(info.value)
        assert info.value.operation == "GetObject"
        assert await read(obj, 0, 3) == b"abc"  # and the next request goes through
        await obj.aclose()


async def test_killed_upstream_loses_nothing(endpoint: Endpoint, proxy: FaultProxy) -> None:
    key = new_key()
    put(endpoint, key, b"0123456789" * 100)
    async with open_client(endpoint.config(proxy.url, max_attempts=2)) as s3:
        obj = await S3Object.open(s3, endpoint.bucket, key)
        etag = obj.etag
        proxy.kill()
        with pytest.raises(S3UnavailableError) as info:
            await read(obj, 0, 10)
        assert isinstance(info.value, ConnectionError)
        assert info.value.status is None
        await obj.write_from(5, [memoryview(b"while down")])
        with pytest.raises(S3UnavailableError):
            await obj.sync()
        assert obj.dirty_bytes == 10
        assert obj.etag == etag
        assert await read(obj, 5, 10) == b"while down"  # the overlay still answers
        proxy.revive()
        await obj.sync()
        assert obj.etag != etag
        assert not obj.dirty
        await obj.aclose()
    assert get(endpoint, key) == b"01234while down" + (b"0123456789" * 100)[15:]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cancelled_multipart_sync_leaves_no_partial_object(
    endpoint: Endpoint, client: Any
) -> None:
    key = new_key()
    data = pattern(11 * MiB, seed=11)
    etag = put(endpoint, key, data)
    obj = await S3Object.open(
        client, endpoint.bucket, key, multipart_threshold=MiB, sync_concurrency=1
    )
    await obj.write_from(0, [memoryview(b"z" * (11 * MiB))])  # all dirty: three uploads
    scope = anyio.CancelScope()

    def cancel_after_first_part(**_: Any) -> None:
        scope.cancel()

    event = "after-call.s3.UploadPart"
    client.meta.events.register(event, cancel_after_first_part)
    try:
        with scope:
            await obj.sync()
    finally:
        client.meta.events.unregister(event, cancel_after_first_part)
    assert scope.cancelled_caught
    assert obj.stats.requests["UploadPart"] == 1
    assert obj.stats.requests["AbortMultipartUpload"] == 1
    boto = endpoint.boto3()
    assert boto.head_object(Bucket=endpoint.bucket, Key=key)["ETag"] == etag
    uploads = boto.list_multipart_uploads(Bucket=endpoint.bucket).get("Uploads", [])
    assert [u for u in uploads if u["Key"] == key] == []
    assert obj.dirty_bytes == 11 * MiB
    await obj.sync()
    assert get(endpoint, key) == b"z" * (11 * MiB)
    await obj.aclose()


# --------------------------------------------------------------------------------------------
# Checksums over https (Ceph): which setting each upstream needs
# --------------------------------------------------------------------------------------------


def https_endpoint(request: pytest.FixtureRequest) -> Endpoint:
    _, https = request.getfixturevalue("ceph_endpoints")
    assert https is not None
    return https  # type: ignore[no-any-return]


async def test_ceph_over_https_rejects_default_checksums(request: pytest.FixtureRequest) -> None:
    https = https_endpoint(request)
    async with open_client(https.config()) as s3:
        with pytest.raises(S3Error) as info:
            await S3Object.open(s3, https.bucket, new_key(), create=True)
    assert (info.value.code, info.value.status) == ("MissingContentLength", 411)


async def test_ceph_over_https_works_with_when_required(request: pytest.FixtureRequest) -> None:
    https = https_endpoint(request)
    config = https.config(
        request_checksum_calculation="when_required", response_checksum_validation="when_required"
    )
    key = new_key()
    async with await S3Object.open(config, https.bucket, key, create=True) as obj:
        await obj.write_from(0, [memoryview(b"over tls")])
        await obj.sync()
        assert await read(obj, 0, 8) == b"over tls"
    assert get(https, key) == b"over tls"


async def test_default_checksums_work_over_http(endpoint: Endpoint, client: Any) -> None:
    async with await S3Object.open(client, endpoint.bucket, new_key(), create=True) as obj:
        await obj.write_from(0, [memoryview(b"plain http")])
        await obj.sync()


# --------------------------------------------------------------------------------------------
# Bad input (no server needed)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_pool_connections": 0}, "max_pool_connections"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"read_timeout": 0.0}, "read_timeout"),
        ({"keepalive_timeout": -1.0}, "keepalive_timeout"),
        ({"connect_timeout": float("inf")}, "connect_timeout"),
        ({"retry_mode": "forever"}, "retry_mode"),
        ({"request_checksum_calculation": "never"}, "request_checksum_calculation"),
        ({"http_backend": "urllib"}, "http_backend"),
        ({"endpoint_url": "127.0.0.1:9000"}, "endpoint_url"),
    ],
)
def test_config_rejects_bad_values(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        S3Config(**options)


async def test_the_http_layer_follows_the_running_loop(anyio_backend: str) -> None:
    """ "auto" takes aiohttp on asyncio (a C parser) and httpx on trio; a choice is kept."""
    assert S3Config().resolved_http_backend() == (
        "aiohttp" if anyio_backend == "asyncio" else "httpx"
    )
    assert S3Config(http_backend="httpx").resolved_http_backend() == "httpx"
    assert S3Config(http_backend="aiohttp").resolved_http_backend() == "aiohttp"
    session_cls = S3Config().client_config().http_session_cls
    assert (session_cls.__module__ == "aiobotocore.httpxsession") == (anyio_backend == "trio")


def test_the_http_layer_outside_a_loop_is_httpx() -> None:
    assert S3Config().resolved_http_backend() == "httpx"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"part_size": MIN_PART_SIZE - 1}, "part_size"),
        ({"copy_part_size": MAX_PART_SIZE}, "copy_part_size"),
        ({"multipart_threshold": -1}, "multipart_threshold"),
        ({"sync_concurrency": 0}, "sync_concurrency"),
    ],
)
async def test_open_rejects_bad_tunables_before_any_request(
    options: dict[str, Any], match: str
) -> None:
    config = S3Config(endpoint_url="http://127.0.0.1:9", max_attempts=1)
    with pytest.raises(ValueError, match=match):
        await S3Object.open(config, "bucket", "key", **options)
    with pytest.raises(ValueError, match="empty"):
        await S3Object.open(config, "", "key")


# --------------------------------------------------------------------------------------------
# The overlay and the part planner, against models
# --------------------------------------------------------------------------------------------


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("w"), st.integers(0, 300), st.binary(min_size=0, max_size=80)),
            st.tuples(st.just("t"), st.integers(0, 400), st.just(b"")),
        ),
        max_size=30,
    )
)
def test_overlay_matches_a_bytearray_model(ops: list[tuple[str, int, bytes]]) -> None:
    overlay = _Overlay()
    model: dict[int, int] = {}  # offset -> byte, dirty bytes only
    for op, offset, data in ops:
        if op == "w":
            overlay.write(
                offset, [memoryview(data[: len(data) // 2]), memoryview(data[len(data) // 2 :])]
            )
            for i, byte in enumerate(data):
                model[offset + i] = byte
        else:
            overlay.truncate(offset)
            model = {k: v for k, v in model.items() if k < offset}
        overlay._check_invariants()
        assert overlay.dirty_bytes == len(model)
        buf = bytearray(b"\xee" * 500)
        overlay.copy_to(_Scatter([memoryview(buf)[:123], memoryview(buf)[123:]]), 0, 0, 500)
        assert all(buf[k] == v for k, v in model.items())
        assert all(buf[i] == 0xEE for i in range(500) if i not in model)
        lo, hi = overlay.clean_span(50, 250)
        clean = [i for i in range(50, 250) if i not in model]
        if clean:
            assert (lo, hi) == (clean[0], clean[-1] + 1)
        else:
            assert lo >= hi


@given(
    size=st.integers(1, 40 * MiB),
    cuts=st.lists(st.integers(0, 40 * MiB), max_size=12),
    part_size=st.sampled_from([MIN_PART_SIZE, 8 * MiB]),
)
def test_part_plan_is_legal_and_exact(size: int, cuts: list[int], part_size: int) -> None:
    points = sorted({c for c in cuts if c <= size})
    copyable = [(a, b) for a, b in itertools.pairwise(points)][::2]
    parts = _plan_parts(size, copyable, part_size=part_size, copy_part_size=16 * MiB)
    assert parts[0].start == 0
    assert parts[-1].end == size
    for a, b in itertools.pairwise(parts):
        assert a.end == b.start
    for part in parts[:-1]:
        assert part.size >= MIN_PART_SIZE
    for part in parts:
        assert 0 < part.size <= MAX_PART_SIZE
        if part.copy:
            assert any(a <= part.start and part.end <= b for a, b in copyable)
    uploaded = sum(p.size for p in parts if not p.copy)
    dirty = size - sum(b - a for a, b in copyable)
    assert uploaded >= dirty


def test_part_plan_for_a_small_rewrite_in_a_large_object() -> None:
    size = 24 * MiB
    copyable = [(0, 12 * MiB), (12 * MiB + 4096, size)]
    parts = _plan_parts(size, copyable, part_size=8 * MiB, copy_part_size=1 << 30)
    assert [(p.start, p.end, p.copy) for p in parts] == [
        (0, 12 * MiB, True),
        (12 * MiB, 17 * MiB, False),
        (17 * MiB, size, True),
    ]


def test_scatter_over_many_buffers(tmp_path: Path) -> None:
    bufs = [bytearray(n) for n in (3, 1, 5)]
    dest = _Scatter([memoryview(b) for b in bufs])
    dest.put(2, b"abcdefg")
    assert b"".join(bufs) == b"\0\0abcdefg"
    dest.zero(3, 2)
    assert b"".join(bufs) == b"\0\0a\0\0defg"
