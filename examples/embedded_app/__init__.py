"""A Starlette backend serving a directory through aiocache_inode, in place of ``StaticFiles``.

``python -m examples.embedded_app DIR [--host H] [--port P] [--memory-limit N]``.

- ``app``: :func:`create_app`, the application (lifespan-owned ``CacheStore``, ``/metrics``).
- ``files``: :class:`CachedFiles`, the ASGI app that serves and uploads files.
- ``conditional``: validators, preconditions and byte ranges, pure functions.
- ``__main__``: the command line (uvicorn).

Responses stream from the cache with ``aiocache_inode.asgi``, the helper the S3 gateway shares.
"""

from .app import create_app as create_app
from .files import CachedFiles as CachedFiles

__all__ = ["CachedFiles", "create_app"]
