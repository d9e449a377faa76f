"""boto3 with its default settings against the real gateway, over http and over https.

Over http boto3 signs the payload and sends ``x-amz-checksum-crc32``; over https it streams
``aws-chunked`` bodies with a CRC32 trailer (``STREAMING-UNSIGNED-PAYLOAD-TRAILER``). Both paths
run the same scenario; every download is compared byte for byte with what was uploaded.
"""

from __future__ import annotations

import gc
import hashlib
import random
import ssl
import urllib.request
from typing import TYPE_CHECKING, Any

import boto3  # type: ignore[import-untyped]
import pytest
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from .conftest import GatewayProcess, start_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

MiB = 1 << 20
TRANSFER = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


# Every client made against the module's gateway, closed before it stops: a pooled idle TLS
# connection would otherwise hold the server's graceful shutdown until its TLS close times out.
_clients: list[Any] = []


@pytest.fixture(scope="module", params=["http", "https"])
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    tls = request.param == "https"
    gw = start_gateway(tmp_path_factory.mktemp(f"boto3-{request.param}"), tls=tls)
    try:
        yield gw
    finally:
        while _clients:
            _clients.pop().close()
        gc.collect()  # connections an error response left checked out of the pool
        assert gw.stop() == 0


def client(
    gw: GatewayProcess, *, secret: str | None = None, access: str | None = None, **config: Any
) -> Any:
    """A boto3 client with default settings (only endpoint, credentials, CA file)."""
    made = boto3.client(
        "s3",
        endpoint_url=gw.endpoint,
        aws_access_key_id=access or gw.access_key,
        aws_secret_access_key=secret or gw.secret_key,
        region_name="us-east-1",
        verify=gw.ca_file or True,
        config=Config(**config) if config else None,
    )
    _clients.append(made)
    return made


@pytest.fixture(scope="module")
def s3(gateway: GatewayProcess) -> Any:
    s3 = client(gateway)
    s3.create_bucket(Bucket="bkt")
    return s3


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    code: str = excinfo.value.response["Error"]["Code"]
    return code


def fetch(
    gw: GatewayProcess,
    url: str,
    method: str = "GET",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=gw.ca_file) if gw.ca_file else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_put_get_head_byte_for_byte(s3: Any) -> None:
    for i, size in enumerate([0, 1, 4096, 100_000, 1 * MiB + 3]):
        data = blob(size, i)
        put = s3.put_object(
            Bucket="bkt", Key=f"single/{size}", Body=data, ContentType="application/x-test"
        )
        assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        got = s3.get_object(Bucket="bkt", Key=f"single/{size}")
        assert got["Body"].read() == data
        assert got["ContentLength"] == size
        assert got["ContentType"] == "application/x-test"
        head = s3.head_object(Bucket="bkt", Key=f"single/{size}")
        assert head["ContentLength"] == size
        assert head["ETag"] == put["ETag"]


def test_metadata_and_odd_keys(s3: Any) -> None:
    for key in ["a b/c+d", "ü/漢字.txt", "x%2Fy", "tilde~!$&'()*,;=:@", "trailing/"]:
        s3.put_object(Bucket="bkt", Key=key, Body=key.encode(), Metadata={"origin": "test"})
        got = s3.get_object(Bucket="bkt", Key=key)
        assert got["Body"].read() == key.encode()
        assert got["Metadata"] == {"origin": "test"}


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_flexible_checksums(s3: Any, algorithm: str) -> None:
    data = blob(70_000, 7)
    put = s3.put_object(
        Bucket="bkt", Key=f"sum/{algorithm}", Body=data, ChecksumAlgorithm=algorithm
    )
    sent = put[f"Checksum{algorithm}"]
    got = s3.get_object(Bucket="bkt", Key=f"sum/{algorithm}", ChecksumMode="ENABLED")
    assert got["Body"].read() == data  # botocore also validates the returned checksum
    assert got[f"Checksum{algorithm}"] == sent


def test_bad_content_md5_is_refused(gateway: GatewayProcess, s3: Any) -> None:
    # botocore retries a BadDigest four times with backoff (the body may have been damaged on the
    # way); one attempt shows the same answer without the wait.
    once = client(gateway, retries={"max_attempts": 1, "mode": "standard"})
    with pytest.raises(ClientError) as info:
        once.put_object(
            Bucket="bkt", Key="bad-md5", Body=b"hello", ContentMD5="XrY7u+Ae7tCTyyK7j1rNww=="
        )
    assert error_code(info) == "BadDigest"
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket="bkt", Key="bad-md5")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_ranged_gets(s3: Any) -> None:
    data = blob(10_000, 3)
    s3.put_object(Bucket="bkt", Key="ranged", Body=data)
    for header, expected in [
        ("bytes=0-0", data[:1]),
        ("bytes=100-199", data[100:200]),
        ("bytes=9990-", data[9990:]),
        ("bytes=-25", data[-25:]),
        ("bytes=5000-99999", data[5000:]),
    ]:
        got = s3.get_object(Bucket="bkt", Key="ranged", Range=header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["Body"].read() == expected
        assert got["ContentRange"].startswith("bytes ")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="bkt", Key="ranged", Range="bytes=20000-")
    assert error_code(info) == "InvalidRange"


def test_multipart_upload_and_download(s3: Any, tmp_path: Path) -> None:
    data = blob(11 * MiB + 12345, 11)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    s3.upload_file(str(source), "bkt", "multi/big.bin", Config=TRANSFER)
    head = s3.head_object(Bucket="bkt", Key="multi/big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")
    target = tmp_path / "back.bin"
    s3.download_file("bkt", "multi/big.bin", str(target), Config=TRANSFER)  # parallel ranged GETs
    assert target.read_bytes() == data
    # A range across the first part boundary.
    got = s3.get_object(
        Bucket="bkt", Key="multi/big.bin", Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}"
    )
    assert got["Body"].read() == data[5 * MiB - 10 : 5 * MiB + 10]


def test_low_level_multipart(s3: Any) -> None:
    parts = [blob(5 * MiB, 21), blob(5 * MiB, 22), blob(1000, 23)]
    upload = s3.create_multipart_upload(Bucket="bkt", Key="multi/manual")
    uid = upload["UploadId"]
    listed = s3.list_multipart_uploads(Bucket="bkt", Prefix="multi/")
    assert uid in [u["UploadId"] for u in listed.get("Uploads", [])]
    etags = []
    for number, part in enumerate(parts, 1):
        etags.append(
            s3.upload_part(
                Bucket="bkt", Key="multi/manual", UploadId=uid, PartNumber=number, Body=part
            )["ETag"]
        )
    assert [
        p["PartNumber"]
        for p in s3.list_parts(Bucket="bkt", Key="multi/manual", UploadId=uid)["Parts"]
    ] == [1, 2, 3]
    done = s3.complete_multipart_upload(
        Bucket="bkt",
        Key="multi/manual",
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    digest = hashlib.md5(b"".join(bytes.fromhex(e.strip('"')) for e in etags)).hexdigest()
    assert done["ETag"] == f'"{digest}-3"'
    assert s3.get_object(Bucket="bkt", Key="multi/manual")["Body"].read() == b"".join(parts)
    # Aborting another upload leaves nothing behind.
    other = s3.create_multipart_upload(Bucket="bkt", Key="multi/aborted")["UploadId"]
    s3.upload_part(Bucket="bkt", Key="multi/aborted", UploadId=other, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket="bkt", Key="multi/aborted", UploadId=other)
    with pytest.raises(ClientError) as info:
        s3.list_parts(Bucket="bkt", Key="multi/aborted", UploadId=other)
    assert error_code(info) == "NoSuchUpload"


def test_listing_prefixes_and_pagination(s3: Any) -> None:
    s3.create_bucket(Bucket="listing")
    keys = sorted(
        [f"dir/a/{i:02d}" for i in range(13)]
        + [f"dir/b/{i:02d}" for i in range(9)]
        + ["dir/top", "other"]
    )
    for key in keys:
        s3.put_object(Bucket="listing", Key=key, Body=b"x")
    seen = []
    pages = 0
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket="listing", Prefix="dir/", PaginationConfig={"PageSize": 5}
    ):
        pages += 1
        seen += [o["Key"] for o in page.get("Contents", [])]
    assert seen == [k for k in keys if k.startswith("dir/")]
    assert pages == 5  # 23 keys, 5 a page
    top = s3.list_objects_v2(Bucket="listing", Prefix="dir/", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["dir/a/", "dir/b/"]
    assert [o["Key"] for o in top["Contents"]] == ["dir/top"]
    after = s3.list_objects_v2(Bucket="listing", StartAfter="dir/b/07")
    assert [o["Key"] for o in after["Contents"]] == ["dir/b/08", "dir/top", "other"]
    v1 = []
    for page in s3.get_paginator("list_objects").paginate(
        Bucket="listing", PaginationConfig={"PageSize": 4}
    ):
        v1 += [o["Key"] for o in page.get("Contents", [])]
    assert v1 == keys
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert {"bkt", "listing"} <= set(buckets)


def test_copy_and_delete(s3: Any) -> None:
    data = blob(20_000, 5)
    s3.put_object(
        Bucket="bkt", Key="copy/src", Body=data, Metadata={"k": "v"}, ContentType="text/x-src"
    )
    s3.copy_object(Bucket="bkt", Key="copy/dst", CopySource={"Bucket": "bkt", "Key": "copy/src"})
    got = s3.get_object(Bucket="bkt", Key="copy/dst")
    assert got["Body"].read() == data
    assert got["Metadata"] == {"k": "v"}
    s3.copy_object(
        Bucket="bkt",
        Key="copy/dst",
        CopySource="bkt/copy/src",
        MetadataDirective="REPLACE",
        Metadata={"new": "1"},
        ContentType="text/x-new",
    )
    head = s3.head_object(Bucket="bkt", Key="copy/dst")
    assert (head["Metadata"], head["ContentType"]) == ({"new": "1"}, "text/x-new")
    s3.delete_object(Bucket="bkt", Key="copy/dst")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="bkt", Key="copy/dst")
    assert error_code(info) == "NoSuchKey"
    for i in range(3):
        s3.put_object(Bucket="bkt", Key=f"del/{i}", Body=b"x")
    result = s3.delete_objects(
        Bucket="bkt", Delete={"Objects": [{"Key": f"del/{i}"} for i in range(3)], "Quiet": True}
    )
    assert not result.get("Errors")
    assert s3.list_objects_v2(Bucket="bkt", Prefix="del/")["KeyCount"] == 0


def test_managed_multipart_copy(s3: Any, tmp_path: Path) -> None:
    data = blob(11 * MiB, 31)
    s3.put_object(Bucket="bkt", Key="copy/big", Body=data)
    s3.copy(
        {"Bucket": "bkt", "Key": "copy/big"}, "bkt", "copy/big-copy", Config=TRANSFER
    )  # UploadPartCopy
    assert s3.get_object(Bucket="bkt", Key="copy/big-copy")["Body"].read() == data


@pytest.mark.parametrize("signature_version", [None, "s3v4"])
def test_presigned_urls(gateway: GatewayProcess, s3: Any, signature_version: str | None) -> None:
    data = blob(5000, 41)
    s3.put_object(Bucket="bkt", Key="presigned/obj x", Body=data)
    signer = client(gateway, signature_version=signature_version) if signature_version else s3
    url = signer.generate_presigned_url(
        "get_object", Params={"Bucket": "bkt", "Key": "presigned/obj x"}, ExpiresIn=300
    )
    assert ("X-Amz-Signature=" in url) == (signature_version == "s3v4")
    assert fetch(gateway, url) == (200, data)
    tampered = url.replace("presigned/obj", "presigned/obk")
    status, body = fetch(gateway, tampered)
    assert status == 403
    assert b"SignatureDoesNotMatch" in body
    # SigV2 signs Content-Type: the uploader sends the type the URL was made for.
    put_url = signer.generate_presigned_url(
        "put_object",
        Params={"Bucket": "bkt", "Key": "presigned/up", "ContentType": "text/plain"},
        ExpiresIn=300,
    )
    assert fetch(gateway, put_url, "PUT", b"uploaded", {"Content-Type": "text/plain"})[0] == 200
    assert s3.get_object(Bucket="bkt", Key="presigned/up")["Body"].read() == b"uploaded"


def test_wrong_credentials(gateway: GatewayProcess, s3: Any) -> None:
    with pytest.raises(ClientError) as info:
        client(gateway, access="nobody").list_buckets()
    assert error_code(info) == "InvalidAccessKeyId"
    with pytest.raises(ClientError) as info:
        client(gateway, secret="wrong-secret").get_object(Bucket="bkt", Key="single/1")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as info:
        client(gateway, secret="wrong-secret").list_buckets()
    assert error_code(info) == "SignatureDoesNotMatch"
