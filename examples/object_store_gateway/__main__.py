"""``python -m examples.object_store_gateway``: serve the S3 gateway with uvicorn.

uvicorn with uvloop and httptools, chosen by measurement (see the issue and the README): it sends
a ``memoryview`` body without copying it, sends ``100 Continue`` when the app first reads the
body, takes chunked request bodies, and reports a client that left as ``http.disconnect``. Each
of these is tested in ``tests/examples/gateway/test_server.py``.

SIGTERM or SIGINT: uvicorn stops accepting, lets requests in flight finish, then runs the
lifespan shutdown (the cache writes everything back, queued metadata commits), and the process
exits 0. Over TLS, closing a connection flushes what is left, sends ``close_notify`` and waits
for the peer's, which an idle keep-alive client never sends: uvloop's default wait of 30 s made
every stop with such a client take 30 s. The listening socket is created with an
``ssl_shutdown_timeout`` of :data:`TLS_SHUTDOWN_TIMEOUT` instead; requests in flight are not
affected (a connection is closed only after its response), nor are long uploads.
"""

from __future__ import annotations

import dataclasses
import resource
import signal
import sys
from typing import Any, Final

import uvicorn
import uvloop

from .app import create_app
from .config import ConfigError, GatewayConfig, parse_args

#: Seconds a closing TLS connection may take to flush its last bytes and exchange close_notify.
TLS_SHUTDOWN_TIMEOUT: Final = 2.0


class _Loop(uvloop.Loop):
    """uvloop, with a short TLS shutdown wait on the servers it creates."""

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_shutdown_timeout", TLS_SHUTDOWN_TIMEOUT)
        return await super().create_server(*args, **kwargs)


class _Config(uvicorn.Config):
    """uvicorn's configuration, running on :class:`_Loop`."""

    def get_loop_factory(self) -> Any:
        return _Loop


def _raise_fd_limit(wanted: int) -> None:
    """Raise the soft open-file limit towards the hard one: each open body holds a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, wanted))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def banner(config: GatewayConfig, port: int) -> str:
    """What the gateway prints at start: endpoint, credentials, a command to try."""
    endpoint = f"{config.scheme}://{config.host}:{port}"
    ca = " --no-verify-ssl" if config.tls else ""
    return (
        f"aiocache_inode S3 gateway on {endpoint} (data in {config.data_dir}, "
        f"cache {config.memory_limit >> 20} MiB)\n"
        f"  access key: {config.access_key}\n"
        f"  secret key: {config.secret_key}   (for local use; set AIOCACHE_GW_SECRET_KEY)\n"
        f"  try: AWS_ACCESS_KEY_ID={config.access_key} "
        f"AWS_SECRET_ACCESS_KEY={config.secret_key} AWS_DEFAULT_REGION={config.region} "
        f"aws --endpoint-url {endpoint}{ca} s3 ls\n"
        f"  metrics: {endpoint}/metrics   health: {endpoint}/healthz"
    )


class _Server(uvicorn.Server):
    """uvicorn's server, printing the banner once the socket is bound (so port 0 shows)."""

    def __init__(self, config: uvicorn.Config, gateway: GatewayConfig) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        await super().startup(sockets)  # type: ignore[arg-type]
        port = self.gateway.port
        for server in self.servers:
            for sock in server.sockets:
                port = sock.getsockname()[1]
                break
        print(banner(self.gateway, port), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the configuration, serve until SIGTERM or SIGINT, and return the exit status."""
    try:
        config = parse_args(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _raise_fd_limit(config.max_open_bodies + 256)
    # uvicorn lets go of a body object once send() returns (the transport may still hold a
    # derived view, which the streaming helper waits for), so the copy probe is not needed.
    app = create_app(dataclasses.replace(config, zero_copy=True))
    uv = _Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        ssl_certfile=config.certfile or None,
        ssl_keyfile=config.keyfile or None,
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=True,
    )
    server = _Server(uv, config)
    # uvicorn re-raises the signal that stopped it once shutdown is done; with these no-op
    # handlers in place that re-raise returns, so a graceful stop exits 0.
    previous = {
        sig: signal.signal(sig, lambda s, f: None) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
