"""The embedded app through its ASGI door (httpx's ASGITransport, or raw ASGI calls where a client
would normalise the path), on both anyio backends."""

from __future__ import annotations

import os
import random
from email.utils import formatdate
from typing import TYPE_CHECKING

import anyio
import pytest
from prometheus_client import CollectorRegistry

from examples.embedded_app import CachedFiles, create_app

from .conftest import BIG, Client, RawResponse, Served, make_root, raw_get, scope

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.types import Message


async def test_get_serves_files_with_validators(served: Served) -> None:
    r = await served.client.get("/index.html")
    assert r.status_code == 200
    assert r.content == b"<h1>hello</h1>\n"
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-length"] == "15"
    assert r.headers["accept-ranges"] == "bytes"
    st = os.stat(served.root / "index.html")
    assert r.headers["last-modified"] == formatdate(st.st_mtime_ns // 10**9, usegmt=True)
    assert r.headers["etag"] == f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
    r = await served.client.get("/sub/notes.txt")
    assert r.content == b"0123456789" * 10
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    r = await served.client.get("/data.unknownext")
    assert r.headers["content-type"] == "application/octet-stream"
    r = await served.client.get("/empty.txt")
    assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "0")
    r = await served.client.get("/big.bin")
    assert r.content == BIG
    r = await served.client.get("/inside.txt")  # a symlink that stays inside the root
    assert r.content == b"0123456789" * 10
    assert served.store.pinned_bytes == 0


async def test_second_get_is_a_cache_hit(served: Served) -> None:
    await served.client.get("/big.bin")
    before = served.store.statistics()
    r = await served.client.get("/big.bin")
    assert r.content == BIG
    after = served.store.statistics()
    assert after.backing_requests.get("read") == before.backing_requests.get("read")
    assert after.read_bytes_backing == before.read_bytes_backing


async def test_head_sends_headers_only(served: Served) -> None:
    r = await served.client.head("/big.bin")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(len(BIG))


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/..",
        "/escape.txt",  # symlink out of the root
        "/up/secret.txt",  # through a symlinked directory out of the root
        "/index.html\x00.txt",
        "/\x00",
        "/",
        "/sub",
        "/sub/",
        "/missing.txt",
        "/sub/notes.txt/",
    ],
)
async def test_no_traversal_and_no_non_files(served: Served, path: str) -> None:
    for method in ("GET", "HEAD"):
        r = await raw_get(served.app, path, method)
        assert r.status == 404, (path, method)
        assert bytes(r.body) == b""


async def test_encoded_traversal_through_httpx_is_404(served: Served) -> None:
    for url in ("/%2e%2e/secret.txt", "/sub/%2e%2e/%2e%2e/secret.txt", "/index.html%00"):
        r = await served.client.get(url)
        assert r.status_code == 404, url
        assert b"outside" not in r.content


async def test_conditional_get(served: Served) -> None:
    c = served.client
    first = await c.get("/index.html")
    etag, lm = first.headers["etag"], first.headers["last-modified"]
    for inm in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        r = await c.get("/index.html", headers={"if-none-match": inm})
        assert r.status_code == 304, inm
        assert r.content == b""
        assert r.headers["etag"] == etag
        assert "content-length" not in r.headers
    r = await c.head("/index.html", headers={"if-none-match": etag})
    assert r.status_code == 304
    r = await c.get("/index.html", headers={"if-none-match": '"other"'})
    assert r.status_code == 200
    r = await c.get("/index.html", headers={"if-modified-since": lm})
    assert r.status_code == 304
    r = await c.get("/index.html", headers={"if-modified-since": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert r.status_code == 200
    # If-None-Match wins over If-Modified-Since.
    r = await c.get("/index.html", headers={"if-none-match": '"other"', "if-modified-since": lm})
    assert r.status_code == 200
    r = await c.get("/index.html", headers={"if-modified-since": "not a date"})
    assert r.status_code == 200
    r = await c.get("/index.html", headers={"if-match": '"other"'})
    assert r.status_code == 412
    r = await c.get("/index.html", headers={"if-match": f"W/{etag}"})  # weak never matches
    assert r.status_code == 412
    r = await c.get("/index.html", headers={"if-match": etag})
    assert r.status_code == 200
    r = await c.get("/index.html", headers={"if-unmodified-since": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert r.status_code == 412
    r = await c.get("/index.html", headers={"if-unmodified-since": lm})
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 10),
        ("bytes=10-", 10, len(BIG)),
        ("bytes=-5", len(BIG) - 5, len(BIG)),
        ("bytes=100-99999999999", 100, len(BIG)),
        ("bytes=1048000-2200000", 1048000, 2200001),
        ("BYTES = 3-3", 3, 4),
    ],
)
async def test_single_range(served: Served, header: str, start: int, end: int) -> None:
    r = await served.client.get("/big.bin", headers={"range": header})
    assert r.status_code == 206
    assert r.content == BIG[start:end]
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{len(BIG)}"
    assert r.headers["content-length"] == str(end - start)


@pytest.mark.parametrize("header", ["bytes=99999999-", "bytes=-0", f"bytes={len(BIG)}-"])
async def test_unsatisfiable_range(served: Served, header: str) -> None:
    r = await served.client.get("/big.bin", headers={"range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(BIG)}"
    assert r.content == b""


@pytest.mark.parametrize(
    "header", ["bytes=5-3", "bytes=a-b", "items=0-1", "bytes=0-1,5-6", "bytes", "bytes=--1"]
)
async def test_ignored_range_sends_everything(served: Served, header: str) -> None:
    r = await served.client.get("/sub/notes.txt", headers={"range": header})
    assert r.status_code == 200
    assert r.content == b"0123456789" * 10


async def test_if_range(served: Served) -> None:
    c = served.client
    first = await c.head("/sub/notes.txt")
    etag, lm = first.headers["etag"], first.headers["last-modified"]
    r = await c.get("/sub/notes.txt", headers={"range": "bytes=0-1", "if-range": etag})
    assert (r.status_code, r.content) == (206, b"01")
    r = await c.get("/sub/notes.txt", headers={"range": "bytes=0-1", "if-range": lm})
    assert r.status_code == 206
    r = await c.get("/sub/notes.txt", headers={"range": "bytes=0-1", "if-range": '"old"'})
    assert (r.status_code, len(r.content)) == (200, 100)
    r = await c.get("/sub/notes.txt", headers={"range": "bytes=0-1", "if-range": f"W/{etag}"})
    assert r.status_code == 200
    # Range is for GET only.
    r = await c.head("/sub/notes.txt", headers={"range": "bytes=0-1"})
    assert (r.status_code, r.headers["content-length"]) == (200, "100")


async def test_file_rewritten_between_requests_is_served_fresh(served: Served) -> None:
    c, path = served.client, served.root / "sub" / "notes.txt"
    assert (await c.get("/sub/notes.txt")).content == b"0123456789" * 10
    old_keys = set(served.store.keys())
    # Rewritten in place: same inode, other size and mtime.
    path.write_bytes(b"new contents")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    # Within the revalidation interval the open file is trusted (like open_file_cache_valid).
    served.clock.advance(0.5)
    assert (await c.get("/sub/notes.txt")).content == b"0123456789" * 10
    served.clock.advance(0.5)
    r = await c.get("/sub/notes.txt")
    assert r.content == b"new contents"
    assert r.headers["etag"] != ""
    assert not old_keys & set(served.store.keys())  # the old version's inode was forgotten
    # Replaced by rename: a new inode number, same size and mtime.
    tmp = served.root / "sub" / "tmp"
    tmp.write_bytes(b"NEW CONTENTS")
    os.utime(tmp, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns))
    os.replace(tmp, path)
    served.clock.advance(1.0)
    assert (await c.get("/sub/notes.txt")).content == b"NEW CONTENTS"
    # Removed.
    path.unlink()
    served.clock.advance(1.0)
    assert (await c.get("/sub/notes.txt")).status_code == 404
    assert served.files.statistics() == {"open": 0, "users": 0}


async def test_revalidate_zero_checks_every_request(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    app = create_app(root, memory_limit=4 << 20, revalidate=0)
    async with app.router.lifespan_context(app):
        assert bytes((await raw_get(app, "/index.html")).body) == b"<h1>hello</h1>\n"
        (root / "index.html").write_bytes(b"changed, longer")
        assert bytes((await raw_get(app, "/index.html")).body) == b"changed, longer"


async def test_concurrent_range_requests(served: Served) -> None:
    rnd = random.Random(5)
    ranges = []
    for _ in range(24):
        a = rnd.randrange(len(BIG))
        ranges.append((a, min(len(BIG), a + rnd.choice([1, 4096, 70_000, 1 << 20]))))
    results: dict[int, bytes] = {}

    async def fetch(i: int, a: int, b: int) -> None:
        r = await served.client.get("/big.bin", headers={"range": f"bytes={a}-{b - 1}"})
        assert r.status_code == 206
        results[i] = r.content

    async with anyio.create_task_group() as tg:
        for i, (a, b) in enumerate(ranges):
            tg.start_soon(fetch, i, a, b)
    for i, (a, b) in enumerate(ranges):
        assert results[i] == BIG[a:b], (a, b)
    assert served.store.pinned_bytes == 0
    assert served.files.statistics()["users"] == 0


async def test_client_disconnecting_mid_body_leaks_no_pin(served: Served) -> None:
    client = Client()
    out = RawResponse()

    async def send(message: Message) -> None:
        await out.send(message)
        if len(out.body) >= 1 << 20:
            client.gone.set()
            await anyio.sleep_forever()  # the transport blocks; only the disconnect helps

    with anyio.fail_after(10):
        await served.app(scope("/big.bin"), client.receive, send)
    assert out.status == 200
    assert 0 < len(out.body) < len(BIG)
    assert bytes(out.body) == BIG[: len(out.body)]
    assert served.store.pinned_bytes == 0
    assert served.files.statistics()["users"] == 0
    # The app still serves the file.
    assert (await served.client.get("/big.bin")).content == BIG


async def test_put_uploads_through_the_write_back_cache(served: Served) -> None:
    c = served.client
    data = random.Random(3).randbytes(300_000)
    r = await c.put("/sub/upload.bin", content=data)
    assert r.status_code == 201
    assert (served.root / "sub" / "upload.bin").read_bytes() == data
    assert [p.name for p in (served.root / "sub").iterdir() if p.name.endswith(".part")] == []
    metrics = (await c.get("/metrics")).text
    assert _sample(metrics, "aiocache_inode_writeback_bytes_total") >= len(data)
    reads = served.store.statistics().backing_requests.get("read")
    r = await c.get("/sub/upload.bin")
    assert r.content == data
    # The uploaded pages serve the GET.
    assert served.store.statistics().backing_requests.get("read") == reads
    etag = r.headers["etag"]
    r = await c.put("/sub/upload.bin", content=b"v2", headers={"if-match": etag})
    assert r.status_code == 204
    assert "content-length" not in r.headers
    assert (await c.get("/sub/upload.bin")).content == b"v2"
    r = await c.put("/sub/upload.bin", content=b"v3", headers={"if-match": etag})
    assert r.status_code == 412
    r = await c.put("/sub/upload.bin", content=b"v3", headers={"if-none-match": "*"})
    assert r.status_code == 412
    assert (served.root / "sub" / "upload.bin").read_bytes() == b"v2"  # nothing lost
    r = await c.put("/sub/empty.bin", content=b"")
    assert r.status_code == 201
    assert (served.root / "sub" / "empty.bin").read_bytes() == b""


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/../outside.bin", 404),
        ("/up/outside.bin", 404),  # parent resolves outside the root
        ("/escape.txt", 404),  # a symlink out of the root is not written through
        ("/x\x00y", 404),
        ("/", 404),
        ("/nodir/file.bin", 409),
        ("/sub", 409),  # a directory in the way
    ],
)
async def test_put_refusals(served: Served, tmp_path: Path, path: str, status: int) -> None:
    r = RawResponse()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"payload", "more_body": False}

    await served.app(scope(path, "PUT"), receive, r.send)
    assert r.status == status
    assert not (tmp_path / "outside.bin").exists()
    assert (tmp_path / "secret.txt").read_bytes() == b"outside the root"


async def test_put_interrupted_leaves_the_old_file(served: Served) -> None:
    chunks = [b"a" * 1000, b"b" * 1000]

    async def receive() -> Message:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(), "more_body": True}
        return {"type": "http.disconnect"}

    r = RawResponse()
    await served.app(scope("/index.html", "PUT"), receive, r.send)
    assert r.messages == 0  # nobody to answer
    assert (served.root / "index.html").read_bytes() == b"<h1>hello</h1>\n"
    assert [p.name for p in served.root.iterdir() if p.name.endswith(".part")] == []
    assert served.store.dirty_bytes == 0


async def test_read_only_and_other_methods(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    app = create_app(root, memory_limit=4 << 20, allow_put=False)
    async with app.router.lifespan_context(app):
        r = await raw_get(app, "/index.html", "PUT")
        assert (r.status, r.headers[b"allow"]) == (405, b"GET, HEAD")
        r = await raw_get(app, "/index.html", "POST")
        assert r.status == 405
    assert (root / "index.html").read_bytes() == b"<h1>hello</h1>\n"


async def test_metrics_endpoint(served: Served) -> None:
    await served.client.get("/index.html")
    for url in ("/metrics", "/metrics/"):
        r = await served.client.get(url)
        assert r.status_code == 200
        assert "aiocache_inode_cache_misses_total" in r.text
        assert _sample(r.text, "aiocache_inode_cached_bytes") > 0


async def test_open_files_are_bounded(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    app = create_app(root, memory_limit=4 << 20, max_open=2)
    async with app.router.lifespan_context(app):
        files: CachedFiles = app.state.files
        for name in ("/index.html", "/sub/notes.txt", "/big.bin", "/index.html"):
            assert (await raw_get(app, name)).status == 200
            assert files.statistics()["open"] <= 2
    assert files.statistics()["open"] == 0


async def test_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        create_app(tmp_path / "missing")
    with pytest.raises(ValueError, match="revalidate"):
        CachedFiles(tmp_path, revalidate=-1)
    with pytest.raises(ValueError, match="max_open"):
        CachedFiles(tmp_path, max_open=0)
    app = create_app(tmp_path, registry=CollectorRegistry())
    with pytest.raises(RuntimeError, match="lifespan"):
        await raw_get(app, "/x")


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the exposition")
