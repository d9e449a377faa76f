"""The S3 gateway against nginx and moto: hot GETs with wrk on presigned URLs, and a 64 MiB PUT.

Three servers on loopback, each started here in a temporary directory and stopped at the end:

- the gateway (``python -m examples.object_store_gateway``, 256 MiB cache);
- Debian's nginx serving the same bytes from static files (one worker, ``master_process off``,
  no daemon, every path in the temporary directory), with ``dav_methods PUT`` for the upload;
- moto server (``python -m moto.server``), the Python S3 server people reach for.

GET: ``wrk -t1 -c16`` for a few seconds on a presigned URL (a plain URL for nginx) of a 4 KiB
and a 1 MiB object, after a warm-up round (so the gateway's copy is cached: a *hot* GET). PUT:
one 64 MiB body with ``http.client`` on a presigned PUT URL (``UNSIGNED-PAYLOAD``; the gateway
still computes every digest and makes the object durable before its 200), compared with the MD5
rate of one core, which bounds a PUT's throughput (S3's ETag is the body's MD5).

Targets (issue 8): hot 1 MiB GET >= 0.5x nginx, hot 4 KiB GET >= 0.2x nginx req/s, both >= 3x
moto; PUT >= 0.5x the MD5 rate of one core. Ratios are printed, never asserted.
``python -m benchmarks.gateway`` runs it alone; ``BENCH_GATEWAY_SECONDS`` sets wrk's duration.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

from ._harness import KIB, MIB, Result, info_result, ratio_result, rng, run_interleaved, summarize

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

REPO: Final = Path(__file__).resolve().parents[1]
WORKLOAD: Final = "gateway"
ACCESS_KEY: Final = "bench-access"
SECRET_KEY: Final = "bench-secret-key"
BUCKET: Final = "bench"
SIZES: Final = {"4 KiB": 4 * KIB, "1 MiB": MIB}
PUT_SIZE: Final = 64 * MIB
WRK_SECONDS: Final = float(os.environ.get("BENCH_GATEWAY_SECONDS", "3"))
WRK_CONNECTIONS: Final = 16
#: (size, baseline) -> the target ratio of the gateway's req/s over the baseline's.
GET_TARGETS: Final = {
    ("1 MiB", "nginx"): 0.5,
    ("4 KiB", "nginx"): 0.2,
    ("1 MiB", "moto"): 3.0,
    ("4 KiB", "moto"): 3.0,
}
PUT_TARGET: Final = 0.5
START_TIMEOUT: Final = 30.0

_NGINX_CONF: Final = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_max_body_size 0;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/octet-stream bin; }}
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        location / {{
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
"""


def free_port() -> int:
    """A loopback TCP port free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``url`` until it answers (any HTTP status), bounded; fail if ``proc`` exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not answering after {START_TIMEOUT} s: {log.read_text()}")
        time.sleep(0.05)


@contextlib.contextmanager
def server(
    args: list[str], url: str, tmp: Path, name: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` until the block ends (SIGTERM, then SIGKILL), once ``url`` answers."""
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env or dict(os.environ)
        )
    try:
        wait_http(url, proc, log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def s3_client(endpoint: str, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> Any:
    """A path-style boto3 client for ``endpoint`` (the benchmark's credentials by default)."""
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )


_REQS: Final = re.compile(r"Requests/sec:\s+([0-9.]+)")


def wrk(url: str) -> float:
    """Requests per second ``wrk`` sustains on ``url``; raises on errors or non-2xx answers."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS:g}s", url],
        capture_output=True,
        text=True,
        timeout=WRK_SECONDS + 60,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors on {url}:\n{out}")
    m = _REQS.search(out)
    if m is None:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    return float(m.group(1))


def put(url: str, body: bytes) -> float:
    """Seconds for one PUT of ``body`` to ``url`` (http.client, Content-Length, one request)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        t0 = time.perf_counter()
        conn.request("PUT", path, body=body, headers={"Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - t0
    finally:
        conn.close()
    if response.status not in (200, 201, 204):
        raise RuntimeError(f"PUT {url}: HTTP {response.status}")
    return elapsed


def put_rate(url: str, body: bytes) -> float:
    """Bytes per second of one PUT of ``body`` to ``url``."""
    return len(body) / put(url, body)


def md5_rate(body: bytes) -> float:
    """Bytes per second one core hashes with MD5 (best of three)."""
    best = min(_timed(lambda: hashlib.md5(body).digest()) for _ in range(3))
    return len(body) / best


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _case(fn: Callable[[], float]) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        return fn()

    return run


def run() -> list[Result]:
    """Start the three servers, measure, stop them; the ratios against their targets."""
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not installed (Debian package {tool!r})")
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as d:
        return _run(Path(d))


def _run(tmp: Path) -> list[Result]:
    r = rng(8)
    bodies = {name: r.randbytes(size) for name, size in SIZES.items()}
    upload = r.randbytes(PUT_SIZE)
    gw_port, nginx_port, moto_port = free_port(), free_port(), free_port()
    (tmp / "www" / BUCKET).mkdir(parents=True)
    for name, body in bodies.items():
        (tmp / "www" / BUCKET / name.replace(" ", "")).write_bytes(body)
    conf = tmp / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(tmp=tmp, port=nginx_port), encoding="utf-8")
    env = dict(os.environ)
    env |= {"AIOCACHE_GW_ACCESS_KEY": ACCESS_KEY, "AIOCACHE_GW_SECRET_KEY": SECRET_KEY}
    gw = f"http://127.0.0.1:{gw_port}"
    moto = f"http://127.0.0.1:{moto_port}"
    nginx = f"http://127.0.0.1:{nginx_port}"
    with (
        server(
            [
                sys.executable,
                "-m",
                "examples.object_store_gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(gw_port),
                "--data-dir",
                str(tmp / "gw-data"),
                "--memory-limit",
                "256MiB",
            ],
            f"{gw}/healthz",
            tmp,
            "gateway",
            env,
        ),
        server(["nginx", "-c", str(conf), "-p", str(tmp)], f"{nginx}/", tmp, "nginx"),
        server(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            f"{moto}/",
            tmp,
            "moto",
        ),
    ):
        urls: dict[str, dict[str, str]] = {"nginx": {}, "gateway": {}, "moto": {}}
        put_urls: dict[str, str] = {"nginx": f"{nginx}/{BUCKET}/upload.bin"}
        for label, endpoint in (("gateway", gw), ("moto", moto)):
            s3 = s3_client(endpoint)
            s3.create_bucket(Bucket=BUCKET)
            for name, body in bodies.items():
                key = name.replace(" ", "")
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)
                urls[label][name] = s3.generate_presigned_url(
                    "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600
                )
            put_urls[label] = s3.generate_presigned_url(
                "put_object", Params={"Bucket": BUCKET, "Key": "upload.bin"}, ExpiresIn=3600
            )
        for name in bodies:
            urls["nginx"][name] = f"{nginx}/{BUCKET}/{name.replace(' ', '')}"
        # Every server returns the same bytes.
        for label, by_size in urls.items():
            for name, url in by_size.items():
                with urllib.request.urlopen(url, timeout=30) as resp:
                    if resp.read() != bodies[name]:
                        raise RuntimeError(f"{label} returned other bytes for {name}")

        cases: dict[str, Callable[[], Awaitable[float]]] = {}
        for name in bodies:
            for label in ("gateway", "nginx", "moto"):
                cases[f"GET {name} {label}"] = _case(functools.partial(wrk, urls[label][name]))
        for label in ("gateway", "nginx", "moto"):
            cases[f"PUT {label}"] = _case(functools.partial(put_rate, put_urls[label], upload))
        samples = anyio.run(run_interleaved, cases)
        md5 = md5_rate(upload)

    results: list[Result] = []
    for (name, baseline), target in GET_TARGETS.items():
        results.append(
            ratio_result(
                WORKLOAD,
                f"hot GET {name} (wrk -c{WRK_CONNECTIONS}, presigned)",
                samples[f"GET {name} gateway"],
                baseline,
                samples[f"GET {name} {baseline}"],
                unit="req/s",
                target=target,
                higher_is_better=True,
            )
        )
    put_stats = summarize(samples["PUT gateway"])
    results.append(
        info_result(
            WORKLOAD,
            "PUT 64 MiB (presigned, one request)",
            put_stats,
            unit="B/s",
            ratio=put_stats.median / md5,
            ratio_desc="median PUT bytes/s over the MD5 bytes/s of one core",
            baseline="MD5, one core",
            baseline_median=md5,
            target=PUT_TARGET,
            note=f"MD5 {md5 / MIB:.0f} MiB/s",
        )
    )
    results.extend(
        ratio_result(
            WORKLOAD,
            "PUT 64 MiB (presigned, one request)",
            samples["PUT gateway"],
            baseline,
            samples[f"PUT {baseline}"],
            unit="B/s",
            target=None,
            higher_is_better=True,
            note="nginx: dav_methods PUT to a file" if baseline == "nginx" else "",
        )
        for baseline in ("nginx", "moto")
    )
    return results


def main() -> int:
    """Run alone: print the results table."""
    from ._harness import print_results

    print_results(run(), WORKLOAD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
