"""Fixtures for the embedded app: a served directory, an injected clock, clients."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from examples.embedded_app import create_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from aiocache_inode import CacheStore
    from examples.embedded_app import CachedFiles

BIG = random.Random(11).randbytes(3 * 1024 * 1024 + 17)


class Clock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Served:
    app: Starlette
    client: httpx.AsyncClient
    root: Path
    clock: Clock

    @property
    def files(self) -> CachedFiles:
        files: CachedFiles = self.app.state.files
        return files

    @property
    def store(self) -> CacheStore:
        store = self.files.store
        assert store is not None
        return store


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_bytes(b"<h1>hello</h1>\n")
    (root / "sub" / "notes.txt").write_bytes(b"0123456789" * 10)
    (root / "big.bin").write_bytes(BIG)
    (root / "data.unknownext").write_bytes(b"\x00\x01")
    (root / "empty.txt").write_bytes(b"")
    (tmp_path / "secret.txt").write_bytes(b"outside the root")
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (root / "inside.txt").symlink_to(root / "sub" / "notes.txt")
    (root / "up").symlink_to(tmp_path)
    return root


def body_read_first(app: ASGIApp) -> ASGIApp:
    """Read the whole request body before calling ``app``, then replay it.

    httpx's ASGITransport feeds the body from an async generator; an app that stops reading
    half way (a GET that only watches for a disconnect) leaves it suspended, and trio warns when
    it is collected. Draining it first keeps that test-harness noise out.
    """

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        queued: list[Message] = []
        while True:
            message = await receive()
            queued.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return queued.pop(0) if queued else await receive()

        await app(scope, replay, send)

    return wrapper


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    root = make_root(tmp_path)
    clock = Clock()
    app = create_app(root, memory_limit=16 << 20, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=body_read_first(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield Served(app, c, root, clock)


class RawResponse:
    """What an ASGI app sent for one request, collected without keeping the body objects."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.messages = 0

    async def send(self, message: Message) -> None:
        self.messages += 1
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = dict(message["headers"])
        else:
            self.body += memoryview(message["body"])  # copies, as a server writing it would


def scope(path: str, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }


class Client:
    """receive(): an empty request body, then http.disconnect once ``gone`` is set."""

    def __init__(self) -> None:
        self.gone = anyio.Event()
        self.sent = False

    async def receive(self) -> Message:
        if not self.sent:
            self.sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def raw_get(
    app: Starlette,
    path: str,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> RawResponse:
    """Send a request with exactly this (decoded) path: no client-side normalisation."""
    r = RawResponse()
    await app(scope(path, method, headers), Client().receive, r.send)
    return r
