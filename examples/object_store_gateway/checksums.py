"""Request-body digests in one pass, and their verification against what the client declared.

A PUT body is read once. Each chunk goes through every digest the request needs before the next
chunk is read: MD5 always (it is the ETag), plus the flexible checksums S3 knows (CRC32 by zlib,
CRC32C and CRC64NVME by ``awscrt.checksums``, SHA-1 and SHA-256 by hashlib) when the request
names them. Measured on this machine (1 MiB buffers): CRC32C 15 GB/s, CRC64NVME 9 GB/s, CRC32
2.1 GB/s, SHA-1 1.5 GB/s, SHA-256 1.4 GB/s, MD5 0.6 GB/s; MD5 bounds a PUT, so a second pass for
any digest would cost more than all the others together.

Values travel as S3 sends them: checksums base64 of the big-endian digest bytes (CRCs 4 or 8
bytes), Content-MD5 base64 of the 16-byte digest, ``x-amz-content-sha256`` lower-case hex.

Multipart: S3's COMPOSITE checksum is the checksum of the concatenated binary part checksums with
``-N`` appended (:func:`composite_checksum`); the FULL_OBJECT checksum of a CRC is the CRC of the
whole object, derived from the parts' CRCs and lengths without reading any byte again
(:func:`full_object_crc`, the zlib ``crc32_combine`` construction, done by awscrt).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from typing import TYPE_CHECKING, Final, final

from awscrt import checksums as _crt  # type: ignore[import-untyped]

from .errors import S3Error

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "ALGORITHMS",
    "CRC_ALGORITHMS",
    "Digests",
    "combine_crc",
    "composite_checksum",
    "digest_from_b64",
    "full_object_crc",
    "header_map",
    "wanted_algorithms",
]

# Flexible checksum algorithms, lower-case as in the header names, with their digest size.
ALGORITHMS: Final[dict[str, int]] = {
    "crc32": 4,
    "crc32c": 4,
    "crc64nvme": 8,
    "sha1": 20,
    "sha256": 32,
}
CRC_ALGORITHMS: Final = frozenset({"crc32", "crc32c", "crc64nvme"})

# How S3 spells each algorithm in messages (and in x-amz-sdk-checksum-algorithm).
_DISPLAY: Final = {name: name.upper() for name in ALGORITHMS}
_CHECKSUM_PREFIX: Final = "x-amz-checksum-"
# x-amz-checksum-* headers that carry no checksum value.
_NOT_A_VALUE: Final = frozenset(
    {"x-amz-checksum-type", "x-amz-checksum-mode", "x-amz-checksum-algorithm"}
)
_HEX: Final = frozenset("0123456789abcdef")


def header_map(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Decode ASGI headers into a dict with lower-case names (latin-1, as HTTP/1.1 defines).

    A repeated header keeps its values joined by ``,`` (RFC 9110 section 5.3).
    """
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[key] = f"{out[key]},{text}" if key in out else text
    return out


def _algorithm(name: str, what: str) -> str:
    algorithm = name.strip().lower()
    if algorithm not in ALGORITHMS:
        raise S3Error("InvalidRequest", f"Value for {what} is invalid: {name!r}.")
    return algorithm


def _header_checksums(headers: Mapping[str, str]) -> list[str]:
    # Starlette's Headers and plain dicts alike iterate their (lower-case) names.
    found = []
    for key in headers:
        name = key.lower()
        if name.startswith(_CHECKSUM_PREFIX) and name not in _NOT_A_VALUE:
            found.append(_algorithm(name[len(_CHECKSUM_PREFIX) :], name))
    return found


def _is_sha256_hex(value: str | None) -> bool:
    return value is not None and len(value) == 64 and _HEX.issuperset(value.lower())


def wanted_algorithms(headers: Mapping[str, str], extra: Iterable[str] = ()) -> frozenset[str]:
    """The checksums a request body must be run through, known before its first byte.

    From an ``x-amz-checksum-<alg>`` header, an ``x-amz-trailer: x-amz-checksum-<alg>``, an
    ``x-amz-sdk-checksum-algorithm``, a hex ``x-amz-content-sha256`` (sha256), and extra (e.g. the
    algorithm a multipart upload was created with). MD5 is always computed and not listed.

    Args:
        headers: request headers, lower-case names (a dict from :func:`header_map`, or a
            case-insensitive mapping such as Starlette's ``Headers``).
        extra: further algorithm names to compute.

    Raises:
        S3Error: InvalidRequest for an unknown algorithm, more than one checksum header, or an
            ``x-amz-sdk-checksum-algorithm`` without a checksum header or trailer to match.
    """
    want: set[str] = {_algorithm(name, "checksum algorithm") for name in extra}
    declared = _header_checksums(headers)
    trailer = headers.get("x-amz-trailer")
    if trailer is not None:
        for item in trailer.split(","):
            name = item.strip().lower()
            if name.startswith(_CHECKSUM_PREFIX):
                declared.append(_algorithm(name[len(_CHECKSUM_PREFIX) :], "x-amz-trailer"))
    if len(declared) > 1:
        raise S3Error(
            "InvalidRequest",
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
        )
    sdk = headers.get("x-amz-sdk-checksum-algorithm")
    if sdk is not None:
        algorithm = _algorithm(sdk, "x-amz-sdk-checksum-algorithm")
        if declared != [algorithm]:
            raise S3Error(
                "InvalidRequest",
                "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* "
                "or x-amz-trailer headers were found.",
            )
    want.update(declared)
    if _is_sha256_hex(headers.get("x-amz-content-sha256")):
        want.add("sha256")
    return frozenset(want)


def digest_from_b64(algorithm: str, value: str) -> bytes:
    """Decode a base64 checksum as S3 sends it, checking its length for the algorithm.

    Raises:
        S3Error: InvalidRequest if value is not base64 of a digest of the algorithm's size.
    """
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != ALGORITHMS[algorithm]:
        raise S3Error("InvalidRequest", f"Value for x-amz-checksum-{algorithm} header is invalid.")
    return raw


def _crc_bytes(algorithm: str, value: int) -> bytes:
    return value.to_bytes(ALGORITHMS[algorithm], "big")


@final
class Digests:
    """Every digest one request body needs, fed chunk by chunk in a single pass.

    Attributes:
        want: the flexible checksums computed besides MD5.
        size: bytes fed so far.
    """

    __slots__ = ("_crc32", "_crc32c", "_crc64", "_md5", "_sha1", "_sha256", "size", "want")

    def __init__(self, want: Iterable[str] = ()) -> None:
        names = frozenset(_algorithm(name, "checksum algorithm") for name in want)
        self.want: Final = names
        self.size = 0
        self._md5 = hashlib.md5()
        # None: not wanted. Immutable after __init__ except for the running values.
        self._crc32: int | None = 0 if "crc32" in names else None
        self._crc32c: int | None = 0 if "crc32c" in names else None
        self._crc64: int | None = 0 if "crc64nvme" in names else None
        self._sha1 = hashlib.sha1() if "sha1" in names else None
        self._sha256 = hashlib.sha256() if "sha256" in names else None

    @classmethod
    def for_request(cls, headers: Mapping[str, str], extra: Iterable[str] = ()) -> Digests:
        """Digests for a request body, as :func:`wanted_algorithms` decides."""
        return cls(wanted_algorithms(headers, extra))

    def update(self, buf: bytes | bytearray | memoryview) -> None:
        """Run buf through every wanted digest. Hot path: one call per body chunk."""
        self.size += len(buf)
        self._md5.update(buf)
        if self._crc32 is not None:
            self._crc32 = zlib.crc32(buf, self._crc32)
        if self._crc32c is not None:
            self._crc32c = _crt.crc32c(buf, self._crc32c)
        if self._crc64 is not None:
            self._crc64 = _crt.crc64nvme(buf, self._crc64)
        if self._sha1 is not None:
            self._sha1.update(buf)
        if self._sha256 is not None:
            self._sha256.update(buf)

    def md5_digest(self) -> bytes:
        """The 16-byte MD5 of everything fed."""
        return self._md5.digest()

    def md5_hex(self) -> str:
        """The MD5 as lower-case hex: a single-part object's ETag, unquoted."""
        return self._md5.hexdigest()

    def crc(self, algorithm: str) -> int:
        """The running value of a wanted CRC, as an integer (for :func:`full_object_crc`)."""
        value = {"crc32": self._crc32, "crc32c": self._crc32c, "crc64nvme": self._crc64}.get(
            algorithm
        )
        if value is None:
            raise ValueError(f"{algorithm!r} is not a CRC this Digests computes ({self.want})")
        return value

    def digest(self, algorithm: str) -> bytes:
        """The binary digest of a wanted algorithm (CRCs big-endian)."""
        if algorithm in CRC_ALGORITHMS:
            return _crc_bytes(algorithm, self.crc(algorithm))
        hasher = (
            self._sha1 if algorithm == "sha1" else self._sha256 if algorithm == "sha256" else None
        )
        if hasher is None:
            raise ValueError(f"{algorithm!r} is not computed by this Digests ({self.want})")
        return hasher.digest()

    def b64(self, algorithm: str) -> str:
        """A wanted digest in base64, as S3 sends it in ``x-amz-checksum-<algorithm>``."""
        return base64.b64encode(self.digest(algorithm)).decode("ascii")

    def checksums(self) -> dict[str, str]:
        """Every wanted checksum, algorithm name to base64 value (what an object stores)."""
        return {name: self.b64(name) for name in sorted(self.want)}

    def verify(
        self,
        headers: Mapping[str, str],
        trailers: Mapping[str, str] | None = None,
        *,
        content_sha256: str | None = None,
    ) -> None:
        """Check the body fed so far against every digest the client declared.

        Checked: ``x-amz-content-sha256`` (content_sha256 if given, else the header when it is a
        hex digest), ``Content-MD5``, and the ``x-amz-checksum-<alg>`` header or, for an
        aws-chunked body, the trailer ``x-amz-trailer`` names.

        Args:
            headers: request headers, lower-case names.
            trailers: trailers from the aws-chunked decoder, lower-case names.
            content_sha256: the signed payload hash from authentication.

        Raises:
            S3Error: XAmzContentSHA256Mismatch; InvalidDigest (Content-MD5 not base64 of 16
                bytes); BadDigest (a digest does not match); InvalidRequest (a malformed
                checksum value, or a declared trailer that never came).
            ValueError: a digest to check was not computed (a gateway bug: the Digests was not
                made by :meth:`for_request` on these headers).
        """
        expected_sha = content_sha256
        if expected_sha is None:
            header_sha = headers.get("x-amz-content-sha256")
            if _is_sha256_hex(header_sha):
                expected_sha = header_sha
        if expected_sha is not None:
            computed = self.digest("sha256").hex()
            if computed != expected_sha.lower():
                raise S3Error(
                    "XAmzContentSHA256Mismatch",
                    ClientComputedContentSHA256=expected_sha,
                    S3ComputedContentSHA256=computed,
                )
        md5 = headers.get("content-md5")
        if md5 is not None:
            try:
                want_md5 = base64.b64decode(md5.strip(), validate=True)
            except (binascii.Error, ValueError):
                want_md5 = b""
            if len(want_md5) != 16:
                err = S3Error("InvalidDigest")
                err.fields["Content-MD5"] = md5
                raise err
            got = self.md5_digest()
            if got != want_md5:
                raise S3Error(
                    "BadDigest",
                    ExpectedDigest=want_md5.hex(),
                    CalculatedDigest=base64.b64encode(got).decode("ascii"),
                )
        for name in headers:
            key = name.lower()
            if key.startswith(_CHECKSUM_PREFIX) and key not in _NOT_A_VALUE:
                self._check(key, headers[name])
        trailer = headers.get("x-amz-trailer")
        if trailer is not None:
            for item in trailer.split(","):
                key = item.strip().lower()
                if not key.startswith(_CHECKSUM_PREFIX):
                    continue
                value = None if trailers is None else trailers.get(key)
                if value is None:
                    raise S3Error("InvalidRequest", f"The trailer {key} was declared but not sent.")
                self._check(key, value)

    def _check(self, header: str, value: str) -> None:
        algorithm = _algorithm(header[len(_CHECKSUM_PREFIX) :], header)
        want = digest_from_b64(algorithm, value)
        if algorithm not in self.want:
            raise ValueError(f"{algorithm} was declared but not computed ({self.want})")
        if self.digest(algorithm) != want:
            raise S3Error(
                "BadDigest",
                f"The {_DISPLAY[algorithm]} you specified did not match the calculated checksum.",
            )


def combine_crc(algorithm: str, crc1: int, crc2: int, length2: int) -> int:
    """The CRC of A+B from crc(A), crc(B) and len(B), reading no byte. Complexity: O(log len2)."""
    if algorithm == "crc32":
        return int(_crt.combine_crc32(crc1, crc2, length2))
    if algorithm == "crc32c":
        return int(_crt.combine_crc32c(crc1, crc2, length2))
    if algorithm == "crc64nvme":
        return int(_crt.combine_crc64nvme(crc1, crc2, length2))
    raise ValueError(f"{algorithm!r} is not a CRC algorithm")


def full_object_crc(algorithm: str, parts: Iterable[tuple[int, int]]) -> str:
    """S3's FULL_OBJECT checksum of a multipart object, from its parts' CRCs.

    Args:
        algorithm: crc32, crc32c or crc64nvme.
        parts: (crc, length) of each part, in part order.

    Returns:
        The whole object's CRC in base64, as ``x-amz-checksum-<algorithm>`` carries it.
    """
    total = 0
    for crc, length in parts:
        total = combine_crc(algorithm, total, crc, length)
    return base64.b64encode(_crc_bytes(algorithm, total)).decode("ascii")


def composite_checksum(algorithm: str, part_digests: Sequence[bytes]) -> str:
    """S3's COMPOSITE checksum: the checksum of the concatenated part digests, then ``-N``.

    Args:
        algorithm: any of :data:`ALGORITHMS`.
        part_digests: each part's binary digest, in part order.
    """
    digests = Digests({algorithm})
    for part in part_digests:
        digests.update(part)
    return f"{digests.b64(algorithm)}-{len(part_digests)}"
