"""SIGTERM over TLS with an idle keep-alive client: the gateway stops without its close_notify.

uvloop waits for the peer's ``close_notify`` when it closes a TLS connection, 30 s by default;
an idle keep-alive client never sends one. The gateway's listener uses a short TLS shutdown
timeout instead, so the stop is bounded by that (2 s), far below uvloop's default.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
from typing import TYPE_CHECKING

from examples.object_store_gateway.__main__ import TLS_SHUTDOWN_TIMEOUT

from .conftest import start_gateway

if TYPE_CHECKING:
    from pathlib import Path

# uvloop's own default is 30 s: a stop that needs more than this waited for the idle client.
EXIT_DEADLINE = 20.0


def _idle_keepalive(port: int, ca_file: str) -> ssl.SSLSocket:
    """A TLS connection that made one keep-alive request, read the answer, and went quiet."""
    ctx = ssl.create_default_context(cafile=ca_file)
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                           server_hostname="127.0.0.1")  # fmt: skip
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    got = b""
    while not got.endswith(b"ok\n"):
        chunk = sock.recv(4096)
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 200")
    assert b"connection: close" not in got.lower()
    return sock


def test_sigterm_with_idle_tls_client_exits_without_its_close_notify(tmp_path: Path) -> None:
    assert TLS_SHUTDOWN_TIMEOUT < EXIT_DEADLINE
    gw = start_gateway(tmp_path, tls=True)
    assert gw.ca_file is not None
    sock = _idle_keepalive(gw.port, gw.ca_file)
    try:
        gw.proc.send_signal(signal.SIGTERM)
        try:
            code = gw.proc.wait(EXIT_DEADLINE)
        except subprocess.TimeoutExpired:
            gw.kill()
            raise AssertionError(
                f"gateway still running {EXIT_DEADLINE} s after SIGTERM:\n{gw.log()}"
            ) from None
        assert code == 0, gw.log()
    finally:
        sock.close()
        gw.kill()
