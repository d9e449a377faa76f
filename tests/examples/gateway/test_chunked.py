from __future__ import annotations

import hashlib
import hmac
import http.client
import io
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.auth import S3SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from botocore.httpchecksum import (  # type: ignore[import-untyped]
    AwsChunkedWrapper,
    Crc32Checksum,
    CrtCrc32cChecksum,
    Sha256Checksum,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.object_store_gateway.auth import (
    AuthContext,
    authenticate,
    chunk_string_to_sign,
    signing_key,
    trailer_string_to_sign,
)
from examples.object_store_gateway.checksums import Digests
from examples.object_store_gateway.chunked import (
    MAX_LINE,
    AwsChunkedDecoder,
    PassThroughDecoder,
    make_body_decoder,
)
from examples.object_store_gateway.errors import S3Error

from .test_auth import TestRealBoto3Requests

if TYPE_CHECKING:
    from .conftest import GatewayProcess

# The published example of S3's "Transferring Payload in Multiple Chunks": 66,560 bytes of "a" in
# a 64 KiB chunk, a 1 KiB chunk and the final empty one, with AWS's documented signatures.
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EXAMPLE_DATE = "20130524T000000Z"
EXAMPLE_SCOPE = "20130524/us-east-1/s3/aws4_request"
EXAMPLE_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
EXAMPLE_CHUNKS = [
    (65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
    (1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
    (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
]
# aws-crt's trailing-header vector on the same chain: trailers first/second/third.
EXAMPLE_TRAILER_SIGNATURE = "df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c"
EXAMPLE_KEY = signing_key(EXAMPLE_SECRET, "20130524", "us-east-1")


def example_body(*, corrupt: bool = False) -> bytes:
    out = b""
    for size, signature in EXAMPLE_CHUNKS:
        data = bytearray(b"a" * size)
        if corrupt and size == 1024:
            data[10] = ord("b")
        out += f"{size:x};chunk-signature={signature}\r\n".encode() + bytes(data) + b"\r\n"
    return out


def example_decoder(**kw: object) -> AwsChunkedDecoder:
    args: dict[str, object] = {
        "signed": True,
        "signing_key": EXAMPLE_KEY,
        "seed_signature": EXAMPLE_SEED,
        "amz_date": EXAMPLE_DATE,
        "scope": EXAMPLE_SCOPE,
        "decoded_length": 66560,
    }
    args.update(kw)
    return AwsChunkedDecoder(**args)  # type: ignore[arg-type]


def signed_body(
    chunks: list[bytes],
    *,
    key: bytes = EXAMPLE_KEY,
    seed: str = EXAMPLE_SEED,
    trailers: list[tuple[str, str]] | None = None,
) -> bytes:
    return encode_signed(chunks, key, seed, EXAMPLE_DATE, EXAMPLE_SCOPE, trailers)


def encode_signed(
    chunks: list[bytes],
    key: bytes,
    seed: str,
    amz_date: str,
    scope: str,
    trailers: list[tuple[str, str]] | None,
) -> bytes:
    """Encode by the spec (independently of the decoder): chained chunk and trailer signatures."""
    previous = seed
    out = b""
    for data in [*chunks, b""]:
        sts = chunk_string_to_sign(amz_date, scope, previous, hashlib.sha256(data).hexdigest())
        previous = hmac.digest(key, sts, "sha256").hex()
        out += f"{len(data):x};chunk-signature={previous}\r\n".encode()
        if data:
            out += data + b"\r\n"
    if trailers is None:
        return out + b"\r\n"
    canonical = b"".join(f"{n}:{v}\n".encode() for n, v in trailers)
    sts = trailer_string_to_sign(amz_date, scope, previous, hashlib.sha256(canonical).hexdigest())
    signature = hmac.digest(key, sts, "sha256").hex()
    out += b"".join(f"{n}:{v}\r\n".encode() for n, v in trailers)
    return out + f"x-amz-trailer-signature:{signature}\r\n\r\n".encode()


def unsigned_body(
    data: bytes,
    chunk_size: int,
    checksum_cls: type = Crc32Checksum,
    name: str = "x-amz-checksum-crc32",
) -> bytes:
    """botocore's own aws-chunked encoder, as boto3 uses it over https."""
    wrapper = AwsChunkedWrapper(
        io.BytesIO(data), checksum_cls=checksum_cls, checksum_name=name, chunk_size=chunk_size
    )
    out: bytes = wrapper.read()
    return out


def decode(
    decoder: AwsChunkedDecoder | PassThroughDecoder, body: bytes, cuts: list[int]
) -> tuple[bytes, dict[str, str]]:
    payload = bytearray()
    points = sorted({c % (len(body) + 1) for c in cuts})
    start = 0
    for point in [*points, len(body)]:
        for piece in decoder.feed(body[start:point]):
            payload += piece
        start = point
    return bytes(payload), decoder.finish()


class TestPublishedExample:
    def test_seed_signature_verifies(self) -> None:
        headers = [
            (b"host", b"s3.amazonaws.com"),
            (b"x-amz-date", EXAMPLE_DATE.encode()),
            (b"x-amz-storage-class", b"REDUCED_REDUNDANCY"),
            (
                b"authorization",
                (
                    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
                    "aws4_request,"
                    "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                    f"x-amz-decoded-content-length;x-amz-storage-class,Signature={EXAMPLE_SEED}"
                ).encode(),
            ),
            (b"x-amz-content-sha256", b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
            (b"content-encoding", b"aws-chunked"),
            (b"x-amz-decoded-content-length", b"66560"),
            (b"content-length", b"66824"),
        ]
        ctx = authenticate(
            "PUT",
            b"/examplebucket/chunkObject.txt",
            b"",
            headers,
            {"AKIAIOSFODNN7EXAMPLE": EXAMPLE_SECRET}.get,
            datetime(2013, 5, 24, 0, 5, tzinfo=UTC),
        )
        assert ctx.payload == "streaming-signed"
        assert (ctx.seed_signature, ctx.scope, ctx.amz_date) == (
            EXAMPLE_SEED,
            EXAMPLE_SCOPE,
            EXAMPLE_DATE,
        )
        assert ctx.signing_key == EXAMPLE_KEY
        decoder = make_body_decoder(ctx, headers)
        body = example_body()
        assert len(body) == 66824
        payload, trailers = decode(decoder, body, [])
        assert payload == b"a" * 66560
        assert trailers == {}

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.integers(0, 66824), max_size=12))
    def test_any_split(self, cuts: list[int]) -> None:
        payload, _ = decode(example_decoder(), example_body(), cuts)
        assert payload == b"a" * 66560

    def test_byte_at_a_time(self) -> None:
        decoder = example_decoder()
        body = example_body()
        out = bytearray()
        for i in range(0, len(body), 1):
            for piece in decoder.feed(body[i : i + 1]):
                out += piece
        assert bytes(out) == b"a" * 66560
        assert decoder.finish() == {}

    def test_corrupt_data_is_caught(self) -> None:
        decoder = example_decoder()
        with pytest.raises(S3Error) as info:
            decode(decoder, example_body(corrupt=True), [])
        assert info.value.code == "SignatureDoesNotMatch"
        assert info.value.status == 403

    def test_wrong_seed_or_key(self) -> None:
        for decoder in (
            example_decoder(seed_signature="0" * 64),
            example_decoder(signing_key=b"k" * 32),
        ):
            with pytest.raises(S3Error) as info:
                decode(decoder, example_body(), [])
            assert info.value.code == "SignatureDoesNotMatch"

    def test_reordered_chunks(self) -> None:
        a = signed_body([b"x" * 100, b"y" * 50])
        first = a.index(b"\r\n", a.index(b"x" * 100)) + 2
        second = a.index(b"0;chunk")
        swapped = a[first:second] + a[:first] + a[second:]
        with pytest.raises(S3Error) as info:
            decode(example_decoder(decoded_length=None), swapped, [])
        assert info.value.code == "SignatureDoesNotMatch"

    def test_trailer_signature_vector(self) -> None:
        trailers = [("first", "1st"), ("second", "2nd"), ("third", "3rd")]
        body = signed_body([b"a" * 65536, b"a" * 1024], trailers=trailers)
        assert f"x-amz-trailer-signature:{EXAMPLE_TRAILER_SIGNATURE}".encode() in body
        payload, got = decode(example_decoder(trailer_signed=True), body, [70000])
        assert payload == b"a" * 66560
        assert got == {"first": "1st", "second": "2nd", "third": "3rd"}

    @pytest.mark.parametrize("where", range(0, 66824, 997))
    def test_truncated(self, where: int) -> None:
        decoder = example_decoder()
        decoder.feed(example_body()[:where])
        with pytest.raises(S3Error) as info:
            decoder.finish()
        assert info.value.code == "IncompleteBody"
        assert info.value.status == 400

    def test_decoded_length_mismatch(self) -> None:
        with pytest.raises(S3Error) as info:
            decode(example_decoder(decoded_length=66561), example_body(), [])
        assert info.value.code == "IncompleteBody"
        with pytest.raises(S3Error) as info:
            decode(example_decoder(decoded_length=1000), example_body(), [])
        assert info.value.code == "IncompleteBody"


class TestSignedTrailer:
    @settings(max_examples=40, deadline=None)
    @given(
        st.lists(st.binary(min_size=1, max_size=3000), max_size=5),
        st.lists(st.integers(0, 20000), max_size=8),
    )
    def test_round_trip(self, chunks: list[bytes], cuts: list[int]) -> None:
        data = b"".join(chunks)
        checksum = Crc32Checksum()
        checksum.update(data)
        trailers = [("x-amz-checksum-crc32", checksum.b64digest())]
        body = signed_body(chunks, trailers=trailers)
        decoder = example_decoder(trailer_signed=True, decoded_length=len(data))
        payload, got = decode(decoder, body, cuts)
        assert payload == data
        assert got == {"x-amz-checksum-crc32": checksum.b64digest()}
        headers = {"x-amz-trailer": "x-amz-checksum-crc32"}
        digests = Digests.for_request(headers)
        digests.update(payload)
        digests.verify(headers, got)

    def test_tampered_trailer(self) -> None:
        body = signed_body([b"hello"], trailers=[("x-amz-checksum-crc32", "AAAAAA==")])
        tampered = body.replace(b"AAAAAA==", b"AAAAAQ==")
        with pytest.raises(S3Error) as info:
            decode(example_decoder(trailer_signed=True, decoded_length=5), tampered, [])
        assert info.value.code == "SignatureDoesNotMatch"

    def test_missing_trailer_signature(self) -> None:
        body = signed_body([b"hello"], trailers=[("x-amz-checksum-crc32", "AAAAAA==")])
        cut = body[: body.index(b"x-amz-trailer-signature")] + b"\r\n"
        with pytest.raises(S3Error) as info:
            decode(example_decoder(trailer_signed=True, decoded_length=5), cut, [])
        assert info.value.code == "SignatureDoesNotMatch"
        without_end = body[: body.index(b"x-amz-trailer-signature")]
        with pytest.raises(S3Error) as info:
            decode(example_decoder(trailer_signed=True, decoded_length=5), without_end, [])
        assert info.value.code == "SignatureDoesNotMatch"

    def test_trailer_after_signature(self) -> None:
        body = signed_body([b"hello"], trailers=[("x-amz-checksum-crc32", "AAAAAA==")])
        body = body[:-2] + b"x-late:1\r\n\r\n"
        with pytest.raises(S3Error) as info:
            decode(example_decoder(trailer_signed=True, decoded_length=5), body, [])
        assert info.value.code == "InvalidRequest"


class TestUnsignedTrailer:
    @settings(max_examples=60, deadline=None)
    @given(
        st.binary(max_size=5000),
        st.sampled_from([1, 7, 1024, 4096, 1 << 20]),
        st.lists(st.integers(0, 20000), max_size=10),
    )
    def test_botocore_encoder_round_trip(
        self, data: bytes, chunk_size: int, cuts: list[int]
    ) -> None:
        body = unsigned_body(data, chunk_size)
        decoder = AwsChunkedDecoder(signed=False, decoded_length=len(data))
        payload, trailers = decode(decoder, body, cuts)
        assert payload == data  # the framing never leaks into the payload
        checksum = Crc32Checksum()
        checksum.update(data)
        assert trailers == {"x-amz-checksum-crc32": checksum.b64digest()}

    @pytest.mark.parametrize(
        ("cls", "name"),
        [(CrtCrc32cChecksum, "x-amz-checksum-crc32c"), (Sha256Checksum, "x-amz-checksum-sha256")],
    )
    def test_trailer_checksum_verified(self, cls: type, name: str) -> None:
        data = b"payload " * 1000
        body = unsigned_body(data, 1000, cls, name)
        headers = {"x-amz-trailer": name, "x-amz-decoded-content-length": str(len(data))}
        ctx = AuthContext(access_key="a", payload="streaming-unsigned-trailer")
        decoder = make_body_decoder(ctx, headers)
        digests = Digests.for_request(headers)
        for piece in decoder.feed(body):
            digests.update(piece)
        trailers = decoder.finish()
        digests.verify(headers, trailers)
        # The same trailer over different bytes is a BadDigest.
        other = unsigned_body(b"X" + data[1:], 1000, cls, name)
        value = other.rsplit(b":", 1)[1].split(b"\r\n")[0]
        wrong = body.rsplit(b":", 1)[0] + b":" + value + b"\r\n\r\n"
        decoder = make_body_decoder(ctx, headers)
        digests = Digests.for_request(headers)
        for piece in decoder.feed(wrong):
            digests.update(piece)
        with pytest.raises(S3Error) as info:
            digests.verify(headers, decoder.finish())
        assert info.value.code == "BadDigest"

    def test_boto3_https_put_body(self) -> None:
        # The exact body boto3 streams to an https endpoint, decoded and its CRC32 checked.
        data = bytes(range(256)) * 40
        request, body = TestRealBoto3Requests().capture(
            "https://127.0.0.1:9443", "put_object", Bucket="b", Key="k", Body=data
        )
        headers = request[3]
        raw = body.read()
        ctx = AuthContext(access_key="a", payload="streaming-unsigned-trailer")
        decoder = make_body_decoder(ctx, headers)
        payload, trailers = decode(decoder, raw, [5, 100, 4000])
        assert payload == data
        mapping = {k.decode(): v.decode() for k, v in headers}
        digests = Digests.for_request(mapping)
        digests.update(payload)
        digests.verify(mapping, trailers)

    def test_missing_final_crlf_is_tolerated(self) -> None:
        body = unsigned_body(b"abc", 1024)
        assert body.endswith(b"\r\n\r\n")
        payload, trailers = decode(AwsChunkedDecoder(signed=False, decoded_length=3), body[:-2], [])
        assert payload == b"abc"
        assert "x-amz-checksum-crc32" in trailers

    @pytest.mark.parametrize(
        "body",
        [
            b"zz\r\nabc\r\n0\r\n\r\n",  # not hex
            b"\r\n",  # empty size
            b"3\r\nabcX\r\n0\r\n\r\n",  # data not followed by CRLF
            b"3\nabc\r\n0\r\n\r\n",  # bare LF
            b"3\r\nabc\r\n0\r\n\r\nextra",  # data after the end
            b"3\r\nabc\r\n0\r\nno-colon\r\n\r\n",  # bad trailer
            b"3\r\nabc\r\n0\r\nx-amz-trailer-signature:ab\r\n\r\n",  # signature in unsigned mode
            b"11111111111111111\r\n",  # size too long
            b"1" * (MAX_LINE + 1),  # header line too long
        ],
    )
    def test_malformed(self, body: bytes) -> None:
        with pytest.raises(S3Error) as info:
            decode(AwsChunkedDecoder(signed=False), body, [])
        assert info.value.code == "InvalidRequest"
        assert info.value.status == 400

    def test_too_many_trailers(self) -> None:
        body = b"0\r\n" + b"".join(f"x-t{i}:v\r\n".encode() for i in range(40)) + b"\r\n"
        with pytest.raises(S3Error) as info:
            decode(AwsChunkedDecoder(signed=False), body, [])
        assert info.value.code == "InvalidRequest"

    def test_signed_mode_needs_signatures(self) -> None:
        with pytest.raises(S3Error) as info:
            decode(example_decoder(decoded_length=None), b"3\r\nabc\r\n0\r\n\r\n", [])
        assert info.value.code == "InvalidRequest"

    def test_signed_mode_needs_key(self) -> None:
        with pytest.raises(ValueError, match="key"):
            AwsChunkedDecoder(signed=True)


class TestPassThrough:
    def test_plain_body(self) -> None:
        ctx = AuthContext(access_key="a", payload="signed", content_sha256="0" * 64)
        decoder = make_body_decoder(ctx, [(b"content-length", b"6")])
        assert isinstance(decoder, PassThroughDecoder)
        assert decode(decoder, b"abcdef", [2, 3]) == (b"abcdef", {})
        assert decoder.feed(b"") == []
        view = decoder.feed(bytearray(b""))
        assert view == []

    def test_short_and_long_bodies(self) -> None:
        short = PassThroughDecoder(10)
        short.feed(b"abc")
        with pytest.raises(S3Error) as info:
            short.finish()
        assert info.value.code == "IncompleteBody"
        long = PassThroughDecoder(2)
        with pytest.raises(S3Error) as info:
            long.feed(b"abc")
        assert info.value.code == "IncompleteBody"
        unbounded = PassThroughDecoder(None)
        assert [bytes(p) for p in unbounded.feed(memoryview(b"xy"))] == [b"xy"]
        assert unbounded.finish() == {}

    @pytest.mark.parametrize("value", ["-1", "abc", "1e3", "١٢"])
    def test_bad_lengths(self, value: str) -> None:
        ctx = AuthContext(access_key="a", payload="unsigned")
        with pytest.raises(S3Error) as info:
            make_body_decoder(ctx, {"content-length": value})
        assert info.value.code == "InvalidArgument"
        stream = AuthContext(access_key="a", payload="streaming-unsigned-trailer")
        with pytest.raises(S3Error):
            make_body_decoder(stream, {"x-amz-decoded-content-length": value})

    def test_mode_from_payload_not_content_encoding(self) -> None:
        ctx = AuthContext(access_key="a", payload="streaming-unsigned-trailer")
        assert isinstance(make_body_decoder(ctx, {}), AwsChunkedDecoder)
        plain = AuthContext(access_key="a", payload="unsigned")
        assert isinstance(
            make_body_decoder(plain, {"content-encoding": "aws-chunked"}), PassThroughDecoder
        )


class TestThroughTheGateway:
    """Signed streaming uploads (what the Java and Go SDKs send) against the real server."""

    @staticmethod
    def streaming_put(
        gw: GatewayProcess,
        key: str,
        chunks: list[bytes],
        *,
        trailer: bool,
        tamper: str | None = None,
    ) -> tuple[int, bytes]:
        data = b"".join(chunks)
        mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
        crc = Crc32Checksum()
        crc.update(data)
        headers = {
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(data)),
        }
        if trailer:
            headers["x-amz-trailer"] = "x-amz-checksum-crc32"
        request = AWSRequest(method="PUT", url=f"{gw.endpoint}/stream/{key}", headers=headers)
        signer = S3SigV4Auth(Credentials(gw.access_key, gw.secret_key), "s3", "us-east-1")
        signer.payload = lambda _request: mode
        signer.add_auth(request)
        amz_date = request.headers["X-Amz-Date"]
        seed = request.headers["Authorization"].rsplit("Signature=", 1)[1]
        key_bytes = signing_key(gw.secret_key, amz_date[:8], "us-east-1")
        scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
        body = encode_signed(
            chunks,
            key_bytes,
            seed,
            amz_date,
            scope,
            [("x-amz-checksum-crc32", crc.b64digest())] if trailer else None,
        )
        if tamper == "data":
            body = body.replace(chunks[0][:8], bytes(b ^ 1 for b in chunks[0][:8]), 1)
        elif tamper == "truncate":
            body = body[: len(body) // 2]
        elif tamper == "checksum":
            other = Crc32Checksum()
            other.update(data + b"!")
            body = encode_signed(
                chunks,
                key_bytes,
                seed,
                amz_date,
                scope,
                [("x-amz-checksum-crc32", other.b64digest())],
            )
        out_headers = dict(request.headers.items())
        out_headers["Content-Length"] = str(len(body))
        parts = urlsplit(gw.endpoint)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        try:
            if tamper == "truncate":
                # Declare the full length, send half, then close: the server sees a cut-off body.
                out_headers["Content-Length"] = str(len(body) * 2)
                conn.putrequest("PUT", f"/stream/{key}", skip_accept_encoding=True)
                for name, value in out_headers.items():
                    conn.putheader(name, value)
                conn.endheaders()
                conn.send(body)
                conn.sock.shutdown(socket.SHUT_WR)
                try:
                    response = conn.getresponse()
                    return response.status, response.read()
                except (ConnectionError, http.client.HTTPException):
                    return 0, b""
            conn.request("PUT", f"/stream/{key}", body=body, headers=out_headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def test_signed_streaming_uploads(self, gateway_server: GatewayProcess) -> None:
        gw = gateway_server
        s3 = boto3.client(
            "s3",
            endpoint_url=gw.endpoint,
            aws_access_key_id=gw.access_key,
            aws_secret_access_key=gw.secret_key,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="stream")
        chunks = [bytes(range(256)) * 256, b"x" * 8192, b"tail"]
        data = b"".join(chunks)
        for trailer in (False, True):
            status, body = self.streaming_put(gw, f"ok-{trailer}", chunks, trailer=trailer)
            assert status == 200, body
            assert s3.get_object(Bucket="stream", Key=f"ok-{trailer}")["Body"].read() == data
        for tamper, code in [("data", b"SignatureDoesNotMatch"), ("checksum", b"BadDigest")]:
            status, body = self.streaming_put(
                gw, f"bad-{tamper}", chunks, trailer=True, tamper=tamper
            )
            assert status in (400, 403), body
            assert code in body
        status, _ = self.streaming_put(gw, "bad-truncate", chunks, trailer=False, tamper="truncate")
        assert status in (0, 400)
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket="stream").get("Contents", [])]
        assert listed == ["ok-False", "ok-True"]  # nothing partial or unverified was stored
