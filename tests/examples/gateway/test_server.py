"""The server under the gateway (uvicorn, uvloop, httptools), tested for what the gateway needs.

100 Continue, chunked request bodies, ``http.disconnect`` when a client leaves mid-download, a
``memoryview`` body sent without a copy, and a graceful SIGTERM that finishes the request in
flight and exits 0.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING

from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

from .conftest import REGION, boto3_client, free_port, start_gateway

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import GatewayProcess

UNSIGNED = "UNSIGNED-PAYLOAD"


def signed(gw: GatewayProcess, method: str, path: str, headers: dict[str, str]) -> dict[str, str]:
    hdrs = {"host": f"127.0.0.1:{gw.port}", "x-amz-content-sha256": UNSIGNED, **headers}
    # The generic signer keeps the x-amz-content-sha256 given (S3's would hash the empty body).
    req = AWSRequest(method=method, url=f"{gw.endpoint}{path}", headers=hdrs)
    SigV4Auth(Credentials(gw.access_key, gw.secret_key), "s3", REGION).add_auth(req)
    return dict(req.headers.items())


def connect(gw: GatewayProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    return s


def head_block(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(s: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk
        rest += chunk
    return status, rest


def metric(gw: GatewayProcess, name: str) -> float:
    with urllib.request.urlopen(f"{gw.endpoint}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith((name + " ", name + "{")):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def test_100_continue_chunked_and_graceful_sigterm(gateway_server: GatewayProcess) -> None:
    gw = gateway_server
    s3 = boto3_client(gw)
    s3.create_bucket(Bucket="srv")
    body = os.urandom(200_000)
    # 100 Continue: the server asks for the body only once the app reads it.
    hdrs = signed(gw, "PUT", "/srv/cont", {"content-length": str(len(body))})
    hdrs["expect"] = "100-continue"
    with connect(gw) as s:
        s.sendall(head_block("PUT", "/srv/cont", hdrs))
        interim = s.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        s.sendall(body)
        status, _ = read_response(s)
        assert status == 200
    # Chunked transfer encoding (no Content-Length).
    hdrs = signed(gw, "PUT", "/srv/chunked", {"transfer-encoding": "chunked"})
    with connect(gw) as s:
        s.sendall(head_block("PUT", "/srv/chunked", hdrs))
        for i in range(0, len(body), 50_000):
            piece = body[i : i + 50_000]
            s.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        status, _ = read_response(s)
        assert status == 200
    for key in ("cont", "chunked"):
        assert s3.get_object(Bucket="srv", Key=key)["Body"].read() == body
    # SIGTERM with an upload in flight: it finishes, is acknowledged, the process exits 0.
    hdrs = signed(gw, "PUT", "/srv/inflight", {"content-length": str(len(body))})
    with connect(gw) as s:
        s.sendall(head_block("PUT", "/srv/inflight", hdrs) + body[:1000])
        deadline = time.monotonic() + 10
        while metric(gw, "aiocache_gateway_requests_in_flight") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        gw.proc.send_signal(signal.SIGTERM)
        s.sendall(body[1000:])
        status, _ = read_response(s)
        assert status == 200
    assert gw.proc.wait(30) == 0
    gw.restart()
    s3 = boto3_client(gw)
    assert s3.get_object(Bucket="srv", Key="inflight")["Body"].read() == body


def test_client_leaving_mid_download_is_noticed(gateway_server: GatewayProcess) -> None:
    gw = gateway_server
    s3 = boto3_client(gw)
    s3.create_bucket(Bucket="dls")
    s3.put_object(Bucket="dls", Key="big", Body=os.urandom(24 << 20))
    hdrs = signed(gw, "GET", "/dls/big", {})
    with connect(gw) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(head_block("GET", "/dls/big", hdrs))
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 10
        while metric(gw, "aiocache_inode_pinned_bytes") == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    # The client left with most of the body unsent: the stream stops, pins and request go.
    deadline = time.monotonic() + 20
    while (
        metric(gw, "aiocache_gateway_requests_in_flight") > 0
        or metric(gw, "aiocache_inode_pinned_bytes") > 0
    ):
        assert time.monotonic() < deadline, "the download was not stopped"
        time.sleep(0.02)
    assert s3.head_object(Bucket="dls", Key="big")["ContentLength"] == 24 << 20


_MEMORYVIEW_APP = r"""
import sys, tracemalloc, uvicorn
SIZE = 64 << 20
data = bytearray(b"z" * SIZE)
peak = [0]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/peak":
        body = str(peak[0]).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(SIZE).encode())]})
    tracemalloc.start()
    await send({"type": "http.response.body", "body": memoryview(data)})
    peak[0] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            log_level="warning")
"""


def test_uvicorn_sends_a_memoryview_without_copying(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _MEMORYVIEW_APP, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/peak", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/body", timeout=60) as r:
            got = r.read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(b"z" * (64 << 20)).digest()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/peak", timeout=10) as r:
            peak = int(r.read())
        # A copy of the body would allocate 64 MiB; the send allocated almost nothing.
        assert peak < 1 << 20, peak
    finally:
        proc.terminate()
        proc.wait(10)


def test_tls_gateway_serves_boto3(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, tls=True)
    try:
        s3 = boto3_client(gw)
        s3.create_bucket(Bucket="tlsb")
        data = os.urandom(100_000)
        s3.put_object(Bucket="tlsb", Key="k", Body=data)
        assert s3.get_object(Bucket="tlsb", Key="k")["Body"].read() == data
        # An idle TLS connection would hold the graceful stop for the TLS close handshake.
        s3.close()
    finally:
        assert gw.stop() == 0
