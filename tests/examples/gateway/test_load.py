"""Load test: 64 concurrent clients mixing GET, PUT and LIST against the gateway subprocess.

For a bounded time (``LOAD_SECONDS``), 64 threads share one boto3 client (botocore clients are
thread-safe; its pool holds 64 connections) and each loops over a random mix: GET of a shared
object (contents checked by MD5) or of one it wrote itself, PUT of a fresh object of 1 KiB to
512 KiB, and ListObjectsV2 of a prefix. Together they write several times the gateway's 64 MiB
cache, so it evicts throughout. Every request must succeed with the right bytes.

Memory: the gateway's peak resident set (``VmHWM``) must stay within its resident set when idle
(after start-up, before the load), plus the cache budget (64 MiB), plus a stated overhead of
96 MiB: 64 requests in flight, each holding up to one 512 KiB body and its parsing and socket
buffers (~1 MiB each), and the allocator's fragmentation under that churn.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final

import pytest

from .conftest import boto3_client

if TYPE_CHECKING:
    from .conftest import GatewayProcess

KIB: Final = 1024
MIB: Final = 1024 * KIB
CLIENTS: Final = 64
LOAD_SECONDS: Final = 20.0
MEMORY_LIMIT: Final = 64 * MIB  # what the gateway_server fixture passes
OVERHEAD: Final = 96 * MIB
BUCKET: Final = "load"
SHARED: Final = 64


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def metric_sum(gw: GatewayProcess, name: str, label: str = "") -> float:
    """The sum of a series' samples on the gateway's /metrics, those with ``label`` only."""
    with urllib.request.urlopen(f"{gw.endpoint}/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    samples = [
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if (line.startswith((name + " ", name + "{"))) and label in line
    ]
    if not samples:
        raise KeyError(name)
    return sum(samples)


@pytest.mark.slow
def test_64_clients_mixing_get_put_list(gateway_server: GatewayProcess) -> None:
    gw = gateway_server
    s3 = boto3_client(gw, max_pool_connections=CLIENTS, retries={"max_attempts": 1})
    s3.create_bucket(Bucket=BUCKET)
    seed = random.Random(1)
    shared: dict[str, str] = {}
    for i in range(SHARED):
        body = seed.randbytes(seed.choice((4 * KIB, 64 * KIB, 256 * KIB)))
        s3.put_object(Bucket=BUCKET, Key=f"shared/{i}", Body=body)
        shared[f"shared/{i}"] = hashlib.md5(body).hexdigest()
    idle_rss = status_kib(gw.proc.pid, "VmRSS") * KIB

    deadline = time.monotonic() + LOAD_SECONDS
    counts = {"GET": 0, "PUT": 0, "LIST": 0}
    lock = threading.Lock()

    def client(n: int) -> int:
        rng = random.Random(100 + n)
        mine: dict[str, str] = {}
        done = 0
        while time.monotonic() < deadline:
            op = rng.choices(("GET", "PUT", "LIST"), weights=(6, 3, 1))[0]
            if op == "GET":
                pool = mine if mine and rng.random() < 0.3 else shared
                key = rng.choice(list(pool))
                data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                assert hashlib.md5(data).hexdigest() == pool[key], key
            elif op == "PUT":
                key = f"client{n}/{done}"
                body = rng.randbytes(rng.randrange(KIB, 512 * KIB))
                etag = s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"]
                mine[key] = hashlib.md5(body).hexdigest()
                assert etag.strip('"') == mine[key], key
            else:
                prefix = rng.choice(["shared/", f"client{n}/"])
                page = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix, MaxKeys=100)
                keys = {o["Key"] for o in page.get("Contents", [])}
                expected = set(shared) if prefix == "shared/" else set(mine)
                if page["IsTruncated"]:
                    assert len(keys) == 100, prefix
                    assert keys <= expected, prefix
                else:
                    assert keys == expected, prefix
            done += 1
            with lock:
                counts[op] += 1
        return done

    with ThreadPoolExecutor(CLIENTS) as pool:
        per_client = list(pool.map(client, range(CLIENTS)))  # re-raises the first failure

    assert all(per_client), "every client made requests"
    assert all(counts.values()), counts
    peak = status_kib(gw.proc.pid, "VmHWM") * KIB
    budget = idle_rss + MEMORY_LIMIT + OVERHEAD
    assert peak <= budget, (
        f"peak RSS {peak / MIB:.0f} MiB > idle {idle_rss / MIB:.0f} MiB + cache "
        f"{MEMORY_LIMIT / MIB:.0f} MiB + overhead {OVERHEAD / MIB:.0f} MiB; requests {counts}"
    )
    # The cache itself kept to its budget, and nothing failed on the gateway's side.
    assert metric_sum(gw, "aiocache_inode_usage_bytes") <= MEMORY_LIMIT
    assert metric_sum(gw, "aiocache_inode_backing_errors_total") == 0
    assert metric_sum(gw, "aiocache_gateway_requests_total", 'status="2') >= sum(counts.values())
    with pytest.raises(KeyError):
        metric_sum(gw, "aiocache_gateway_requests_total", 'status="5')
    assert gw.proc.poll() is None, gw.log()
    # A response cut short after its status went out is counted as a 2xx: the log says it.
    assert "Traceback" not in gw.log(), gw.log()
