"""The application: one ``CacheStore`` opened in the lifespan, ``CachedFiles`` and ``/metrics``.

``create_app(directory)`` is what a backend would write in place of
``Starlette(routes=[Mount("/", app=StaticFiles(directory=directory))])``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from aiocache_inode import CacheStore

from .files import CachedFiles

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator, Callable

    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DEFAULT_MEMORY_LIMIT", "create_app"]

DEFAULT_MEMORY_LIMIT = 256 << 20  # bytes: the page cache's budget


class _Exact:
    """Wrap an ASGI app so that ``Route`` passes it requests as they are."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def create_app(
    directory: str | os.PathLike[str],
    *,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    revalidate: float = 1.0,
    clock: Callable[[], float] | None = None,
    registry: CollectorRegistry | None = None,
    allow_put: bool = True,
    max_open: int = 1000,
    **store_options: Any,
) -> Starlette:
    """A Starlette app serving ``directory`` through a page cache of ``memory_limit`` bytes.

    The store (write-back mode) is opened by the lifespan and, on shutdown, writes back
    everything dirty before the files are closed. ``GET /metrics`` serves the store's registry.

    Args:
        directory: the root served (and written by PUT, unless ``allow_put`` is False).
        memory_limit: the cache's byte budget.
        revalidate: seconds between identity checks of an open file.
        clock: monotonic seconds for the revalidation interval (tests inject one).
        registry: the Prometheus registry (default: a new one, served at ``/metrics``).
        allow_put: accept PUT uploads.
        max_open: the most files kept open.
        **store_options: more ``CacheStore`` keyword arguments (tunables).

    Raises:
        ValueError: ``directory`` is not a directory, a bad ``revalidate`` or ``max_open``.
    """
    registry = CollectorRegistry() if registry is None else registry
    files = CachedFiles(
        directory, revalidate=revalidate, clock=clock, max_open=max_open, allow_put=allow_put
    )
    metrics = make_asgi_app(registry=registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with CacheStore(
                memory_limit, registry=registry, write_back=True, **store_options
            ) as store:
                files.store = store
                yield
        finally:
            files.store = None
            await files.aclose()

    app = Starlette(
        routes=[
            Route("/metrics", _Exact(metrics)),
            Mount("/metrics", app=metrics),
            Mount("/", app=files),
        ],
        lifespan=lifespan,
    )
    app.state.files = files
    return app
