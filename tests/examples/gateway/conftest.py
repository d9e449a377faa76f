"""Gateway fixtures: the real server as a subprocess (plain and TLS), and the app in process.

``gateway_server`` / ``gateway_server_tls`` start ``python -m examples.object_store_gateway`` on
a free loopback port with a fresh data directory and the credentials ``test-access`` /
``test-secret-key``, wait (bounded) for ``GET /healthz``, yield a :class:`GatewayProcess`, and
stop it with SIGTERM (then SIGKILL if it hangs), checking nothing is left running.
``gateway_app`` runs the ASGI app in the test's event loop behind ``httpx.ASGITransport``.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    import httpx

ACCESS_KEY = "test-access"
SECRET_KEY = "test-secret-key"
REGION = "us-east-1"
REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port free on loopback right now (bind to 0, read it, close)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GatewayProcess:
    """A running gateway subprocess."""

    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    ca_file: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll /healthz until it answers 200, bounded by timeout."""
        deadline = time.monotonic() + timeout
        ctx = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(
                    f"{self.endpoint}/healthz", timeout=2, context=ctx
                ) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not ready after {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send sig and wait for the exit (SIGKILL after timeout); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def restart(self) -> None:
        """Start the same gateway again on the same port and data directory."""
        assert self.proc.poll() is not None
        self.proc = _spawn(self.args, self.env, self.log_path)
        self.wait_ready()


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "examples.object_store_gateway", *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def start_gateway(
    tmp_path: Path,
    *,
    tls: bool = False,
    extra_args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> GatewayProcess:
    """Start a gateway subprocess in tmp_path and wait until it is ready."""
    data_dir = tmp_path / "gw-data"
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "AIOCACHE_GW_ACCESS_KEY": ACCESS_KEY,
            "AIOCACHE_GW_SECRET_KEY": SECRET_KEY,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra_env or {})
    args = ["--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    args += ["--memory-limit", "64MiB"]
    ca_file = None
    if tls:
        cert, key = make_cert(tmp_path)
        args += ["--certfile", str(cert), "--keyfile", str(key)]
        ca_file = str(cert)
    args += extra_args or []
    log_path = tmp_path / "gateway.log"
    proc = _spawn(args, env, log_path)
    gw = GatewayProcess(
        endpoint=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        data_dir=data_dir,
        proc=proc,
        port=port,
        log_path=log_path,
        ca_file=ca_file,
        env=env,
        args=args,
    )
    try:
        gw.wait_ready()
    except BaseException:
        gw.kill()
        raise
    return gw


def make_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made with openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert),
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def gateway_server(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A gateway subprocess over plain HTTP; stopped with SIGTERM at teardown."""
    gw = start_gateway(tmp_path)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def gateway_server_tls(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A gateway subprocess over HTTPS with a self-signed certificate (``.ca_file``)."""
    gw = start_gateway(tmp_path, tls=True)
    try:
        yield gw
    finally:
        gw.stop()


def boto3_client(gw: GatewayProcess, **config: Any) -> Any:
    """A boto3 S3 client for a gateway subprocess, path-style, default settings otherwise."""
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    return boto3.client(
        "s3",
        endpoint_url=gw.endpoint,
        aws_access_key_id=gw.access_key,
        aws_secret_access_key=gw.secret_key,
        region_name=REGION,
        verify=gw.ca_file if gw.ca_file else True,
        config=Config(s3={"addressing_style": "path"}, **config),
    )


@dataclass
class InProcessGateway:
    """The app in process: an httpx client over ASGITransport, signing with SigV4."""

    client: httpx.AsyncClient
    app: Any
    data_dir: Path
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def sign(
        self,
        method: str,
        url: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        payload: str | None = None,
    ) -> dict[str, str]:
        """Headers for a SigV4-signed request (botocore's signer, the oracle)."""
        from botocore.auth import S3SigV4Auth, SigV4Auth  # type: ignore[import-untyped]
        from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
        from botocore.credentials import Credentials  # type: ignore[import-untyped]

        hdrs = dict(headers or {})
        if payload is not None:
            hdrs["x-amz-content-sha256"] = payload
        req = AWSRequest(method=method, url=f"http://gateway{url}", data=body, headers=hdrs)
        # With an explicit payload hash, the generic signer (it signs the header as given).
        signer = S3SigV4Auth if payload is None else SigV4Auth
        signer(Credentials(self.access_key, self.secret_key), "s3", REGION).add_auth(req)
        return {k: v for k, v in req.headers.items() if k.lower() != "host"}

    async def request(
        self,
        method: str,
        url: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        signed: bool = True,
        payload: str | None = None,
    ) -> httpx.Response:
        """Send a (signed) request through the ASGI transport."""
        hdrs = self.sign(method, url, body, headers, payload=payload) if signed else headers
        return await self.client.request(method, url, content=body, headers=hdrs)


@pytest.fixture
async def gateway_app(tmp_path: Path) -> AsyncIterator[InProcessGateway]:
    """The gateway app in the test's event loop (asyncio), lifespan run, small part size."""
    import httpx

    from examples.object_store_gateway.app import create_app
    from examples.object_store_gateway.config import GatewayConfig

    config = GatewayConfig(
        data_dir=str(tmp_path / "data"),
        memory_limit=16 << 20,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        min_part_size=1024,
    )
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield InProcessGateway(client, app, tmp_path / "data")
