r"""Request bodies: the incremental aws-chunked decoder, and a pass-through for plain bodies.

A body arrives in pieces of any size, split anywhere (an ASGI server hands over whatever the
socket gave it). :func:`make_body_decoder` picks the decoder for the request's payload mode
(:class:`~.auth.AuthContext`); both have the same two calls:

- ``feed(data) -> list[bytes | memoryview]``: the payload bytes found in data, framing removed;
  views into data (no copy), valid while data is.
- ``finish() -> dict[str, str]``: the trailers (lower-case names) once the body has ended, or
  S3Error if it ended early or the decoded length differs from ``x-amz-decoded-content-length``.

The aws-chunked framing (S3 "Transferring Payload in Multiple Chunks" and "Signature calculations
for trailing headers")::

    signed:    <hex-size>;chunk-signature=<sig>\r\n<data>\r\n ... 0;chunk-signature=<sig>\r\n
    unsigned:  <hex-size>\r\n<data>\r\n ... 0\r\n
    then:      [<trailer>:<value>\r\n ...] [x-amz-trailer-signature:<sig>\r\n] \r\n

Each chunk signature is the HMAC, under the request's signing key, of a string naming the
previous signature (the request's own, the seed, for the first chunk) and the SHA-256 of the
chunk's data, so the chain proves every chunk and their order; the trailer signature chains on
the final chunk's. No library verifies this chain server-side; it is a few lines here. The cost is
one SHA-256 pass over the data and one small HMAC per chunk.

A chunk's data is released to the caller as it arrives, before its signature (which follows it)
can be checked: callers must treat everything fed as provisional until :meth:`finish` returns,
which is what the gateway does (an object is committed only after finish and digest checks).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Protocol, final

from .auth import EMPTY_SHA256, chunk_string_to_sign, trailer_string_to_sign
from .checksums import header_map
from .errors import S3Error

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .auth import AuthContext

__all__ = ["AwsChunkedDecoder", "BodyDecoder", "PassThroughDecoder", "make_body_decoder"]

# Tunables.
MAX_LINE: Final = 4096  # longest chunk header or trailer line accepted, CRLF included
MAX_TRAILERS: Final = 16  # trailer lines accepted before the body is refused

_HEADER: Final = 0  # reading a chunk header line
_DATA: Final = 1  # inside a chunk's data
_DATA_CRLF: Final = 2  # the CRLF after a chunk's data
_TRAILER: Final = 3  # reading trailer lines after the final chunk
_DONE: Final = 4  # the empty line after the trailers was read

_SIGNATURE_EXT: Final = b"chunk-signature="
_HEX_DIGITS: Final = frozenset(b"0123456789abcdefABCDEF")
_TRAILER_SIGNATURE: Final = "x-amz-trailer-signature"


class BodyDecoder(Protocol):
    """What the app feeds request body pieces to."""

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
        """The payload bytes in data, framing removed."""
        ...

    def finish(self) -> dict[str, str]:
        """The trailers, once the whole body was fed; S3Error if it is incomplete."""
        ...


def _incomplete(detail: str) -> S3Error:
    return S3Error("IncompleteBody", f"The request body is incomplete: {detail}.")


def _framing(detail: str) -> S3Error:
    return S3Error("InvalidRequest", f"Invalid aws-chunked body: {detail}.")


def _headers(headers: Mapping[str, str] | Iterable[tuple[bytes, bytes]]) -> Mapping[str, str]:
    if isinstance(headers, Mapping):
        return headers
    return header_map(headers)


def _length(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or not value.isascii():
        raise S3Error(
            "InvalidArgument", f"{name} must be a non-negative integer", ArgumentName=name
        )
    return int(value)


@final
class PassThroughDecoder:
    """The decoder for a plain body: payload is the body; length checked against Content-Length.

    Attributes:
        expected: the declared Content-Length, or None (chunked transfer encoding).
        received: bytes fed so far.
    """

    __slots__ = ("expected", "received")

    def __init__(self, expected: int | None) -> None:
        self.expected = expected
        self.received = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
        """Return data unchanged. Hot path: one call per body piece.

        Raises:
            S3Error: IncompleteBody if more arrives than Content-Length declared.
        """
        self.received += len(data)
        if self.expected is not None and self.received > self.expected:
            raise _incomplete(f"more than the {self.expected} bytes declared")
        if not data:
            return []
        return [data if isinstance(data, bytes) else memoryview(data)]

    def finish(self) -> dict[str, str]:
        """Check the length; a plain body has no trailers.

        Raises:
            S3Error: IncompleteBody if fewer bytes arrived than Content-Length declared.
        """
        if self.expected is not None and self.received != self.expected:
            raise _incomplete(f"{self.received} of the {self.expected} bytes declared arrived")
        return {}


@final
class AwsChunkedDecoder:
    """Incremental decoder of an aws-chunked body, verifying chunk signatures when signed.

    Attributes:
        decoded: payload bytes produced so far.
        trailers: trailers read so far, lower-case names.
    """

    __slots__ = (
        "_amz_date",
        "_chunk_hash",
        "_expected",
        "_key",
        "_line",
        "_pending",
        "_previous",
        "_remaining",
        "_scope",
        "_signed",
        "_state",
        "_trailer_lines",
        "_trailer_signed",
        "_wants_trailer_signature",
        "decoded",
        "trailers",
    )

    def __init__(
        self,
        *,
        signed: bool,
        trailer_signed: bool = False,
        signing_key: bytes | None = None,
        seed_signature: str | None = None,
        amz_date: str | None = None,
        scope: str | None = None,
        decoded_length: int | None = None,
    ) -> None:
        """Set up the decoder.

        Args:
            signed: chunks carry ``chunk-signature`` extensions, verified against the chain.
            trailer_signed: the trailers end with ``x-amz-trailer-signature`` (verified).
            signing_key: the SigV4 signing key (signed modes).
            seed_signature: the request's signature, first link of the chain (signed modes).
            amz_date: the request timestamp (signed modes).
            scope: the credential scope (signed modes).
            decoded_length: ``x-amz-decoded-content-length``, checked at the end if given.

        Raises:
            ValueError: a signed mode without the signing key, seed, date or scope.
        """
        if (signed or trailer_signed) and (
            signing_key is None or seed_signature is None or amz_date is None or scope is None
        ):
            raise ValueError("signed aws-chunked decoding needs key, seed, date and scope")
        self._signed = signed
        self._trailer_signed = trailer_signed
        self._key = signing_key or b""
        self._previous = seed_signature or ""
        self._amz_date = amz_date or ""
        self._scope = scope or ""
        self._expected = decoded_length
        self._state = _HEADER
        self._line = bytearray()  # a partial header, CRLF or trailer line
        self._remaining = 0  # data bytes left in the current chunk
        self._chunk_hash = hashlib.sha256() if signed else None
        self._pending = ""  # the signature the current chunk's header announced
        self._trailer_lines: list[bytes] = []  # canonical "name:value\n" lines, for signing
        self._wants_trailer_signature = trailer_signed
        self.decoded = 0
        self.trailers: dict[str, str] = {}

    # Hot path: one call per body piece; data chunks are sliced, never copied.
    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
        """Decode the next piece of the body.

        Returns:
            The payload bytes in data, as views into it.

        Raises:
            S3Error: SignatureDoesNotMatch (a chunk or trailer signature is wrong),
                InvalidRequest (malformed framing, data after the end), IncompleteBody (more
                payload than x-amz-decoded-content-length).
        """
        if not isinstance(data, bytes):
            data = bytes(data)
        out: list[bytes | memoryview] = []
        view: memoryview | None = None
        pos = 0
        size = len(data)
        line = self._line
        while pos < size:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, size - pos)
                if view is None:
                    view = memoryview(data)
                piece = view[pos : pos + take]
                if self._chunk_hash is not None:
                    self._chunk_hash.update(piece)
                out.append(piece)
                pos += take
                self._remaining -= take
                self.decoded += take
                if self._expected is not None and self.decoded > self._expected:
                    raise _incomplete(
                        f"more than x-amz-decoded-content-length ({self._expected}) bytes"
                    )
                if self._remaining == 0:
                    self._state = _DATA_CRLF
            elif state == _DATA_CRLF:
                need = 2 - len(line)
                line += data[pos : pos + need]
                pos += need
                if len(line) == 2:
                    if line != b"\r\n":
                        raise _framing("chunk data not followed by CRLF")
                    line.clear()
                    self._end_chunk(self._chunk_hash)
                    self._state = _HEADER
            elif state == _DONE:
                raise _framing("data after the final chunk")
            else:
                end = data.find(b"\n", pos)
                stop = size if end < 0 else end + 1
                if len(line) + stop - pos > MAX_LINE:
                    raise _framing("chunk header or trailer line too long")
                line += data[pos:stop]
                pos = stop
                if end >= 0:
                    if len(line) < 2 or line[-2] != 0x0D:
                        raise _framing("line not terminated by CRLF")
                    text = bytes(line[:-2])
                    line.clear()
                    if state == _HEADER:
                        self._chunk_header(text)
                    else:
                        self._trailer(text)
        return out

    def _chunk_header(self, text: bytes) -> None:
        size_hex, sep, extension = text.partition(b";")
        if not size_hex or len(size_hex) > 16 or not _HEX_DIGITS.issuperset(size_hex):
            raise _framing(f"bad chunk size {size_hex[:32]!r}")
        size = int(size_hex, 16)
        if self._signed:
            if not sep or not extension.startswith(_SIGNATURE_EXT):
                raise _framing("chunk without chunk-signature")
            self._pending = extension[len(_SIGNATURE_EXT) :].decode("latin-1")
        if size == 0:
            if self._signed:
                self._end_chunk(None)
            self._state = _TRAILER
        else:
            self._remaining = size
            self._state = _DATA

    def _end_chunk(self, hasher: hashlib._Hash | None) -> None:
        if not self._signed:
            return
        digest = EMPTY_SHA256 if hasher is None else hasher.hexdigest()
        string_to_sign = chunk_string_to_sign(self._amz_date, self._scope, self._previous, digest)
        expected = hmac.digest(self._key, string_to_sign, "sha256").hex()
        provided = self._pending
        if not (provided.isascii() and hmac.compare_digest(expected, provided)):
            raise S3Error(
                "SignatureDoesNotMatch",
                "The chunk signature we calculated does not match the signature you provided.",
                StringToSign=string_to_sign.decode(),
                SignatureProvided=provided,
            )
        self._previous = expected
        if hasher is not None:
            self._chunk_hash = hashlib.sha256()

    def _trailer(self, text: bytes) -> None:
        if not text:
            if self._wants_trailer_signature:
                raise S3Error("SignatureDoesNotMatch", "The trailer signature is missing.")
            self._state = _DONE
            return
        name_raw, sep, value_raw = text.partition(b":")
        if not sep or not name_raw.strip():
            raise _framing(f"bad trailer line {text[:64]!r}")
        name = name_raw.strip().decode("latin-1").lower()
        value = value_raw.strip().decode("latin-1")
        if name == _TRAILER_SIGNATURE:
            if not self._trailer_signed or not self._wants_trailer_signature:
                raise _framing("unexpected x-amz-trailer-signature")
            self._check_trailer_signature(value)
            self._wants_trailer_signature = False
            return
        if self._trailer_signed and not self._wants_trailer_signature:
            raise _framing("trailer after x-amz-trailer-signature")
        if len(self.trailers) >= MAX_TRAILERS:
            raise _framing("too many trailers")
        self.trailers[name] = value
        self._trailer_lines.append(name.encode("latin-1") + b":" + value.encode("latin-1") + b"\n")

    def _check_trailer_signature(self, provided: str) -> None:
        digest = hashlib.sha256(b"".join(self._trailer_lines)).hexdigest()
        string_to_sign = trailer_string_to_sign(self._amz_date, self._scope, self._previous, digest)
        expected = hmac.digest(self._key, string_to_sign, "sha256").hex()
        if not (provided.isascii() and hmac.compare_digest(expected, provided)):
            raise S3Error(
                "SignatureDoesNotMatch",
                "The trailer signature we calculated does not match the signature you provided.",
                StringToSign=string_to_sign.decode(),
                SignatureProvided=provided,
            )

    def finish(self) -> dict[str, str]:
        """End of body: check it was complete and return the trailers.

        A body that stops right after a complete trailer line, without the closing empty line,
        is accepted (some clients omit it); one that stops anywhere else is incomplete.

        Raises:
            S3Error: IncompleteBody (truncated, or a decoded length other than
                x-amz-decoded-content-length), SignatureDoesNotMatch (a signed trailer never
                arrived).
        """
        state = self._state
        ended_after_trailer = state == _TRAILER and not self._line and bool(self.trailers)
        if state != _DONE and not ended_after_trailer:
            raise _incomplete("the body ended inside the aws-chunked framing")
        if self._wants_trailer_signature:
            raise S3Error("SignatureDoesNotMatch", "The trailer signature is missing.")
        if self._expected is not None and self.decoded != self._expected:
            raise _incomplete(
                f"{self.decoded} bytes decoded, x-amz-decoded-content-length is {self._expected}"
            )
        self._state = _DONE
        return dict(self.trailers)


def make_body_decoder(
    ctx: AuthContext, headers: Mapping[str, str] | Iterable[tuple[bytes, bytes]]
) -> AwsChunkedDecoder | PassThroughDecoder:
    """The body decoder for an authenticated request.

    aws-chunked is recognised from the payload mode (``x-amz-content-sha256``), never from
    ``Content-Encoding``, which some clients leave out.

    Args:
        ctx: what authentication found.
        headers: the request headers (ASGI pairs, or a mapping with lower-case names).

    Raises:
        S3Error: InvalidArgument for a malformed Content-Length or
            x-amz-decoded-content-length.
    """
    mapping = _headers(headers)
    mode = ctx.payload
    if mode == "signed" or mode == "unsigned":
        return PassThroughDecoder(_length(mapping, "content-length"))
    signed = mode != "streaming-unsigned-trailer"
    return AwsChunkedDecoder(
        signed=signed,
        trailer_signed=mode == "streaming-signed-trailer",
        signing_key=ctx.signing_key if signed else None,
        seed_signature=ctx.seed_signature if signed else None,
        amz_date=ctx.amz_date if signed else None,
        scope=ctx.scope if signed else None,
        decoded_length=_length(mapping, "x-amz-decoded-content-length"),
    )
