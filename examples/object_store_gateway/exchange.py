"""One request and its response, and the gateway state every operation handler works on.

:class:`Exchange` wraps the ASGI ``send``: every response gets ``x-amz-request-id`` (and
``x-amz-id-2``), the status and the body bytes are recorded for the metrics, and an error found
before the response started becomes S3's error document.
"""

from __future__ import annotations

import email.utils
import functools
import random
import secrets
import time
from typing import TYPE_CHECKING, Any, Final, final

from .errors import S3Error, error_xml

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client import CollectorRegistry
    from starlette.types import Message, Receive, Scope, Send

    from aiocache_inode import CacheStore

    from .auth import AuthContext
    from .bodies import BodyFiles
    from .config import GatewayConfig
    from .http_metrics import HttpMetrics
    from .routing import Route
    from .storage import Storage

__all__ = ["Exchange", "GatewayState", "http_date", "parse_http_date", "quote_etag"]

XML: Final = b"application/xml"


def http_date(ns: int) -> str:
    """A timestamp as an HTTP date (``Wed, 01 May 2024 12:34:56 GMT``), seconds resolution."""
    return _http_date(ns // 1_000_000_000)


@functools.lru_cache(maxsize=4096)
def _http_date(seconds: int) -> str:
    # Objects' Last-Modified values repeat on every GET of them: format each second once.
    return email.utils.formatdate(seconds, usegmt=True)


def parse_http_date(value: str) -> float | None:
    """Seconds since the epoch of an HTTP date, or None if it is not one (S3 ignores those)."""
    try:
        dt = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None or dt.tzinfo is None:
        return None
    return dt.timestamp()


def quote_etag(etag: str) -> str:
    """The ETag as headers and XML carry it: in double quotes."""
    return f'"{etag}"'


@final
class GatewayState:
    """What the handlers share: configuration, storage, the cache, open bodies, metrics.

    ``storage``, ``store`` and ``bodies`` exist between lifespan start-up and shutdown.
    """

    def __init__(self, config: GatewayConfig, registry: CollectorRegistry, metrics: HttpMetrics):
        self.config = config
        self.registry = registry
        self.metrics = metrics
        self._storage: Storage | None = None
        self._store: CacheStore | None = None
        self._bodies: BodyFiles | None = None

    def start(self, storage: Storage, store: CacheStore, bodies: BodyFiles) -> None:
        """Lifespan start-up done: serve with these."""
        self._storage, self._store, self._bodies = storage, store, bodies

    def stop(self) -> None:
        """Lifespan shutdown began: later requests answer ServiceUnavailable."""
        self._storage = self._store = self._bodies = None

    @property
    def running(self) -> bool:
        """Whether start-up finished and shutdown has not begun."""
        return self._storage is not None

    def _need(self, obj: Any) -> Any:
        if obj is None:
            raise S3Error("ServiceUnavailable", "The gateway is not running.")
        return obj

    @property
    def storage(self) -> Storage:
        """The metadata database and body files."""
        storage: Storage = self._need(self._storage)
        return storage

    @property
    def store(self) -> CacheStore:
        """The process's cache."""
        store: CacheStore = self._need(self._store)
        return store

    @property
    def bodies(self) -> BodyFiles:
        """Open body files and their inodes."""
        bodies: BodyFiles = self._need(self._bodies)
        return bodies

    def lookup_secret(self, access_key: str) -> str | None:
        """The secret of access_key, or None when the key is unknown."""
        return self.config.secret_key if access_key == self.config.access_key else None


@final
class Exchange:
    """One request: its scope, decoded headers, route, authentication, and the response state.

    Attributes:
        headers: request headers, lower-case names (repeated ones joined by ``,``).
        request_id: the ``x-amz-request-id`` of the response.
        status: the status sent (0 before the response started).
        sent: response body bytes sent.
        cache_result: ``HIT``/``MISS``/``PARTIAL`` of an object read, if any.
    """

    __slots__ = (
        "_send",
        "auth",
        "cache_result",
        "gw",
        "headers",
        "receive",
        "request_id",
        "resource",
        "route",
        "scope",
        "sent",
        "started",
        "status",
    )

    def __init__(
        self,
        gw: GatewayState,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        route: Route,
        auth: AuthContext,
    ) -> None:
        self.gw = gw
        self.scope = scope
        self.receive = receive
        self._send = send
        self.headers = headers
        self.route = route
        self.auth = auth
        #: What error documents name as the resource: the route's, or the raw path when the
        #: request could not be routed.
        self.resource = route.resource
        self.request_id = new_request_id()
        self.status = 0
        self.started = False
        self.sent = 0
        self.cache_result: str | None = None

    @property
    def query(self) -> dict[str, str]:
        """The decoded query parameters."""
        return self.route.query

    async def send(self, message: Message) -> None:
        """The ASGI send, counting body bytes (for streaming helpers)."""
        body = message.get("body")
        if body:
            self.sent += len(body)
        del body
        await self._send(message)

    async def start(self, status: int, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Send the status line and headers (request id and date added).

        Checkpoint: always. Cancellation: the response may or may not have started.
        """
        raw = [(b"x-amz-request-id", self.request_id.encode()), (b"x-amz-id-2", ID2)]
        raw += [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers]
        self.status = status
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        *,
        content_type: str | None = "application/xml",
    ) -> None:
        """Send a whole response.

        Checkpoint: always. Cancellation: the response may be incomplete.
        """
        hdrs = list(headers)
        if content_type is not None and body:
            hdrs.append(("content-type", content_type))
        hdrs.append(("content-length", str(len(body))))
        await self.start(status, hdrs)
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def error(self, err: S3Error) -> None:
        """Send S3's error document for err (a HEAD or 304 gets the status alone).

        Checkpoint: always.
        """
        hdrs: list[tuple[str, str]] = []
        if err.code == "InvalidRange" and "ActualObjectSize" in err.fields:
            hdrs.append(("content-range", f"bytes */{err.fields['ActualObjectSize']}"))
        if self.scope.get("method") == "HEAD" or err.status == 304:
            hdrs.append(("x-amz-error-code", err.code))
            await self.start(err.status, [*hdrs, ("content-length", "0")])
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        body = error_xml(err, self.resource, self.request_id)
        await self.respond(err.status, body, hdrs)


# S3 sends a base64 host id; one per process is enough for clients that log it.
ID2: Final = secrets.token_urlsafe(48).encode()


# Request ids need to be distinct, not secret: a seeded PRNG instead of a system call each.
_ids = random.Random(secrets.randbits(64))


def new_request_id() -> str:
    """A request id like S3's: 16 upper-case hex digits, time-ordered."""
    return f"{time.time_ns() // 1000 & 0xFFFFFFFFFF:010X}{_ids.getrandbits(24):06X}"
