"""The Starlette app: lifespan (storage, cache, open bodies) and the one S3 request handler.

Every request but ``GET /metrics`` and ``GET /healthz`` goes: route (which operation), then
authenticate (SigV4/SigV2, headers or presigned), then the operation's handler. A routing error
is reported only after authentication succeeded, as S3 does (an unsigned probe learns nothing).
Whatever goes wrong becomes S3's error document with the code's status; an unexpected exception
is logged and answered ``InternalError`` (500), and the process keeps serving.

The handler is a raw ASGI middleware in front of Starlette's (empty) router: S3 dispatch needs
the raw path and query, which Starlette's routing would decode first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware

from aiocache_inode import CacheStore, Tunables

from . import buckets, multipart, objects
from .auth import authenticate
from .bodies import BodyFiles, ClientDisconnected
from .checksums import header_map
from .errors import S3Error
from .exchange import Exchange, GatewayState, new_request_id
from .http_metrics import HttpMetrics
from .proxy import PROXY_READAHEAD_REQUEST, ProxySlot, open_proxy
from .routing import Route, route
from .storage import Storage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from starlette.types import ASGIApp, Receive, Scope, Send

    from .config import GatewayConfig

__all__ = ["create_app"]

log = logging.getLogger("examples.object_store_gateway")

HANDLERS: Final[dict[str, Callable[[Exchange], Awaitable[None]]]] = {
    "ListBuckets": buckets.list_buckets,
    "CreateBucket": buckets.create_bucket,
    "HeadBucket": buckets.head_bucket,
    "DeleteBucket": buckets.delete_bucket,
    "GetBucketLocation": buckets.get_bucket_location,
    "ListObjects": buckets.list_objects_v1,
    "ListObjectsV2": buckets.list_objects_v2,
    "DeleteObjects": objects.delete_objects,
    "GetObject": objects.get_object,
    "HeadObject": objects.get_object,
    "PutObject": objects.put_object,
    "CopyObject": objects.copy_object,
    "DeleteObject": objects.delete_object,
    "CreateMultipartUpload": multipart.create_upload,
    "UploadPart": multipart.upload_part,
    "UploadPartCopy": multipart.upload_part_copy,
    "CompleteMultipartUpload": multipart.complete_upload,
    "AbortMultipartUpload": multipart.abort_upload,
    "ListParts": multipart.list_parts,
    "ListMultipartUploads": multipart.list_uploads,
}


def _refine(r: Route, headers: dict[str, str]) -> Route:
    """Operations S3 tells apart by a header: copies are PUTs with ``x-amz-copy-source``."""
    if "x-amz-copy-source" in headers:
        if r.operation == "PutObject":
            return Route("CopyObject", r.bucket, r.key, r.query)
        if r.operation == "UploadPart":
            return Route("UploadPartCopy", r.bucket, r.key, r.query)
    return r


class GatewayMiddleware:
    """The S3 handler: answers every HTTP request; lifespan goes on to Starlette."""

    def __init__(self, app: ASGIApp, state: GatewayState, proxy: ProxySlot) -> None:
        self.app = app
        self.state = state
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        if method in ("GET", "HEAD") and raw_path in (b"/metrics", b"/healthz"):
            await self._own_endpoint(raw_path, method, send)
            return
        await self._s3(scope, receive, send, method, raw_path)

    async def _own_endpoint(self, path: bytes, method: str, send: Send) -> None:
        if path == b"/metrics":
            body = generate_latest(self.state.registry)
            ctype = CONTENT_TYPE_LATEST.encode()
            status = 200
        else:
            status = 200 if self.state.running else 503
            body = b"ok\n" if status == 200 else b"starting or stopping\n"
            ctype = b"text/plain; charset=utf-8"
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(len(body)).encode()),
            (b"x-amz-request-id", new_request_id().encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _s3(
        self, scope: Scope, receive: Receive, send: Send, method: str, raw_path: bytes
    ) -> None:
        state = self.state
        metrics = state.metrics
        t0 = time.perf_counter()
        metrics.in_flight.inc()
        received = 0

        async def counting_receive() -> Any:
            nonlocal received
            message = await receive()
            body = message.get("body")
            if body:
                received += len(body)
            return message

        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        headers = header_map(raw_headers)
        query_string: bytes = scope.get("query_string", b"")
        routed: Route = Route("Unknown")
        route_error: S3Error | None = None
        try:
            routed = _refine(route(method, raw_path, query_string), headers)
        except S3Error as exc:
            route_error = exc
        ex = Exchange(state, scope, counting_receive, send, headers, routed, _ANONYMOUS)
        if route_error is not None:
            ex.resource = raw_path.decode("utf-8", "replace")
        try:
            try:
                ex.auth = authenticate(
                    method,
                    raw_path,
                    query_string,
                    raw_headers,
                    state.lookup_secret,
                    datetime.now(UTC),
                )
                if route_error is not None:
                    raise route_error
                proxy = self.proxy.current
                if proxy is not None:
                    await proxy.handle(ex)
                else:
                    await HANDLERS[routed.operation](ex)
            except S3Error as exc:
                if ex.started:
                    raise
                await ex.error(exc)
            except ClientDisconnected:
                ex.status = ex.status or 499
            except Exception as exc:
                if ex.started:
                    raise
                log.exception("internal error in %s %s", routed.operation, routed.resource)
                await ex.error(S3Error("InternalError", f"{type(exc).__name__}"))
        except Exception:
            # The response had started: nothing can be said to the client any more; returning
            # without finishing makes the server close the connection, which the client sees
            # as a short body.
            log.exception("%s %s failed mid-response", routed.operation, routed.resource)
        finally:
            metrics.in_flight.dec()
            metrics.received.inc(received)
            metrics.sent.inc(ex.sent)
            if ex.cache_result is not None:
                metrics.cache_result(ex.cache_result)
            metrics.observe(routed.operation, ex.status or 499, time.perf_counter() - t0)


def _anonymous() -> Any:
    from .auth import AuthContext

    return AuthContext(access_key="", payload="unsigned")


_ANONYMOUS: Final = _anonymous()


def create_app(config: GatewayConfig) -> Starlette:
    """The gateway as an ASGI app; its lifespan opens storage and the cache.

    Args:
        config: where data lives, the cache budget, credentials.
    """
    registry = CollectorRegistry(auto_describe=True)
    state = GatewayState(config, registry, HttpMetrics(registry))
    # Proxy mode (config.backend s3://...) answers every S3 request from proxy.py; the local
    # storage is still opened (and stays empty) so the rest of the lifespan is one path.
    proxy_slot = ProxySlot()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(lambda: os.makedirs(config.data_dir, exist_ok=True))
        storage_cm = Storage(config.data_dir, min_part_size=config.min_part_size)
        # Proxy mode fills from an S3 store, where each request has a cost of its own.
        request = (
            Tunables().readahead_request if config.backend == "local" else PROXY_READAHEAD_REQUEST
        )
        store_cm = CacheStore(
            config.memory_limit, registry=registry, write_back=True, readahead_request=request
        )
        # Storage closes last: the store's final write-back and freed bodies need it.
        async with storage_cm as storage, store_cm as store:
            bodies = BodyFiles(store, storage, config.max_open_bodies)
            storage.on_free = bodies.free
            state.start(storage, store, bodies)
            try:
                if config.backend == "local":
                    yield
                else:
                    async with open_proxy(config, store) as proxy:
                        proxy_slot.current = proxy
                        try:
                            yield
                        finally:
                            proxy_slot.current = None
            finally:
                state.stop()
                with anyio.CancelScope(shield=True):
                    # Frees in flight use the store: let them finish before it closes.
                    await storage.wait_frees()
                    storage.on_free = storage.unlink_body
                    await bodies.close()

    app = Starlette(
        routes=[],
        middleware=[Middleware(GatewayMiddleware, state=state, proxy=proxy_slot)],
        lifespan=lifespan,
    )
    app.state.gateway = state
    app.state.proxy = proxy_slot
    return app
