"""Validators, preconditions and byte ranges (RFC 9110 sections 8.8, 13 and 14), for one file.

Pure functions over header values (``bytes``, as ASGI hands them over): no I/O, no state. The
evaluation order is RFC 9110 section 13.2.2's: If-Match, else If-Unmodified-Since; then
If-None-Match, else If-Modified-Since (GET and HEAD only); then Range, subject to If-Range.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import Final

__all__ = [
    "UNSATISFIABLE",
    "Validators",
    "evaluate_preconditions",
    "parse_http_date",
    "parse_range",
]


@dataclass(frozen=True, slots=True)
class Validators:
    """A file's ETag and Last-Modified, made from its identity (inode, size, mtime)."""

    #: The strong entity tag, quoted: ``"<ino>-<size>-<mtime_ns>"`` in hex.
    etag: bytes
    #: Modification time in whole seconds (the resolution of an HTTP date).
    mtime: int
    #: ``Last-Modified`` value (IMF-fixdate).
    last_modified: bytes

    @classmethod
    def of(cls, ino: int, size: int, mtime_ns: int) -> Validators:
        """The validators of a file with this identity."""
        mtime = mtime_ns // 1_000_000_000
        etag = f'"{ino:x}-{size:x}-{mtime_ns:x}"'.encode("ascii")
        return cls(etag, mtime, formatdate(mtime, usegmt=True).encode("ascii"))


def parse_http_date(value: bytes) -> int | None:
    """Seconds since the epoch of an HTTP date, or None when it is not one (then ignored)."""
    try:
        return int(parsedate_to_datetime(value.decode("latin-1")).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _tags(value: bytes) -> list[bytes]:
    return [t.strip() for t in value.split(b",") if t.strip()]


def _weak_match(value: bytes, etag: bytes) -> bool:
    """If-None-Match's weak comparison: ``W/`` prefixes are ignored."""
    return any(t == b"*" or t.removeprefix(b"W/") == etag for t in _tags(value))


def _strong_match(value: bytes, etag: bytes) -> bool:
    """If-Match's strong comparison: a weak tag never matches."""
    return any(t == b"*" or t == etag for t in _tags(value))


def evaluate_preconditions(
    method: str, v: Validators | None, headers: dict[bytes, bytes]
) -> int | None:
    """The status that ends the request early (304 or 412), or None to go on.

    Args:
        method: the request method (``GET``, ``HEAD``, ``PUT``).
        v: the current file's validators, None when there is no file (a PUT that creates).
        headers: lower-case header names to values, only the conditional ones needed.
    """
    if_match = headers.get(b"if-match")
    if if_match is not None:
        if v is None or not _strong_match(if_match, v.etag):
            return 412
    else:
        since = headers.get(b"if-unmodified-since")
        if since is not None and v is not None:
            t = parse_http_date(since)
            if t is not None and v.mtime > t:
                return 412
    if_none = headers.get(b"if-none-match")
    if if_none is not None:
        if v is not None and _weak_match(if_none, v.etag):
            return 304 if method in ("GET", "HEAD") else 412
    elif method in ("GET", "HEAD") and v is not None:
        since = headers.get(b"if-modified-since")
        if since is not None:
            t = parse_http_date(since)
            if t is not None and v.mtime <= t:
                return 304
    return None


#: What :func:`parse_range` returns for a range that cannot be satisfied (416).
UNSATISFIABLE: Final = (-1, -1)


def parse_range(
    value: bytes | None, size: int, if_range: bytes | None, v: Validators
) -> tuple[int, int] | None:
    """The single byte range ``(start, end)`` (end exclusive) a GET asks for.

    Returns None to send the whole file: no Range, a syntactically invalid one or one in
    another unit (ignored, as RFC 9110 section 14.2 says), several ranges (a server may ignore
    Range; this one serves one range only), or an If-Range that does not match. Returns
    :data:`UNSATISFIABLE` when no byte of the range exists (416).
    """
    if value is None:
        return None
    if if_range is not None:
        if if_range.startswith((b'"', b"W/")):
            if if_range.strip() != v.etag:  # strong comparison; a weak tag never matches
                return None
        elif parse_http_date(if_range) != v.mtime:
            return None
    unit, sep, spec = value.partition(b"=")
    if not sep or unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first, dash, last = spec.strip().partition(b"-")
    if not dash:
        return None
    try:
        if not first:  # suffix range: the last N bytes
            n = int(last)
            if n < 0 or not last.isdigit():
                return None
            if n == 0 or size == 0:
                return UNSATISFIABLE
            return max(0, size - n), size
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if last and end <= start:
        return None  # "5-3" is invalid syntax: ignored
    if start >= size:
        return UNSATISFIABLE
    return start, min(end, size)
