"""A CacheStore under a small, varied load, its registry served at ``/metrics`` for Prometheus.

Runs in a thread with its own event loop: the store, the load tasks and a minimal HTTP server
for ``GET /metrics`` (collected in the loop, so a scrape never races the store). The load
touches every series the dashboard draws: hits and misses, readahead used and wasted, eviction
by pressure, write-back with writers throttled at a small dirty limit, and injected backing
faults so the error series move too.
"""

from __future__ import annotations

import contextlib
import random
import threading
from typing import TYPE_CHECKING, Final

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from aiocache_inode import CacheError, CacheStore, FaultInjector, MemoryBacking

if TYPE_CHECKING:
    from anyio.abc import SocketStream

KIB: Final = 1024
OBJECT_SIZE: Final = 512 * KIB
OBJECTS: Final = 4
#: Smaller than the objects together, so reads evict.
MEMORY_LIMIT: Final = 1024 * KIB


class LoadServer:
    """Start with :meth:`start`, scrape ``http://127.0.0.1:{port}/metrics``, then :meth:`stop`.

    Attributes:
        port: the metrics port (bound to 0 on loopback), known once :meth:`start` returns.
        errors: exceptions other than the expected cache errors, raised by the load (none
            expected; the test asserts the list is empty).
    """

    def __init__(self) -> None:
        self.port = 0
        self.errors: list[BaseException] = []
        self._started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-load", daemon=True)

    def start(self) -> None:
        """Start the thread; return once the metrics port listens.

        Raises:
            RuntimeError: the server did not come up within 30 s (its error attached).
        """
        self._thread.start()
        if not self._started.wait(30) or not self.port:
            raise RuntimeError(f"metrics server did not start: {self.errors!r}")

    def stop(self) -> None:
        """Stop the load, close the store (writing back what it can) and join the thread."""
        self._stop.set()
        self._thread.join(60)
        if self._thread.is_alive():
            raise RuntimeError("metrics load thread did not stop within 60 s")

    # -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            anyio.run(self._main)
        except BaseException as exc:  # reported to the test through self.errors
            self.errors.append(exc)
        finally:
            self._started.set()

    async def _main(self) -> None:
        registry = CollectorRegistry()
        faults = [
            FaultInjector(
                MemoryBacking(bytes([i]) * OBJECT_SIZE, latency=0.002, bandwidth=64 << 20),
                seed=i,
            )
            for i in range(OBJECTS)
        ]
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with (
            listener,
            CacheStore(
                MEMORY_LIMIT,
                registry=registry,
                write_back=True,
                dirty_limit_bytes=64 * KIB,
                dirty_background_bytes=16 * KIB,
                writeback_interval=0.1,
                dirty_expire=0.2,
                readahead_initial=32 * KIB,
                readahead_max=128 * KIB,
                readahead_request=32 * KIB,
                readahead_cap=256 * KIB,
            ) as store,
            anyio.create_task_group() as tg,
        ):

            async def metrics(stream: SocketStream) -> None:
                async with stream:
                    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                        request = b""
                        while b"\r\n\r\n" not in request and len(request) < 65536:
                            request += await stream.receive()
                        body = generate_latest(registry)
                        head = (
                            "HTTP/1.1 200 OK\r\n"
                            f"Content-Type: {CONTENT_TYPE_LATEST}\r\n"
                            f"Content-Length: {len(body)}\r\n"
                            "Connection: close\r\n\r\n"
                        )
                        await stream.send(head.encode() + body)

            tg.start_soon(listener.serve, metrics)
            for i in range(OBJECTS):
                tg.start_soon(self._reader, store, faults, i)
            tg.start_soon(self._scanner, store)
            for i in range(2):
                tg.start_soon(self._writer, store, faults, i)
            tg.start_soon(self._faults, faults)
            self._started.set()
            await anyio.to_thread.run_sync(self._stop.wait, abandon_on_cancel=True)
            for f in faults:  # let the closing store write back cleanly
                f.error_rate = 0.0
            tg.cancel_scope.cancel()

    async def _reader(self, store: CacheStore, faults: list[FaultInjector], seed: int) -> None:
        """Mostly hot reads of one object's first 64 KiB, some cold reads anywhere."""
        rng = random.Random(seed)
        while True:
            i = rng.randrange(OBJECTS)
            # Opening reads the attributes when the inode is not resident (idle inodes
            # retire), so an open fails under the injected faults just as a read does.
            with contextlib.suppress(CacheError):
                async with store.open(f"obj{i}", faults[i]) as inode:
                    for _ in range(16):
                        hot = rng.random() < 0.8
                        offset = rng.randrange(0, (64 if hot else 512) * KIB, 4 * KIB)
                        with contextlib.suppress(CacheError):
                            await inode.read(offset, 4 * KIB)
            await anyio.sleep(0.02)

    async def _scanner(self, store: CacheStore) -> None:
        """Sequential scans of objects of their own, cut short at random, then forgotten:
        readahead used and some wasted, and bytes evicted on release.

        Each scan gets a fresh inode because a resident inode issues no readahead below the
        furthest offset it ever read ahead to, even after those pages were evicted.
        """
        rng = random.Random(100)
        backings = [MemoryBacking(bytes(OBJECT_SIZE), latency=0.002) for _ in range(2)]
        while True:
            i = rng.randrange(len(backings))
            stop = rng.randrange(64, OBJECT_SIZE // KIB, 16) * KIB
            async with store.open(f"scan{i}", backings[i]) as inode:
                for offset in range(0, stop, 16 * KIB):
                    with contextlib.suppress(CacheError):
                        await inode.read(offset, 16 * KIB)
            await store.forget(f"scan{i}")
            await anyio.sleep(0.02)

    async def _writer(self, store: CacheStore, faults: list[FaultInjector], seed: int) -> None:
        """Bursts of writes that pass the small dirty limit, then a write_out now and then."""
        rng = random.Random(200 + seed)
        while True:
            i = rng.randrange(OBJECTS)
            with contextlib.suppress(CacheError):  # the open, as in _reader
                async with store.open(f"obj{i}", faults[i]) as inode:
                    for _ in range(8):
                        offset = rng.randrange(0, OBJECT_SIZE - 16 * KIB, 4 * KIB)
                        with contextlib.suppress(CacheError):
                            await inode.write(offset, bytes([rng.randrange(256)]) * (16 * KIB))
                    if rng.random() < 0.3:
                        with contextlib.suppress(CacheError):
                            await inode.write_out()
            await anyio.sleep(0.05)

    async def _faults(self, faults: list[FaultInjector]) -> None:
        """Backing faults on for one second in three."""
        while True:
            for rate in (0.0, 0.0, 0.2):
                for f in faults:
                    f.error_rate = rate
                await anyio.sleep(1.0)
