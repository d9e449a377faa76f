"""The gateway as a caching proxy in front of a slow S3 store, against going to the store directly.

The upstream is moto's server, and a one-node Ceph RGW when the Ceph packages are installed
(both started by ``tests/backing/s3_servers.py``, as the tests start them). Between it and its
clients runs a userspace TCP delay line, :func:`delay_line` (a subprocess): every byte, in each
direction, is delivered 20 ms after it arrived, as ``tc qdisc ... netem delay 20ms`` on both
ends would; so a request costs at least one 40 ms round trip. Like a TCP window, at most
``WINDOW`` bytes per direction and connection are in flight in the line: one stream moves at
most 4 MiB per 40 ms, whatever the store's own speed. (The TCP handshake itself is not
delayed: the clients here keep their connections, so they pay it once.)

Measured, one ``GET`` of a whole 1 MiB or 64 MiB object on a presigned URL with ``http.client``
(the body read into one buffer), in seconds per GET:

- *direct*: to the upstream through the delay line (no cache; every GET the same);
- *cold*: through the gateway (``--backend s3://...`` over the delay line), an object it has
  never seen: a HEAD, then fills by ranged GETs with readahead keeping several in flight;
- *warm*: the same object again, within ``--revalidate`` (an hour here): served from the cache,
  nothing asked upstream;
- *warm, revalidated* (information): a second gateway with ``--revalidate 0``, which asks the
  upstream with a conditional HEAD on every GET (304: the cached pages are served).

Targets (issue 13): warm >= 10x direct for 1 MiB; cold 64 MiB >= 3x direct. Ratios are printed,
never asserted; a missed target is reported as MISSED. Cold objects are distinct keys, one per
repetition, deleted upstream once read (the gateway's copy then ages out of its budget).
``python -m benchmarks.s3_proxy`` runs it alone; without moto it prints why and measures
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import http.client
import importlib.util
import os
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

from ._harness import MIB, Result, info_result, ratio_result, rng, run_interleaved, summarize
from .gateway import free_port, s3_client, server

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

REPO: Final = Path(__file__).resolve().parents[1]
WORKLOAD: Final = "s3_proxy"
DELAY: Final = 0.020
#: Bytes in flight per direction and connection in the delay line (a TCP window's worth).
WINDOW: Final = 4 * MIB
SIZES: Final = {"1 MiB": MIB, "64 MiB": 64 * MIB}
#: (size, kind) -> the target ratio of the gateway's speed over direct's.
TARGETS: Final = {("1 MiB", "warm"): 10.0, ("64 MiB", "cold"): 3.0}
#: Timed repetitions (and so cold keys) per case: the harness minimum, to bound the run time.
REPEATS: Final = 5
GW_ACCESS: Final = "bench-access"
GW_SECRET: Final = "bench-secret-key"
BUCKET: Final = "bench-proxy"
CHUNK: Final = 1 * MIB
#: Connections of the parallel direct download (the machine's ceiling for a cold read).
STREAMS: Final = 8


# -- the delay line ---------------------------------------------------------------------------


class _Window:
    """Bytes queued in one direction of the delay line, at most ``size`` (then the reader waits).

    Used from one event loop only; the condition's lock guards ``queued``.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.queued = 0  # Protected by: _room.
        self._room = asyncio.Condition()

    def _has_room(self) -> bool:
        return self.queued < self.size

    async def take(self, n: int) -> None:
        async with self._room:
            self.queued += n
            await self._room.wait_for(self._has_room)

    async def give(self, n: int) -> None:
        async with self._room:
            self.queued -= n
            self._room.notify_all()


async def _carry(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, window: int
) -> None:
    """Copy one direction, each chunk written ``delay`` seconds after it was read.

    A reading task stamps chunks with their due time and queues them; a writing task sleeps
    until each is due. The reader stops taking bytes while ``window`` are queued, so the
    sender's socket fills and TCP's own flow control holds it back, as a full window would.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    room = _Window(window)

    async def read_side() -> None:
        while True:
            chunk = await reader.read(256 * 1024)
            queue.put_nowait((loop.time() + delay, chunk))
            if not chunk:
                return
            await room.take(len(chunk))

    async def write_side() -> None:
        while True:
            due, chunk = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not chunk:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()
            await room.give(len(chunk))

    reading = asyncio.ensure_future(read_side())
    try:
        await write_side()
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await reading


async def _serve_delay_line(port: int, upstream: int, delay: float, window: int) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(
                _carry(client_r, up_w, delay, window), _carry(up_r, client_w, delay, window)
            )
        except OSError:
            pass  # a reset on either side ends both directions
        finally:
            client_w.close()
            up_w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", port)
    async with srv:
        await srv.serve_forever()


def delay_line(port: int, upstream: int, delay: float = DELAY, window: int = WINDOW) -> None:
    """Serve ``127.0.0.1:port`` as a delay line to ``127.0.0.1:upstream`` until killed."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_delay_line(port, upstream, delay, window))


@contextlib.contextmanager
def delay_process(upstream_url: str, tmp: Path) -> Iterator[str]:
    """A delay line in front of ``upstream_url`` in a subprocess (its own GIL); its URL."""
    port = free_port()
    upstream = urllib.parse.urlsplit(upstream_url).port
    args = [sys.executable, "-m", "benchmarks.s3_proxy", "--delay-line", str(port), str(upstream)]
    url = f"http://127.0.0.1:{port}"
    with server(args, url + "/", tmp, f"delay-{port}"):
        yield url


# -- clients ----------------------------------------------------------------------------------


class Getter:
    """GETs of one object size on presigned URLs, each on a fresh ``http.client`` connection.

    Fresh because a server closes a connection idle for seconds (the cases of the other size
    run in between), and opening one on loopback costs tens of microseconds, outside the timing.
    """

    def __init__(self, s3: Any, size: int) -> None:
        self._s3 = s3
        parts = urllib.parse.urlsplit(s3.meta.endpoint_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port
        self._buf = bytearray(size)

    def get(self, key: str) -> float:
        """Seconds for one GET of the whole object ``key`` (its body checked for length)."""
        url = self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600
        )
        parts = urllib.parse.urlsplit(url)
        view = memoryview(self._buf)
        conn = http.client.HTTPConnection(self._host, self._port, timeout=120)
        try:
            conn.connect()
            t0 = time.perf_counter()
            conn.request("GET", f"{parts.path}?{parts.query}")
            response = conn.getresponse()
            got = 0
            while True:
                n = response.readinto(view[got : got + CHUNK])
                if not n:
                    break
                got += n
            elapsed = time.perf_counter() - t0
        finally:
            conn.close()
        if response.status != 200 or got != len(self._buf):
            raise RuntimeError(f"GET {key}: HTTP {response.status}, {got} bytes")
        return elapsed


class ParallelGetter:
    """A whole object as ``STREAMS`` ranged GETs at once, one thread and connection each.

    The physical limit for a cold read on this machine: what a parallel downloader (the AWS
    CLI's, s5cmd) reaches straight from the upstream, through the same delay line, with no
    cache in the path; a cold GET through the gateway can at best match it.
    """

    def __init__(self, s3: Any, size: int) -> None:
        parts = urllib.parse.urlsplit(s3.meta.endpoint_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port
        self._buf = bytearray(size)
        self._size = size
        self._s3 = s3
        self._pool = concurrent.futures.ThreadPoolExecutor(STREAMS, "bench-parallel-get")

    def close(self) -> None:
        self._pool.shutdown()

    def _range(self, path: str, start: int, stop: int) -> int:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=120)
        try:
            conn.request("GET", path, headers={"Range": f"bytes={start}-{stop - 1}"})
            response = conn.getresponse()
            view = memoryview(self._buf)[start:stop]
            got = 0
            while got < len(view):
                n = response.readinto(view[got : got + CHUNK])
                if not n:
                    break
                got += n
        finally:
            conn.close()
        if response.status != 206 or got != stop - start:
            raise RuntimeError(f"GET bytes={start}-{stop - 1}: HTTP {response.status}, {got}")
        return got

    def get(self, key: str) -> float:
        """Seconds for the whole object ``key``, fetched as ``STREAMS`` parallel ranges."""
        url = self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600
        )
        parts = urllib.parse.urlsplit(url)
        path = f"{parts.path}?{parts.query}"
        step = -(-self._size // STREAMS)
        bounds = [(a, min(a + step, self._size)) for a in range(0, self._size, step)]
        t0 = time.perf_counter()
        got = sum(self._pool.map(lambda b: self._range(path, *b), bounds))
        elapsed = time.perf_counter() - t0
        if got != self._size:
            raise RuntimeError(f"GET {key}: {got} of {self._size} bytes")
        return elapsed


# -- the measurement --------------------------------------------------------------------------


def _case(fn: Callable[[], float]) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        return fn()

    return run


def _gateway_args(port: int, data: Path, backend: str, revalidate: float) -> list[str]:
    return [
        sys.executable, "-m", "examples.object_store_gateway", "--host", "127.0.0.1",
        "--port", str(port), "--data-dir", str(data), "--memory-limit", "512MiB",
        "--backend", backend, "--revalidate", str(revalidate),
    ]  # fmt: skip


def _measure(name: str, upstream: Any, tmp: Path) -> list[Result]:
    """Every case against one upstream (an ``Endpoint`` of tests/backing/s3_servers.py)."""
    from tests.backing.s3_servers import ACCESS_KEY, SECRET_KEY

    r = rng(13)
    bodies = {label: r.randbytes(size) for label, size in SIZES.items()}
    store = upstream.boto3()
    store.create_bucket(Bucket=BUCKET)
    cold_keys: dict[str, list[str]] = {}
    for label, body in bodies.items():
        tag = label.replace(" ", "")
        store.put_object(Bucket=BUCKET, Key=f"warm-{tag}", Body=body)
        cold_keys[label] = [f"cold-{tag}-{i}" for i in range(REPEATS)]
        for key in cold_keys[label]:  # copied in the store: no second upload
            source = {"Bucket": BUCKET, "Key": f"warm-{tag}"}
            store.copy_object(Bucket=BUCKET, Key=key, CopySource=source)
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AIOCACHE_GW_ACCESS_KEY=GW_ACCESS,
        AIOCACHE_GW_SECRET_KEY=GW_SECRET,
    )
    with contextlib.ExitStack() as stack:
        line = stack.enter_context(delay_process(upstream.url, tmp))
        backend = f"s3://{BUCKET}?endpoint={urllib.parse.quote(line, safe='')}"
        gateways: dict[str, str] = {}
        for kind, ttl in (("ttl", 3600.0), ("revalidate", 0.0)):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            args = _gateway_args(port, tmp / f"gw-{name}-{kind}", backend, ttl)
            stack.enter_context(server(args, url + "/healthz", tmp, f"gw-{name}-{kind}", env))
            gateways[kind] = url
        direct_s3 = s3_client(line, ACCESS_KEY, SECRET_KEY)
        gw_s3 = s3_client(gateways["ttl"], GW_ACCESS, GW_SECRET)
        reval_s3 = s3_client(gateways["revalidate"], GW_ACCESS, GW_SECRET)
        cases: dict[str, Callable[[], Awaitable[float]]] = {}
        for label, size in SIZES.items():
            tag = label.replace(" ", "")
            direct, gw, reval = Getter(direct_s3, size), Getter(gw_s3, size), Getter(reval_s3, size)
            keys = iter(cold_keys[label])

            def cold(gw: Getter = gw, keys: Iterator[str] = keys) -> float:
                key = next(keys)
                elapsed = gw.get(key)
                store.delete_object(Bucket=BUCKET, Key=key)  # bounds the store's memory
                return elapsed

            cases[f"{label} direct"] = _case(functools.partial(direct.get, f"warm-{tag}"))
            if size > MIB:
                parallel = ParallelGetter(direct_s3, size)
                stack.callback(parallel.close)
                cases[f"{label} parallel"] = _case(functools.partial(parallel.get, f"warm-{tag}"))
            cases[f"{label} cold"] = _case(cold)
            cases[f"{label} warm"] = _case(functools.partial(gw.get, f"warm-{tag}"))
            if size == MIB:
                cases[f"{label} revalidated"] = _case(functools.partial(reval.get, f"warm-{tag}"))
        # The warm-up, by hand rather than the harness's round (which would spend a cold key
        # and a 64 MiB cold GET per upstream): each warm object read once through each gateway.
        for label, size in SIZES.items():
            tag = label.replace(" ", "")
            for s3 in (direct_s3, gw_s3, reval_s3):
                Getter(s3, size).get(f"warm-{tag}")
        samples = anyio.run(lambda: run_interleaved(cases, repeats=REPEATS, warmups=0))
    results: list[Result] = []
    via = f"{name} direct, +{DELAY * 1e3:.0f} ms each way"
    for label in SIZES:
        base = samples[f"{label} direct"]
        note = f"direct median {summarize(base).median * 1e3:.1f} ms per GET"
        results.extend(
            ratio_result(
                WORKLOAD,
                f"{name}: {kind} GET {label} via gateway",
                samples[f"{label} {kind}"],
                via,
                base,
                unit="s/GET",
                target=TARGETS.get((label, kind)),
                higher_is_better=False,
                note=note,
            )
            for kind in ("cold", "warm")
        )
        direct_median = summarize(base).median
        if f"{label} parallel" in samples:
            par = summarize(samples[f"{label} parallel"])
            cold_median = summarize(samples[f"{label} cold"]).median
            results.append(
                _versus_direct(
                    direct_median,
                    via,
                    f"{name}: {STREAMS} parallel ranged GETs {label}, direct",
                    par,
                    f"the ceiling for a cold read here (no cache in the path); the cold GET "
                    f"via the gateway reached {par.median / cold_median:.2f}x of it",
                )
            )
        if f"{label} revalidated" in samples:
            results.append(
                _versus_direct(
                    direct_median,
                    via,
                    f"{name}: warm GET {label}, --revalidate 0",
                    summarize(samples[f"{label} revalidated"]),
                    "a conditional HEAD (one round trip) before every GET",
                )
            )
    return results


def _versus_direct(direct: float, via: str, name: str, stats: Any, note: str) -> Result:
    """An information row: ``stats`` (seconds per GET) against the direct median."""
    return info_result(
        WORKLOAD, name, stats, unit="s/GET", ratio=direct / stats.median,
        ratio_desc="direct median / subject median (time)", baseline=via,
        baseline_median=direct, note=note,
    )  # fmt: skip


def _upstreams(tmp: Path) -> Iterator[tuple[str, Any, Callable[[], None]]]:
    """(name, endpoint, stop) for moto, then Ceph if its packages are installed."""
    from tests.backing.s3_servers import CephServer, MotoServer, ceph_missing

    moto = MotoServer()
    yield "moto", moto.start(), moto.stop
    reason = ceph_missing()
    if reason:
        print(f"Ceph RGW not measured: {reason}", flush=True)
        return
    ceph = CephServer(tmp / "ceph", tls=False)
    (tmp / "ceph").mkdir()
    http, _ = ceph.start()
    yield "ceph", http, ceph.stop


def run() -> list[Result]:
    """Measure against every upstream available; nothing (and a printed reason) without moto."""
    if importlib.util.find_spec("moto") is None:
        print("s3_proxy skipped: moto is not installed (pip install 'moto[server]')", flush=True)
        return []
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-s3-proxy-") as d:
        tmp = Path(d)
        for name, endpoint, stop in _upstreams(tmp):
            try:
                results += _measure(name, endpoint, tmp)
            finally:
                stop()
    return results


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s3_proxy")
    parser.add_argument(
        "--delay-line", nargs=2, type=int, metavar=("PORT", "UPSTREAM_PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.delay_line:
        delay_line(*args.delay_line)
        return
    from ._harness import print_results

    print_results(run(), WORKLOAD)


if __name__ == "__main__":
    main(sys.argv[1:])
