from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Route

from aiocache_inode import PAGE_SIZE, CacheStore, MemoryBacking
from aiocache_inode import asgi as asgi_mod
from aiocache_inode.asgi import (
    InodeResponse,
    ShortBodyError,
    run_until_disconnect,
    send_inode_range,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.types import Message

KIB = 1024
DATA = random.Random(10).randbytes(3 * 1024 * KIB + 123)


@pytest.fixture
async def store() -> AsyncIterator[CacheStore]:
    async with CacheStore(64 << 20, registry=CollectorRegistry()) as s:
        yield s


class CopyingSend:
    """A server that writes every body before send returns (copies it)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.flags: list[bool] = []

    async def __call__(self, message: Message) -> None:
        assert message["type"] == "http.response.body"
        self.parts.append(bytes(memoryview(message["body"])))  # a copy, never the object
        self.flags.append(bool(message["more_body"]))

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)


class QueueingSend:
    """A server whose socket would block: keeps a view derived from each body, as uvloop does."""

    def __init__(self) -> None:
        self.queue: list[memoryview] = []
        self.written = bytearray()
        self.sends = 0
        self.last = anyio.Event()

    async def __call__(self, message: Message) -> None:
        self.sends += 1
        self.queue.append(memoryview(message["body"]).cast("b"))
        if not message["more_body"]:
            self.last.set()

    def drain(self) -> None:
        for v in self.queue:
            self.written += v.cast("B")
            v.release()
        self.queue.clear()


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, len(DATA)),  # several windows, zero copy
        (0, 10),  # copy path
        (PAGE_SIZE - 1, PAGE_SIZE + 1),  # across a page boundary
        (5, asgi_mod.COPY_THRESHOLD + 7),  # just over the copy threshold: probe then views
        (1 << 20, 2 << 20),  # exactly the copy threshold
        (1 << 20, (2 << 20) + 1),  # one window and a byte
        (len(DATA) - 1, len(DATA)),
    ],
)
async def test_range_bytes_equal(store: CacheStore, start: int, end: int) -> None:
    send = CopyingSend()
    async with store.open("f", MemoryBacking(DATA)) as inode:
        zc = await send_inode_range(send, inode, start, end, more_body_after=False)
    assert send.body == DATA[start:end]
    assert send.flags[-1] is False
    assert all(send.flags[:-1])
    assert zc == (end - start > asgi_mod.COPY_THRESHOLD)
    assert store.pinned_bytes == 0


async def test_small_windows_and_chunks(store: CacheStore) -> None:
    send = CopyingSend()
    async with store.open("f", MemoryBacking(DATA)) as inode:
        assert await send_inode_range(
            send,
            inode,
            3,
            300 * KIB,
            more_body_after=False,
            zero_copy=True,
            copy_threshold=0,
            chunk_size=10 * KIB,
            window_size=33 * KIB,
        )
    assert send.body == DATA[3 : 300 * KIB]
    assert max(len(p) for p in send.parts) <= 10 * KIB
    assert store.pinned_bytes == 0


async def test_chained_inodes_in_one_body(store: CacheStore) -> None:
    a, b = DATA[: 200 * KIB], DATA[200 * KIB : 300 * KIB]
    send = CopyingSend()
    async with store.open("a", MemoryBacking(a)) as ia, store.open("b", MemoryBacking(b)) as ib:
        zc = await send_inode_range(send, ia, 0, len(a), more_body_after=True, copy_threshold=0)
        assert zc
        await send_inode_range(
            send, ib, 0, len(b), more_body_after=False, zero_copy=zc, copy_threshold=0
        )
        await send_inode_range(send, ib, 0, 0, more_body_after=False)
    assert send.body == a + b
    assert send.flags[:-2] == [True] * (len(send.flags) - 2)
    assert send.flags[-2:] == [False, False]  # the range's end, then the empty range's


async def test_empty_range_in_the_middle_sends_nothing(store: CacheStore) -> None:
    send = CopyingSend()
    async with store.open("a", MemoryBacking(b"xyz")) as inode:
        await send_inode_range(send, inode, 1, 1, more_body_after=True)
    assert send.parts == []


async def test_bad_input(store: CacheStore) -> None:
    send = CopyingSend()
    async with store.open("a", MemoryBacking(DATA)) as inode:
        with pytest.raises(ValueError, match="bad range"):
            await send_inode_range(send, inode, 5, 4, more_body_after=False)
        with pytest.raises(ValueError, match="bad range"):
            await send_inode_range(send, inode, -1, 4, more_body_after=False)
        with pytest.raises(ValueError, match="positive"):
            await send_inode_range(send, inode, 0, 4, more_body_after=False, chunk_size=0)
        # Past the end of the file, on the copy path and on the view path.
        with pytest.raises(ShortBodyError):
            await send_inode_range(send, inode, len(DATA) - 4, len(DATA) + 4, more_body_after=False)
        with pytest.raises(ShortBodyError):
            await send_inode_range(
                send, inode, len(DATA) - (2 << 20), len(DATA) + 1, more_body_after=False
            )
        assert await inode.read(0, 4) == DATA[:4]  # the inode still works
    assert store.pinned_bytes == 0
    with pytest.raises(ValueError, match="bad range"):
        InodeResponse(store, "a", MemoryBacking(b""), 3, 2)


class Polls:
    """Counts the sender's looks at the bodies it lent out."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.target = 0
        self.reached = anyio.Event()
        real = asgi_mod._give_back_all

        def counting(lent: list[Any], revoke: bool) -> None:
            self.count += 1
            real(lent, revoke)
            if self.count == self.target:
                self.reached.set()

        monkeypatch.setattr(asgi_mod, "_give_back_all", counting)

    async def wait_for_more(self, n: int) -> None:
        self.target = self.count + n
        self.reached = anyio.Event()
        await self.reached.wait()


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch) -> Polls:
    return Polls(monkeypatch)


async def test_pages_stay_pinned_while_the_transport_holds_a_body(
    store: CacheStore, polls: Polls
) -> None:
    send = QueueingSend()
    done = False
    async with store.open("f", MemoryBacking(DATA)) as inode:

        async def stream() -> None:
            nonlocal done
            await send_inode_range(
                send, inode, 0, 512 * KIB, more_body_after=False, zero_copy=True, copy_threshold=0
            )
            done = True

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream)
                await send.last.wait()
                await polls.wait_for_more(3)  # the sender looked again, and found the body held
                assert not done
                assert store.pinned_bytes >= 512 * KIB
                send.drain()
        assert done
        assert bytes(send.written) == DATA[: 512 * KIB]
        assert store.pinned_bytes == 0
        # The pages are unpinned: eviction may take them now.
        await store.shrink(0)
        assert store.usage == 0


async def test_a_server_keeping_body_objects_gets_copies(store: CacheStore) -> None:
    kept: list[Message] = []

    async def send(message: Message) -> None:
        kept.append(message)

    async with store.open("f", MemoryBacking(DATA)) as inode:
        zc = await send_inode_range(send, inode, 0, len(DATA), more_body_after=False)
    assert zc is False
    assert all(type(m["body"]) is bytes for m in kept)
    assert b"".join(m["body"] for m in kept) == DATA
    assert store.pinned_bytes == 0


async def test_send_failure_revokes_bodies_and_unpins(store: CacheStore) -> None:
    kept: list[memoryview] = []

    async def send(message: Message) -> None:
        kept.append(message["body"])  # keeps the object, then fails
        if len(kept) == 2:
            raise OSError("connection reset")

    async with store.open("f", MemoryBacking(DATA)) as inode:
        with pytest.raises(OSError, match="reset"):
            await send_inode_range(send, inode, 0, len(DATA), more_body_after=False, zero_copy=True)
    assert store.pinned_bytes == 0
    with pytest.raises(ValueError, match="released"):
        bytes(kept[1])  # revoked: never a read of pages that may be reused


class DisconnectingClient:
    """receive() reports http.request, then http.disconnect once ``gone`` is set."""

    def __init__(self) -> None:
        self.gone = anyio.Event()
        self.first = True

    async def receive(self) -> Message:
        if self.first:
            self.first = False
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_disconnect_mid_body_stops_and_unpins(store: CacheStore) -> None:
    client = DisconnectingClient()
    got: list[Message] = []

    async def send(message: Message) -> None:
        got.append(message)
        if len(got) == 3:
            client.gone.set()
            await anyio.sleep_forever()  # a blocked transport: only cancellation gets out

    scope = {"type": "http", "method": "GET"}
    response = InodeResponse(store, "f", MemoryBacking(DATA), zero_copy=True)
    with anyio.fail_after(10):
        await response(scope, client.receive, send)
    assert got[0]["type"] == "http.response.start"
    assert dict(got[0]["headers"])[b"content-length"] == str(len(DATA)).encode()
    assert len(got) == 3
    assert store.pinned_bytes == 0


async def test_disconnect_waits_for_the_transport_to_let_go(
    store: CacheStore, polls: Polls
) -> None:
    client = DisconnectingClient()
    queued = QueueingSend()
    sends = 0

    async def send(message: Message) -> None:
        nonlocal sends
        sends += 1
        if message["type"] == "http.response.body":
            await queued(message)
            if sends == 3:
                client.gone.set()

    finished = anyio.Event()

    async def respond() -> None:
        scope = {"type": "http", "method": "GET"}
        await InodeResponse(store, "f", MemoryBacking(DATA), zero_copy=True)(
            scope, client.receive, send
        )
        finished.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(respond)
            await client.gone.wait()
            # Cancelled, but a queued body still points into the pool: the pins stay.
            await polls.wait_for_more(3)
            assert not finished.is_set()
            assert store.pinned_bytes > 0
            queued.drain()
    assert store.pinned_bytes == 0
    assert bytes(queued.written) == DATA[: len(queued.written)]


async def test_run_until_disconnect_reports_completion() -> None:
    client = DisconnectingClient()
    ran = []

    async def work(x: int) -> None:
        ran.append(x)

    assert await run_until_disconnect(client.receive, work, 7)
    assert ran == [7]


async def test_inode_response_through_httpx(store: CacheStore) -> None:
    backing = MemoryBacking(DATA)

    async def route(request: Request) -> InodeResponse:
        start = int(request.query_params.get("start", "0"))
        end = request.query_params.get("end")
        return InodeResponse(
            store,
            "f",
            backing,
            start,
            None if end is None else int(end),
            media_type="application/octet-stream",
            headers={"x-test": "1"},
        )

    app = Starlette(routes=[Route("/f", route, methods=["GET", "HEAD"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/f")
        assert r.status_code == 200
        assert r.content == DATA
        assert r.headers["content-length"] == str(len(DATA))
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["x-test"] == "1"
        r = await client.get("/f", params={"start": "100", "end": "200"})
        assert r.content == DATA[100:200]
        r = await client.head("/f")
        assert r.content == b""
        assert r.headers["content-length"] == str(len(DATA))
        r = await client.get("/f", params={"start": "7", "end": "7"})
        assert r.content == b""
        with pytest.raises(ValueError, match="past the file size"):
            await client.get("/f", params={"end": str(len(DATA) + 1)})
    assert store.pinned_bytes == 0
