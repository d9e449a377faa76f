"""Hot-path shortcuts: metadata, route and presigned-check caches, metric children, digests.

Each cache must give exactly what the uncached path gives: a metadata read after any
acknowledged change sees the change, a failed change leaves what was there, and errors are
never remembered.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio
import pytest
from botocore.auth import S3SigV4QueryAuth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry

from examples.object_store_gateway import bodies, routing
from examples.object_store_gateway import storage as storage_module
from examples.object_store_gateway.auth import authenticate
from examples.object_store_gateway.checksums import Digests
from examples.object_store_gateway.errors import S3Error
from examples.object_store_gateway.http_metrics import HttpMetrics
from examples.object_store_gateway.routing import route
from examples.object_store_gateway.storage import (
    ObjectMeta,
    PartMeta,
    Segment,
    Storage,
    UploadMeta,
)

if TYPE_CHECKING:
    from pathlib import Path


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())


async def _body(storage: Storage, data: bytes) -> Segment:
    body_id = storage.new_body_id()
    await anyio.to_thread.run_sync(_write, storage.tmp_path(body_id), data)
    await storage.publish(body_id)
    return Segment(body_id, 0, len(data))


async def _put(storage: Storage, key: str, etag: str, data: bytes = b"x") -> ObjectMeta:
    seg = await _body(storage, data)
    meta = ObjectMeta("b", key, len(data), etag, 1, segments=(seg,))
    await storage.put_object(meta, new_bodies=[seg.body_id])
    return meta


def _code(storage: Storage, key: str) -> str:
    with pytest.raises(S3Error) as e:
        storage.get_object("b", key)
    return e.value.code


async def test_metadata_reads_see_every_acknowledged_change(tmp_path: Path) -> None:
    async with Storage(tmp_path) as s:
        await s.create_bucket("b")
        await _put(s, "k", "one")
        assert s.get_object("b", "k").etag == "one"  # now cached
        assert s.get_object("b", "k") is s.get_object("b", "k")
        await _put(s, "k", "two")
        assert s.get_object("b", "k").etag == "two"

        # A copy onto a cached key.
        await _put(s, "src", "three")
        assert s.get_object("b", "src").etag == "three"

        def build(src: ObjectMeta) -> ObjectMeta:
            return ObjectMeta("b", "k", src.size, src.etag, 2, segments=src.segments)

        await s.copy_object("b", "src", build)
        assert s.get_object("b", "k").etag == "three"

        # A completed multipart upload onto a cached key.
        await s.create_upload(UploadMeta("u", "b", "k", 1))
        seg = await _body(s, b"part")
        await s.put_part("u", PartMeta(1, 4, "p1", 1, segments=(seg,)), new_bodies=[seg.body_id])

        def stitch(upload: UploadMeta, parts: list[PartMeta]) -> ObjectMeta:
            return ObjectMeta("b", "k", 4, "mp-1", 3, parts_count=1, segments=parts[0].segments)

        await s.complete_upload("u", "b", "k", [(1, "p1")], stitch)
        assert s.get_object("b", "k").etag == "mp-1"

        # Deletes, one and several.
        await s.delete_object("b", "k")
        assert _code(s, "k") == "NoSuchKey"
        await _put(s, "k", "four")
        assert s.get_object("b", "k").etag == "four"
        await s.delete_objects("b", ["k", "src"])
        assert _code(s, "k") == "NoSuchKey"
        assert _code(s, "src") == "NoSuchKey"


async def test_failed_change_leaves_the_cached_object(tmp_path: Path) -> None:
    async with Storage(tmp_path) as s:
        await s.create_bucket("b")
        await _put(s, "k", "one")
        assert s.get_object("b", "k").etag == "one"

        def refuse(src: ObjectMeta) -> None:
            raise S3Error("PreconditionFailed")

        def build(src: ObjectMeta) -> ObjectMeta:
            return ObjectMeta("b", "k", src.size, "copied", 2, segments=src.segments)

        with pytest.raises(S3Error):
            await s.copy_object("b", "k", build, refuse)
        assert s.get_object("b", "k").etag == "one"
    # The database agrees after a restart (nothing was cached wrongly as committed).
    async with Storage(tmp_path) as s:
        assert s.get_object("b", "k").etag == "one"


async def test_metadata_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_module, "META_CACHE_SIZE", 2)
    async with Storage(tmp_path) as s:
        await s.create_bucket("b")
        for key in ("k1", "k2", "k3"):
            await _put(s, key, key)
        for key in ("k1", "k2", "k3"):
            assert s.get_object("b", key).etag == key
        assert len(s._meta) == 2
        # The oldest read went first, and reads of it still come from the database.
        assert ("b", "k1") not in s._meta
        assert s.get_object("b", "k1").etag == "k1"
        assert _code(s, "absent") == "NoSuchKey"
        assert len(s._meta) == 2


def test_route_is_remembered_and_errors_are_not() -> None:
    a = route("GET", b"/bkt/some%20key", b"X-Amz-Signature=abc")
    assert (a.operation, a.key) == ("GetObject", "some key")
    assert route("GET", b"/bkt/some%20key", b"X-Amz-Signature=abc") is a
    assert route("HEAD", b"/bkt/some%20key", b"X-Amz-Signature=abc").operation == "HeadObject"
    for _ in range(2):
        with pytest.raises(S3Error) as e:
            route("GET", b"/Bad_Bucket/k", b"")
        assert e.value.code == "InvalidBucketName"
    for i in range(routing.ROUTE_CACHE_SIZE + 10):
        route("GET", f"/bkt/k{i}".encode(), b"")
    assert len(routing._routes) <= routing.ROUTE_CACHE_SIZE
    assert route("GET", b"/bkt/some%20key", b"X-Amz-Signature=abc") == a


def test_metric_children_count_like_labels() -> None:
    registry = CollectorRegistry()
    m = HttpMetrics(registry)
    for _ in range(3):
        m.observe("GetObject", 200, 0.001)
    m.observe("GetObject", 404, 0.002)
    m.cache_result("HIT")
    m.cache_result("HIT")
    value = registry.get_sample_value
    assert (
        value("aiocache_gateway_requests_total", {"operation": "GetObject", "status": "200"}) == 3
    )
    assert (
        value("aiocache_gateway_requests_total", {"operation": "GetObject", "status": "404"}) == 1
    )
    assert value("aiocache_gateway_request_seconds_count", {"operation": "GetObject"}) == 4
    assert value("aiocache_gateway_cache_results_total", {"result": "HIT"}) == 2
    assert value("aiocache_gateway_cache_results_total", {"result": "MISS"}) == 0


async def test_background_digests_match_one_pass() -> None:
    rng = random.Random(7)
    pieces: list[bytes | memoryview] = []
    for _ in range(40):
        data = rng.randbytes(rng.randrange(1, 300_000))
        pieces.append(memoryview(data)[1:] if len(data) > 1 else data)
    assert sum(len(p) for p in pieces) > 3 * bodies.DIGEST_BATCH
    want = {"crc32", "crc32c", "sha256"}
    direct = Digests(want)
    background = Digests(want)
    hashing = bodies._BackgroundDigests(background)
    for p in pieces:
        direct.update(p)
        await hashing.add(p)
    await hashing.finish()
    assert background.md5_hex() == direct.md5_hex()
    for name in want:
        assert background.b64(name) == direct.b64(name)
    assert background.size == direct.size


def _presigned(secret: str) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    request = AWSRequest(method="GET", url="http://127.0.0.1:9000/bkt/key", headers={})
    S3SigV4QueryAuth(Credentials("ak", secret), "s3", "us-east-1", 600).add_auth(request)
    parts = urlsplit(request.url)
    return parts.path.encode(), parts.query.encode(), [(b"host", b"127.0.0.1:9000")]


def _auth_code(
    path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], **secrets: str
) -> str:
    with pytest.raises(S3Error) as e:
        authenticate("GET", path, query, headers, secrets.get, datetime.now(UTC))
    return e.value.code


def test_remembered_presigned_check_still_checks_key_secret_and_headers() -> None:
    path, query, headers = _presigned("secret-one")
    now = datetime.now(UTC)
    first = authenticate("GET", path, query, headers, {"ak": "secret-one"}.get, now)
    assert authenticate("GET", path, query, headers, {"ak": "secret-one"}.get, now) is first
    # The secret changed: the signature is checked again, and fails.
    assert _auth_code(path, query, headers, ak="secret-two") == "SignatureDoesNotMatch"
    # The access key is gone.
    assert _auth_code(path, query, headers) == "InvalidAccessKeyId"
    # Other headers (a host that was not signed) are another request.
    assert _auth_code(path, query, [(b"host", b"evil:1")], ak="secret-one") == (
        "SignatureDoesNotMatch"
    )
    # Another method is another request.
    with pytest.raises(S3Error) as e:
        authenticate("PUT", path, query, headers, {"ak": "secret-one"}.get, now)
    assert e.value.code == "SignatureDoesNotMatch"
    # Still valid for the original request, and expired later even though remembered.
    authenticate("GET", path, query, headers, {"ak": "secret-one"}.get, now)
    with pytest.raises(S3Error) as e:
        authenticate(
            "GET", path, query, headers, {"ak": "secret-one"}.get, now + timedelta(seconds=601)
        )
    assert e.value.message == "Request has expired"
