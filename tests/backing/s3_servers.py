"""S3 servers for the S3 backing tests: moto's standalone server, a one-node Ceph RGW, and a
loopback TCP proxy that injects faults in front of either.

Plain classes (start/stop); the session fixtures in test_s3.py wrap them.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from aiocache_inode.backing.s3 import S3Config

if TYPE_CHECKING:
    from typing import Any

HERE = Path(__file__).resolve().parent
CEPH_SCRIPT = HERE / "ceph_rgw.sh"
CEPH_BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
ACCESS_KEY = "testaccess"
SECRET_KEY = "testsecretkey"
BUCKET = "backing-tests"


def free_port() -> int:
    """A free loopback port chosen by the kernel (ephemeral range)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_low_ports(count: int) -> list[int]:
    """``count`` consecutive free loopback ports below 32768 (Ceph's mon cannot bind a port a
    client socket holds, and client sockets live in the ephemeral range above 32768)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10_000, 32_000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return list(range(base, base + count))
    raise RuntimeError("no free ports below 32768")


def wait_http(url: str, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until any HTTP answer arrives, the process dies, or the deadline passes."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # any status is an answer
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class Endpoint:
    """One S3 endpoint the tests talk to."""

    name: str
    url: str
    bucket: str = BUCKET
    #: S3Config fields every client of this endpoint needs (checksum settings, CA bundle).
    options: dict[str, Any] = field(default_factory=dict)
    _boto: Any = field(default=None, repr=False, compare=False)

    def config(self, url: str | None = None, **overrides: Any) -> S3Config:
        settings: dict[str, Any] = {
            "endpoint_url": url or self.url,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "max_attempts": 3,
            "connect_timeout": 5.0,
            "read_timeout": 20.0,
        }
        settings.update(self.options)
        settings.update(overrides)
        return S3Config(**settings)

    def boto3(self, **config: Any) -> Any:
        """A plain synchronous boto3 client: the independent observer of what the store holds.

        Built once per endpoint (building one costs tens of milliseconds) unless ``config``
        asks for a different one.
        """
        if not config and self._boto is not None:
            return self._boto
        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            verify=self.options.get("verify"),
            config=Config(s3={"addressing_style": "path"}, **config),
        )
        if not config:
            self._boto = client
        return client


class MotoServer:
    """``python -m moto.server`` on a free loopback port, as a subprocess."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Endpoint:
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            wait_http(self.url + "/moto-api/", time.monotonic() + 60, self.proc)
        except BaseException:
            self.stop()
            raise
        endpoint = Endpoint("moto", self.url)
        endpoint.boto3().create_bucket(Bucket=endpoint.bucket)
        return endpoint

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def ceph_missing() -> str | None:
    """Why a Ceph cluster cannot be started here, or None when it can."""
    missing = [name for name in CEPH_BINARIES if shutil.which(name) is None]
    if missing:
        return (
            f"Ceph binaries not installed ({', '.join(missing)}); install ceph-mon ceph-osd"
            " radosgw ceph-common (.ci/run does)"
        )
    return None


class CephServer:
    """A one-node Ceph (mon, memstore OSD, radosgw) in ``workdir`` via ceph_rgw.sh.

    With ``tls``, radosgw also serves https on a second port with a self-signed certificate.
    """

    def __init__(self, workdir: Path, *, tls: bool = True) -> None:
        self.workdir = workdir
        self.cluster = workdir / "cluster"
        self.tls = tls
        self.http_port, self.mon_port, self.https_port = free_low_ports(3)
        self.start_seconds = 0.0
        self.started = False

    def _certificate(self) -> tuple[Path, Path]:
        cert, key = self.workdir / "cert.pem", self.workdir / "key.pem"
        command = [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ]
        command += ["-keyout", str(key), "-out", str(cert)]
        subprocess.run(command, check=True, capture_output=True)
        return cert, key

    def start(self) -> tuple[Endpoint, Endpoint | None]:
        args = [
            "bash", str(CEPH_SCRIPT), "start", str(self.cluster),
            str(self.http_port), str(self.mon_port), ACCESS_KEY, SECRET_KEY,
        ]  # fmt: skip
        cert = None
        if self.tls:
            cert, key = self._certificate()
            args += [str(self.https_port), str(cert), str(key)]
        began = time.monotonic()
        self.started = True
        result = subprocess.run(args, capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            self.stop()
            raise RuntimeError(f"ceph_rgw.sh start failed:\n{result.stderr[-3000:]}")
        self.start_seconds = time.monotonic() - began
        http = Endpoint("ceph", f"http://127.0.0.1:{self.http_port}")
        http.boto3().create_bucket(Bucket=http.bucket)
        https = None
        if cert is not None:
            https = Endpoint(
                "ceph-https", f"https://127.0.0.1:{self.https_port}", options={"verify": str(cert)}
            )
        return http, https

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                ["bash", str(CEPH_SCRIPT), "stop", str(self.cluster)],
                capture_output=True,
                timeout=120,
                check=False,
            )
            self.started = False


# --------------------------------------------------------------------------------------------
# A fault-injecting TCP proxy
# --------------------------------------------------------------------------------------------

SLOWDOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)
SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FaultProxy:
    """A loopback TCP proxy in front of ``upstream``, run by threads, that can misbehave.

    - ``slow_down(n)``: the next ``n`` connections each get one ``503 SlowDown`` answer and are
      closed. Decisions are per connection: clients that should meet them per request keep no
      idle connections (``keepalive_timeout=0``).
    - ``kill()``: every live connection is reset and new ones are reset on accept, as if the
      store had died; ``revive()`` forwards again.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()  # Protected by: _lock.
        self._slowdowns = 0  # Protected by: _lock.
        self._dead = False  # Protected by: _lock.
        self.slowdowns_sent = 0  # Protected by: _lock.
        self._closing = False
        self._threads: list[threading.Thread] = []
        thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- control --------------------------------------------------------------------------------

    def slow_down(self, count: int) -> None:
        with self._lock:
            self._slowdowns = count

    def kill(self) -> None:
        with self._lock:
            self._dead = True
        self._drop_live()

    def revive(self) -> None:
        with self._lock:
            self._dead = False

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._listener.close()
        self._drop_live()
        for thread in self._threads:
            thread.join(5)

    # -- machinery ------------------------------------------------------------------------------

    def _drop_live(self) -> None:
        with self._lock:
            live, self._live = self._live, set()
        for sock in live:
            _reset(sock)

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                dead = self._dead
                slow = self._slowdowns > 0
                if slow and not dead:
                    self._slowdowns -= 1
                    self.slowdowns_sent += 1
            if dead:
                _reset(conn)
                continue
            target = self._slow_down if slow else self._forward
            thread = threading.Thread(target=target, args=(conn,), daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def _slow_down(self, conn: socket.socket) -> None:
        with contextlib.closing(conn):
            conn.settimeout(5)
            data = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if b"100-continue" not in head.lower():
                    while len(rest) < length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        rest += chunk
                conn.sendall(SLOWDOWN % (len(SLOWDOWN_BODY), SLOWDOWN_BODY))
                conn.shutdown(socket.SHUT_WR)

    def _forward(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(conn)
            return
        upstream.settimeout(None)
        with self._lock:
            if self._dead:
                _reset(conn)
                upstream.close()
                return
            self._live.update((conn, upstream))
        pair = {conn: upstream, upstream: conn}
        try:
            while True:
                readable, _, _ = select.select(list(pair), [], [], 1.0)
                if self._closing:
                    return
                for sock in readable:
                    chunk = sock.recv(262144)
                    if not chunk:
                        return
                    pair[sock].sendall(chunk)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._live.discard(conn)
                self._live.discard(upstream)
            conn.close()
            upstream.close()


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (linger 0), as a crashed peer would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.close()
