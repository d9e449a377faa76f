from __future__ import annotations

import base64
import hashlib
import os

import pytest
from botocore import httpchecksum as bc  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from examples.object_store_gateway.checksums import (
    ALGORITHMS,
    Digests,
    combine_crc,
    composite_checksum,
    digest_from_b64,
    full_object_crc,
    header_map,
    wanted_algorithms,
)
from examples.object_store_gateway.errors import S3Error

ORACLE: dict[str, type[bc.BaseChecksum]] = {
    "crc32": bc.Crc32Checksum,
    "crc32c": bc.CrtCrc32cChecksum,
    "crc64nvme": bc.CrtCrc64NvmeChecksum,
    "sha1": bc.Sha1Checksum,
    "sha256": bc.Sha256Checksum,
}


def oracle_b64(algorithm: str, data: bytes) -> str:
    checksum = ORACLE[algorithm]()
    checksum.update(data)
    value: str = checksum.b64digest()
    return value


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# Published vectors: the CRC check values of "123456789" (CRC catalogue: CRC-32/ISO-HDLC
# cbf43926, CRC-32/ISCSI e3069283, CRC-64/NVME ae8b14860a799888) and FIPS 180 "abc".
@pytest.mark.parametrize(
    ("algorithm", "data", "hex_digest"),
    [
        ("crc32", b"123456789", "cbf43926"),
        ("crc32c", b"123456789", "e3069283"),
        ("crc64nvme", b"123456789", "ae8b14860a799888"),
        ("sha1", b"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        ("sha256", b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("crc32", b"", "00000000"),
        ("crc64nvme", b"", "0000000000000000"),
    ],
)
def test_known_vectors(algorithm: str, data: bytes, hex_digest: str) -> None:
    digests = Digests({algorithm})
    digests.update(data)
    assert digests.digest(algorithm).hex() == hex_digest
    assert digests.b64(algorithm) == b64(bytes.fromhex(hex_digest)) == oracle_b64(algorithm, data)


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_one_pass_matches_botocore_for_any_chunking(chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    digests = Digests(ALGORITHMS)
    for i, chunk in enumerate(chunks):
        # Bodies arrive as bytes, bytearray or views into a larger buffer.
        digests.update(
            chunk if i % 3 == 0 else bytearray(chunk) if i % 3 == 1 else memoryview(chunk)
        )
    assert digests.size == len(data)
    assert digests.md5_hex() == hashlib.md5(data).hexdigest()
    assert digests.md5_digest() == hashlib.md5(data).digest()
    for algorithm in ALGORITHMS:
        assert digests.b64(algorithm) == oracle_b64(algorithm, data)
    assert digests.checksums() == {name: oracle_b64(name, data) for name in ALGORITHMS}


def test_only_wanted_digests_are_computed() -> None:
    digests = Digests({"crc32"})
    digests.update(b"x")
    assert digests.want == {"crc32"}
    assert set(digests.checksums()) == {"crc32"}
    with pytest.raises(ValueError, match="sha256"):
        digests.digest("sha256")
    with pytest.raises(ValueError, match="crc32c"):
        digests.crc("crc32c")


def test_unknown_algorithm_is_invalid_request() -> None:
    with pytest.raises(S3Error) as info:
        Digests({"md4"})
    assert info.value.code == "InvalidRequest"


def test_header_map_lowercases_and_joins() -> None:
    raw = [(b"Content-MD5", b"x"), (b"X-Amz-Meta-A", b"1"), (b"x-amz-meta-a", b"2")]
    assert header_map(raw) == {"content-md5": "x", "x-amz-meta-a": "1,2"}


class TestWanted:
    def test_from_header(self) -> None:
        assert wanted_algorithms({"x-amz-checksum-crc32": "AAAAAA=="}) == {"crc32"}

    def test_from_trailer_and_sdk_algorithm(self) -> None:
        headers = {
            "x-amz-trailer": "x-amz-checksum-crc64nvme",
            "x-amz-sdk-checksum-algorithm": "CRC64NVME",
        }
        assert wanted_algorithms(headers) == {"crc64nvme"}

    def test_hex_payload_hash_wants_sha256(self) -> None:
        headers = {"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()}
        assert wanted_algorithms(headers, extra=["crc32c"]) == {"sha256", "crc32c"}
        assert wanted_algorithms({"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}) == set()

    def test_non_value_headers_ignored(self) -> None:
        headers = {"x-amz-checksum-mode": "ENABLED", "x-amz-checksum-type": "FULL_OBJECT"}
        assert wanted_algorithms(headers) == set()

    @pytest.mark.parametrize(
        "headers",
        [
            {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-sha1": "x"},
            {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-trailer": "x-amz-checksum-crc32c"},
            {"x-amz-checksum-md4": "x"},
            {"x-amz-trailer": "x-amz-checksum-whatever"},
            {"x-amz-sdk-checksum-algorithm": "CRC32"},
            {"x-amz-sdk-checksum-algorithm": "SHA1", "x-amz-checksum-crc32": "AAAAAA=="},
            {"x-amz-sdk-checksum-algorithm": "nope"},
        ],
    )
    def test_bad_declarations(self, headers: dict[str, str]) -> None:
        with pytest.raises(S3Error) as info:
            wanted_algorithms(headers)
        assert info.value.code == "InvalidRequest"
        assert info.value.status == 400


def run(
    headers: dict[str, str], body: bytes, trailers: dict[str, str] | None = None, **kw: str
) -> None:
    digests = Digests.for_request(headers)
    digests.update(body)
    digests.verify(headers, trailers, **kw)


def code_of(
    headers: dict[str, str], body: bytes, trailers: dict[str, str] | None = None, **kw: str
) -> str:
    with pytest.raises(S3Error) as info:
        run(headers, body, trailers, **kw)
    return info.value.code


class TestVerify:
    body = b"hello world" * 100

    def test_content_md5(self) -> None:
        good = b64(hashlib.md5(self.body).digest())
        run({"content-md5": good}, self.body)
        assert (
            code_of({"content-md5": b64(hashlib.md5(b"other").digest())}, self.body) == "BadDigest"
        )

    @pytest.mark.parametrize(
        "value", ["", "not base64!", b64(b"short"), b64(b"x" * 17), "AAAA===="]
    )
    def test_malformed_content_md5(self, value: str) -> None:
        with pytest.raises(S3Error) as info:
            run({"content-md5": value}, self.body)
        assert info.value.code == "InvalidDigest"
        assert info.value.fields["Content-MD5"] == value

    @pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
    def test_checksum_header(self, algorithm: str) -> None:
        name = f"x-amz-checksum-{algorithm}"
        run({name: oracle_b64(algorithm, self.body)}, self.body)
        wrong = oracle_b64(algorithm, self.body + b"!")
        with pytest.raises(S3Error) as info:
            run({name: wrong}, self.body)
        assert info.value.code == "BadDigest"
        assert algorithm.upper() in info.value.message
        assert code_of({name: "!!!"}, self.body) == "InvalidRequest"
        # Right base64 but the wrong size for the algorithm.
        assert (
            code_of({name: b64(b"\0" * (ALGORITHMS[algorithm] + 1))}, self.body) == "InvalidRequest"
        )

    def test_trailer_checksum(self) -> None:
        headers = {"x-amz-trailer": "x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm": "CRC32"}
        good = {"x-amz-checksum-crc32": oracle_b64("crc32", self.body)}
        run(headers, self.body, good)
        bad = {"x-amz-checksum-crc32": oracle_b64("crc32", b"")}
        assert code_of(headers, self.body, bad) == "BadDigest"
        assert code_of(headers, self.body, {}) == "InvalidRequest"
        assert code_of(headers, self.body, None) == "InvalidRequest"

    def test_content_sha256_header(self) -> None:
        good = hashlib.sha256(self.body).hexdigest()
        run({"x-amz-content-sha256": good}, self.body)
        run({"x-amz-content-sha256": good.upper()}, self.body, content_sha256=good.upper())
        bad = hashlib.sha256(b"").hexdigest()
        with pytest.raises(S3Error) as info:
            run({"x-amz-content-sha256": bad}, self.body)
        assert info.value.code == "XAmzContentSHA256Mismatch"
        assert info.value.fields == {
            "ClientComputedContentSHA256": bad,
            "S3ComputedContentSHA256": good,
        }

    def test_all_at_once(self) -> None:
        headers = {
            "content-md5": b64(hashlib.md5(self.body).digest()),
            "x-amz-checksum-sha256": oracle_b64("sha256", self.body),
            "x-amz-content-sha256": hashlib.sha256(self.body).hexdigest(),
        }
        run(headers, self.body)

    def test_undeclared_digest_is_a_gateway_bug_not_a_client_error(self) -> None:
        digests = Digests()
        digests.update(self.body)
        with pytest.raises(ValueError, match="crc32"):
            digests.verify({"x-amz-checksum-crc32": oracle_b64("crc32", self.body)})


def test_digest_from_b64() -> None:
    assert digest_from_b64("crc32", "AAAAAQ==") == b"\0\0\0\1"
    with pytest.raises(S3Error):
        digest_from_b64("crc64nvme", "AAAAAQ==")


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme"])
def test_full_object_crc_equals_crc_of_whole(algorithm: str) -> None:
    parts = [os.urandom(n) for n in (1000, 0, 4097, 1)]
    pieces = []
    for part in parts:
        digests = Digests({algorithm})
        digests.update(part)
        pieces.append((digests.crc(algorithm), len(part)))
    whole = b"".join(parts)
    assert full_object_crc(algorithm, pieces) == oracle_b64(algorithm, whole)
    assert full_object_crc(algorithm, []) == oracle_b64(algorithm, b"")
    a, b = parts[0], parts[2]
    da, db, dab = Digests({algorithm}), Digests({algorithm}), Digests({algorithm})
    da.update(a)
    db.update(b)
    dab.update(a + b)
    assert combine_crc(algorithm, da.crc(algorithm), db.crc(algorithm), len(b)) == dab.crc(
        algorithm
    )


def test_combine_rejects_non_crc() -> None:
    with pytest.raises(ValueError, match="sha1"):
        combine_crc("sha1", 0, 0, 0)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_composite_checksum(algorithm: str) -> None:
    # S3's composite form: the checksum of the parts' binary checksums, concatenated, then -N.
    parts = [b"a" * 10, b"b" * 20, b"c"]
    binaries = [base64.b64decode(oracle_b64(algorithm, p)) for p in parts]
    expected = oracle_b64(algorithm, b"".join(binaries)) + "-3"
    assert composite_checksum(algorithm, binaries) == expected
