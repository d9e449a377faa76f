"""The app under the real server: ``python -m examples.embedded_app`` (uvicorn, uvloop, httptools).

Zero copy is live here: bodies go to uvloop as pool memoryviews, so slow readers of one file
while other requests evict the cache check that no page is reused while a transport holds it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[3]
BIG_SIZE = 6 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, root: Path, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.root = root
        self.port = port
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "root"
    root.mkdir()
    rnd = random.Random(7)
    (root / "a.bin").write_bytes(rnd.randbytes(BIG_SIZE))
    (root / "b.bin").write_bytes(rnd.randbytes(BIG_SIZE))
    (root / "small.txt").write_bytes(b"small file\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOCACHE")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "examples.embedded_app",
            str(root),
            "--port",
            str(port),
            "--memory-limit",
            "4MiB",  # smaller than one file: serving evicts all the time
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    srv = Server(root, port, proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(srv.url + "/metrics", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


def slow_get(url_host: str, port: int, path: str, pause: float) -> bytes:
    """GET over a raw socket, reading 64 KiB at a time with a pause: the server's writes block."""
    with socket.create_connection((url_host, port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            b = s.recv(64 << 10)
            if not b:
                break
            chunks.append(b)
            time.sleep(pause)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def pinned(srv: Server) -> float:
    for line in httpx.get(srv.url + "/metrics").text.splitlines():
        if line.startswith("aiocache_inode_pinned_bytes "):
            return float(line.split()[1])
    raise AssertionError("no aiocache_inode_pinned_bytes")


def test_under_uvicorn(server: Server) -> None:
    a = (server.root / "a.bin").read_bytes()
    b = (server.root / "b.bin").read_bytes()
    with httpx.Client(base_url=server.url) as c:
        r = c.get("/small.txt")
        assert (r.status_code, r.content) == (200, b"small file\n")
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert c.get("/small.txt", headers={"if-none-match": r.headers["etag"]}).status_code == 304
        assert c.get("/a.bin").content == a
        r = c.get("/a.bin", headers={"range": "bytes=1000000-3000000"})
        assert (r.status_code, r.content) == (206, a[1000000:3000001])
        assert c.get("/../etc/passwd").status_code == 404
        assert c.head("/b.bin").headers["content-length"] == str(BIG_SIZE)
        assert c.put("/up.bin", content=b"uploaded").status_code == 201
        assert c.get("/up.bin").content == b"uploaded"

    # Slow readers of a.bin (their sockets block, uvloop queues the bodies) while fast readers
    # of b.bin churn the 4 MiB cache: every body must still arrive intact.
    want_a, want_b = hashlib.sha256(a).digest(), hashlib.sha256(b).digest()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        slow = [pool.submit(slow_get, "127.0.0.1", server.port, "/a.bin", 0.002) for _ in range(2)]
        fast = [pool.submit(httpx.get, server.url + "/b.bin") for _ in range(6)]
        for f in fast:
            assert hashlib.sha256(f.result().content).digest() == want_b
        for f_slow in slow:
            assert hashlib.sha256(f_slow.result()).digest() == want_a

    # A client that goes away mid-body leaves no pin behind.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /a.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1 << 16)
    deadline = time.monotonic() + 20
    while pinned(server) != 0:
        assert time.monotonic() < deadline, "pins leaked after a disconnect"
        time.sleep(0.05)

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=20) == 0
    assert (server.root / "up.bin").read_bytes() == b"uploaded"
