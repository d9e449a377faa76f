"""Storage: durability order, group commit, references, pins, recovery, indexed listing."""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING

import anyio
import pytest

from examples.object_store_gateway.errors import S3Error
from examples.object_store_gateway.storage import (
    ObjectMeta,
    PartMeta,
    Segment,
    Storage,
    UploadMeta,
    key_successor,
)

if TYPE_CHECKING:
    from pathlib import Path


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _exists(path: str) -> bool:
    return os.path.exists(path)


async def _body(storage: Storage, data: bytes) -> Segment:
    body_id = storage.new_body_id()
    _write(storage.tmp_path(body_id), data)
    await storage.publish(body_id)
    return Segment(body_id, 0, len(data))


async def _put(storage: Storage, bucket: str, key: str, data: bytes = b"x") -> ObjectMeta:
    seg = await _body(storage, data)
    meta = ObjectMeta(bucket, key, len(data), "e", 1, segments=(seg,))
    await storage.put_object(meta, new_bodies=[seg.body_id])
    return meta


async def _wait_gone(storage: Storage, body_id: str) -> None:
    with anyio.fail_after(10):
        # Freeing runs in the storage's task group after the commit: poll, bounded.
        while _exists(storage.body_path(body_id)):  # noqa: ASYNC110
            await anyio.sleep(0.001)


def test_key_successor() -> None:
    assert key_successor("a/") == "a0"
    assert key_successor("") is None
    assert key_successor("a\U0010ffff") == "b"
    assert key_successor("\U0010ffff") is None
    assert key_successor("\ud7ff") == "\ue000"


async def test_buckets(tmp_path: Path) -> None:
    async with Storage(tmp_path) as s:
        await s.create_bucket("b1")
        with pytest.raises(S3Error) as e:
            await s.create_bucket("b1")
        assert e.value.code == "BucketAlreadyOwnedByYou"
        assert [n for n, _ in s.list_buckets()] == ["b1"]
        await _put(s, "b1", "k")
        with pytest.raises(S3Error) as e:
            await s.delete_bucket("b1")
        assert e.value.code == "BucketNotEmpty"
        await s.delete_object("b1", "k")
        await s.delete_bucket("b1")
        assert not s.bucket_exists("b1")
        with pytest.raises(S3Error) as e:
            await s.delete_bucket("b1")
        assert e.value.code == "NoSuchBucket"


async def test_put_get_overwrite_frees_old_body(tmp_path: Path) -> None:
    async with Storage(tmp_path) as s:
        await s.create_bucket("b")
        first = await _put(s, "b", "k", b"one")
        got = s.get_object("b", "k")
        assert got == first
        second = await _put(s, "b", "k", b"two")
        await _wait_gone(s, first.segments[0].body_id)
        assert s.get_object("b", "k").segments == second.segments
        assert s.body_files() == [second.segments[0].body_id]
        with pytest.raises(S3Error) as e:
            s.get_object("b", "nope")
        assert e.value.code == "NoSuchKey"
        with pytest.raises(S3Error) as e:
            s.get_object("nob", "k")
        assert e.value.code == "NoSuchBucket"


async def test_put_into_missing_bucket_frees_the_new_body(tmp_path: Path) -> None:
    async with Storage(tmp_path) as s:
        seg = await _body(s, b"abc")
        with pytest.raises(S3Error) as e:
            await s.put_object(
                ObjectMeta("nob", "k", 3, "e", 1, segments=(seg,)), new_bodies=[seg.body_id]
            )
        assert e.value.code == "NoSuchBucket"
        await _wait_gone(s, seg.body_id)


async def test_pinned_body_survives_delete_until_unpinned(tmp_path: Path) -> None:
    async with Storage(tmp_path) as s:
        await s.create_bucket("b")
        meta = await _put(s, "b", "k", b"data")
        body = meta.segments[0].body_id
        s.pin([body])
        await s.delete_object("b", "k")
        # Doomed, not gone: the reader still holds it.
        assert _exists(s.body_path(body))
        assert s.statistics()["doomed_bodies"] == 1
        s.unpin([body])
        await _wait_gone(s, body)


async def test_concurrent_puts_are_group_committed(tmp_path: Path) -> None:
    async with Storage(tmp_path) as s:
        await s.create_bucket("b")
        before = s.statistics()["batches"]
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(_put, s, "b", f"k{i:03d}", b"v")
        st = s.statistics()
        assert st["operations"] >= 51
        assert st["batches"] - before < 50
        page = s.list_objects("b", max_keys=1000)
        assert [o.key for o in page.objects] == [f"k{i:03d}" for i in range(50)]


async def test_failed_operation_does_not_spoil_its_batch(tmp_path: Path) -> None:
    async with Storage(tmp_path) as s:
        await s.create_bucket("b")
        results: dict[str, BaseException | None] = {}

        async def attempt(bucket: str) -> None:
            try:
                await _put(s, bucket, "k")
                results[bucket] = None
            except S3Error as exc:
                results[bucket] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(attempt, "b")
            tg.start_soon(attempt, "missing")
        assert results["b"] is None
        assert isinstance(results["missing"], S3Error)
        assert s.get_object("b", "k").size == 1


async def test_recovery_removes_orphans_and_tmp(tmp_path: Path) -> None:
    async with Storage(tmp_path) as s:
        await s.create_bucket("b")
        kept = await _put(s, "b", "k")
        orphan = await _body(s, b"never committed")
        half = s.new_body_id()
        _write(s.tmp_path(half), b"half")
    async with Storage(tmp_path) as s:
        assert s.statistics()["recovered_orphans"] == 1
        assert s.body_files() == [kept.segments[0].body_id]
        assert not _exists(s.body_path(orphan.body_id))
        assert os.listdir(os.path.join(tmp_path, "tmp")) == []
        assert s.get_object("b", "k") == kept


async def test_durable_settings(tmp_path: Path) -> None:
    async with Storage(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / "meta.sqlite3")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_listing_with_delimiter_and_pages(tmp_path: Path) -> None:
    keys = ["a", "a/1", "a/2", "a/b/1", "b", "c/1", "c/2", "d"]
    async with Storage(tmp_path) as s:
        await s.create_bucket("b")
        for k in keys:
            await _put(s, "b", k)
        page = s.list_objects("b", delimiter="/")
        assert [o.key for o in page.objects] == ["a", "b", "d"]
        assert page.common_prefixes == ["a/", "c/"]
        assert not page.truncated
        page = s.list_objects("b", prefix="a/", delimiter="/")
        assert [o.key for o in page.objects] == ["a/1", "a/2"]
        assert page.common_prefixes == ["a/b/"]
        # Pages of two entries, following next_start, give every entry exactly once.
        seen: list[str] = []
        start = None
        while True:
            page = s.list_objects("b", delimiter="/", start=start, max_keys=2)
            seen += [o.key for o in page.objects] + page.common_prefixes
            assert len(page.objects) + len(page.common_prefixes) <= 2
            if not page.truncated:
                break
            start = page.next_start
        assert sorted(seen) == ["a", "a/", "b", "c/", "d"]
        # Exactly two entries left: not truncated.
        page = s.list_objects("b", start=("c/2", True), max_keys=2)
        assert [o.key for o in page.objects] == ["c/2", "d"]
        assert not page.truncated
        page = s.list_objects("b", start=("c/1", False), max_keys=1)
        assert [o.key for o in page.objects] == ["c/2"]
        assert page.truncated
        assert s.list_objects("b", prefix="zz").objects == []


async def test_listing_cost_is_independent_of_key_count(tmp_path: Path) -> None:
    """A page seeks once per entry: count SQLite VM steps for 1,000 and for 40,000 keys."""
    async with Storage(tmp_path) as s:
        conn = s._writer
        reader = s._reader
        assert conn is not None
        assert reader is not None
        for bucket, per in (("small", 50), ("big", 2000)):
            await s.create_bucket(bucket)
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO objects VALUES (?, ?, 1, 'e', 1, NULL, NULL, NULL, NULL, NULL, "
                "NULL, '{}', '{}', NULL, 0, '[]')",
                [(bucket, f"p{i:02d}/{j:05d}") for i in range(20) for j in range(per)],
            )
            conn.execute("COMMIT")
        steps = {"n": 0}

        def count() -> int:
            steps["n"] += 1
            return 0

        cost: dict[tuple[str, str], int] = {}
        for bucket in ("small", "big"):
            for delimiter in ("/", ""):
                steps["n"] = 0
                reader.set_progress_handler(count, 10)
                page = s.list_objects(bucket, prefix="p03/", delimiter=delimiter, max_keys=30)
                reader.set_progress_handler(None, 0)
                assert len(page.objects) == 30
                assert page.truncated
                steps["n"] = 0
                reader.set_progress_handler(count, 10)
                s.list_objects(bucket, delimiter=delimiter, max_keys=10)
                reader.set_progress_handler(None, 0)
                cost[bucket, delimiter] = steps["n"]
        for delimiter in ("/", ""):
            # 40 times the keys; a scan would cost about 40 times as much.
            assert cost["big", delimiter] <= cost["small", delimiter] * 1.5 + 5


async def test_multipart_complete_by_reference(tmp_path: Path) -> None:
    async with Storage(tmp_path, min_part_size=4) as s:
        await s.create_bucket("b")
        await s.create_upload(UploadMeta("u1", "b", "k", 1))
        segs = []
        for n, data in ((1, b"aaaa"), (2, b"bbbb"), (3, b"cc")):
            seg = await _body(s, data)
            segs.append(seg)
            await s.put_part("u1", PartMeta(n, len(data), f"e{n}", 1, segments=(seg,)))
        replaced = await _body(s, b"zzzz")
        await s.put_part("u1", PartMeta(2, 4, "e2b", 1, segments=(replaced,)))
        await _wait_gone(s, segs[1].body_id)
        parts, more = s.list_parts("u1")
        assert [p.part_number for p in parts] == [1, 2, 3]
        assert not more

        def build(upload: UploadMeta, chosen: list[PartMeta]) -> ObjectMeta:
            segments = tuple(seg for p in chosen for seg in p.segments)
            return ObjectMeta(
                upload.bucket, upload.key, sum(p.size for p in chosen), "x-2", 2,
                parts_count=len(chosen), segments=segments,
            )  # fmt: skip

        for bad, code in (
            ([(2, "e2b"), (1, "e1")], "InvalidPartOrder"),
            ([(1, "wrong")], "InvalidPart"),
            ([(7, "e7")], "InvalidPart"),
        ):
            with pytest.raises(S3Error) as e:
                await s.complete_upload("u1", "b", "k", bad, build)
            assert e.value.code == code
        with pytest.raises(S3Error) as e:
            await s.complete_upload("u1", "b", "other", [(1, "e1")], build)
        assert e.value.code == "NoSuchUpload"
        obj = await s.complete_upload("u1", "b", "k", [(1, "e1"), (3, "e3")], build)
        assert obj.segments == (segs[0], segs[2])
        # The unused part 2 is freed, the used ones now belong to the object.
        await _wait_gone(s, replaced.body_id)
        assert sorted(s.body_files()) == sorted([segs[0].body_id, segs[2].body_id])
        with pytest.raises(S3Error) as e:
            s.get_upload("u1")
        assert e.value.code == "NoSuchUpload"


async def test_entity_too_small(tmp_path: Path) -> None:
    async with Storage(tmp_path, min_part_size=10) as s:
        await s.create_bucket("b")
        await s.create_upload(UploadMeta("u", "b", "k", 1))
        for n in (1, 2):
            seg = await _body(s, b"tiny")
            await s.put_part("u", PartMeta(n, 4, f"e{n}", 1, segments=(seg,)))
        with pytest.raises(S3Error) as e:
            await s.complete_upload(
                "u", "b", "k", [(1, "e1"), (2, "e2")], lambda u, p: ObjectMeta("b", "k", 0, "", 0)
            )
        assert e.value.code == "EntityTooSmall"
        # Still there, and survives a restart.
    async with Storage(tmp_path) as s:
        assert s.get_upload("u").key == "k"
        parts, _ = s.list_parts("u")
        assert len(parts) == 2
        uploads, _ = s.list_uploads("b")
        assert [u.upload_id for u in uploads] == ["u"]
        await s.abort_upload("u", "b", "k")
        for p in parts:
            await _wait_gone(s, p.segments[0].body_id)
        assert s.list_uploads("b") == ([], False)


async def test_copy_onto_itself_keeps_the_body(tmp_path: Path) -> None:
    async with Storage(tmp_path) as s:
        await s.create_bucket("b")
        meta = await _put(s, "b", "k", b"keep")

        def build(src: ObjectMeta) -> ObjectMeta:
            return ObjectMeta(
                src.bucket, src.key, src.size, src.etag, 2,
                user_metadata={"new": "1"}, segments=src.segments,
            )  # fmt: skip

        await s.copy_object("b", "k", build)
        await s.copy_object(
            "b", "k", lambda src: ObjectMeta("b", "k2", 4, "e", 3, segments=src.segments)
        )
        await s.delete_object("b", "k")
        assert _exists(s.body_path(meta.segments[0].body_id))
        assert s.get_object("b", "k2").segments == meta.segments
        await s.delete_object("b", "k2")
        await _wait_gone(s, meta.segments[0].body_id)
