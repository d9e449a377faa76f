"""Validators, preconditions and range parsing: the pure functions under the app."""

from __future__ import annotations

import pytest

from examples.embedded_app.conditional import (
    UNSATISFIABLE,
    Validators,
    evaluate_preconditions,
    parse_http_date,
    parse_range,
)

V = Validators.of(0x1F, 100, 1_700_000_000_123_456_789)
LM = V.last_modified


def test_validators() -> None:
    assert V.etag == b'"1f-64-' + f"{1_700_000_000_123_456_789:x}".encode() + b'"'
    assert V.mtime == 1_700_000_000
    assert parse_http_date(LM) == V.mtime
    assert parse_http_date(b"garbage") is None
    assert parse_http_date(b"") is None


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("GET", {}, None),
        ("GET", {b"if-none-match": V.etag}, 304),
        ("PUT", {b"if-none-match": V.etag}, 412),
        ("PUT", {b"if-none-match": b"*"}, 412),
        ("GET", {b"if-none-match": b'"a", "b"'}, None),
        ("GET", {b"if-match": b"*"}, None),
        (
            "GET",
            {b"if-match": V.etag, b"if-unmodified-since": b"Thu, 01 Jan 1970 00:00:00 GMT"},
            None,
        ),
        ("GET", {b"if-unmodified-since": b"bad date"}, None),
        ("GET", {b"if-modified-since": LM}, 304),
        ("PUT", {b"if-modified-since": LM}, None),  # GET and HEAD only
    ],
)
def test_preconditions(method: str, headers: dict[bytes, bytes], status: int | None) -> None:
    assert evaluate_preconditions(method, V, headers) == status


def test_preconditions_without_a_file() -> None:
    assert evaluate_preconditions("PUT", None, {b"if-match": b"*"}) == 412
    assert evaluate_preconditions("PUT", None, {b"if-none-match": b"*"}) is None
    assert evaluate_preconditions("PUT", None, {b"if-unmodified-since": LM}) is None


@pytest.mark.parametrize(
    ("value", "size", "want"),
    [
        (None, 10, None),
        (b"bytes=0-0", 10, (0, 1)),
        (b"bytes=-20", 10, (0, 10)),
        (b"bytes=-0", 10, UNSATISFIABLE),
        (b"bytes=-3", 0, UNSATISFIABLE),
        (b"bytes=0-", 0, UNSATISFIABLE),
        (b"bytes=9-", 10, (9, 10)),
        (b"bytes=10-", 10, UNSATISFIABLE),
        (b"bytes=10-12", 10, UNSATISFIABLE),
        (b"bytes=+1-2", 10, None),
        (b"bytes=1-+2", 10, None),
        (b"bytes=-+2", 10, None),
        (b"bytes=1", 10, None),
        (b"bytes=1-2, 4-5", 10, None),
    ],
)
def test_parse_range(value: bytes | None, size: int, want: tuple[int, int] | None) -> None:
    assert parse_range(value, size, None, V) == want


def test_if_range() -> None:
    assert parse_range(b"bytes=0-1", 10, V.etag, V) == (0, 2)
    assert parse_range(b"bytes=0-1", 10, LM, V) == (0, 2)
    assert parse_range(b"bytes=0-1", 10, b"Thu, 01 Jan 1970 00:00:00 GMT", V) is None
    assert parse_range(b"bytes=0-1", 10, b"W/" + V.etag, V) is None
