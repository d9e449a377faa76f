"""s3cmd (the Debian package) against the real gateway, with SigV4 and with SigV2.

The configuration is the minimum a user writes for a local endpoint: keys, ``host_base`` and
``host_bucket`` set to the endpoint (path-style), no TLS. Contents are compared byte for byte.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from typing import TYPE_CHECKING

import boto3  # type: ignore[import-untyped]
import pytest

from .clients import CommandLine, MiB, blob, client_env, running_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from .conftest import GatewayProcess

S3CMD = shutil.which("s3cmd") or "/usr/bin/s3cmd"

pytestmark = pytest.mark.skipif(not os.path.exists(S3CMD), reason="s3cmd is not installed")


class S3cmd(CommandLine):
    def __init__(self, gw: GatewayProcess, home: Path, *, v2: bool) -> None:
        self.bucket = "s3://s3cmd-v2" if v2 else "s3://s3cmd-v4"
        host = gw.endpoint.removeprefix("http://")
        config = home / ("s3cfg-v2" if v2 else "s3cfg")
        config.write_text(
            "[default]\n"
            f"access_key = {gw.access_key}\n"
            f"secret_key = {gw.secret_key}\n"
            f"host_base = {host}\n"
            f"host_bucket = {host}\n"
            "use_https = False\n"
            f"signature_v2 = {v2}\n"
            "bucket_location = us-east-1\n"
        )
        super().__init__([S3CMD, "-c", str(config), "--no-progress"], client_env(home))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(tmp_path_factory.mktemp("s3cmd")) as gw:
        yield gw


@pytest.fixture(scope="module", params=["v4", "v2"])
def s3cmd(
    request: pytest.FixtureRequest,
    gateway: GatewayProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> S3cmd:
    tool = S3cmd(gateway, tmp_path_factory.mktemp("s3cmd-home"), v2=request.param == "v2")
    tool.run("mb", tool.bucket)
    return tool


def test_put_get_info_and_resume(s3cmd: S3cmd, tmp_path: Path) -> None:
    b = s3cmd.bucket
    data = blob(300_000, 1)
    source = tmp_path / "obj.bin"
    source.write_bytes(data)
    s3cmd.run("put", str(source), f"{b}/dir/obj.bin")
    back = tmp_path / "back.bin"
    s3cmd.run("get", str(source), f"{b}/dir/obj.bin", str(back)) if False else s3cmd.run(
        "get", f"{b}/dir/obj.bin", str(back)
    )
    assert back.read_bytes() == data
    info = s3cmd.run("info", f"{b}/dir/obj.bin").stdout
    assert "300000" in info
    # A resumed download asks for the rest with a Range header.
    partial = tmp_path / "partial.bin"
    partial.write_bytes(data[:123_456])
    s3cmd.run("get", "--continue", f"{b}/dir/obj.bin", str(partial))
    assert partial.read_bytes() == data


def test_multipart_put(s3cmd: S3cmd, gateway: GatewayProcess, tmp_path: Path) -> None:
    b = s3cmd.bucket
    data = blob(11 * MiB + 5, 2)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    s3cmd.run("put", "--multipart-chunk-size-mb=5", str(source), f"{b}/big.bin")
    head = boto3.client(
        "s3",
        endpoint_url=gateway.endpoint,
        aws_access_key_id=gateway.access_key,
        aws_secret_access_key=gateway.secret_key,
        region_name="us-east-1",
    ).head_object(Bucket=b.removeprefix("s3://"), Key="big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # three 5 MiB-bounded parts
    back = tmp_path / "big-back.bin"
    s3cmd.run("get", f"{b}/big.bin", str(back))
    assert back.read_bytes() == data


def test_sync_ls_cp_del(s3cmd: S3cmd, tmp_path: Path) -> None:
    b = s3cmd.bucket
    tree = tmp_path / "tree"
    files = {f"d{i % 2}/f{i}": blob(50 + i, i) for i in range(6)}
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    s3cmd.run("sync", f"{tree}/", f"{b}/sync/")
    listing = s3cmd.run("ls", "--recursive", f"{b}/sync/").stdout
    assert sorted(line.split()[-1] for line in listing.splitlines()) == sorted(
        f"{b}/sync/{n}" for n in files
    )
    top = s3cmd.run("ls", f"{b}/sync/").stdout
    assert sorted(line.split()[-1] for line in top.splitlines()) == [
        f"{b}/sync/d0/",
        f"{b}/sync/d1/",
    ]
    s3cmd.run("cp", f"{b}/sync/d0/f0", f"{b}/copied")
    back = tmp_path / "copied"
    s3cmd.run("get", f"{b}/copied", str(back))
    assert back.read_bytes() == files["d0/f0"]
    s3cmd.run("del", "--recursive", "--force", f"{b}/sync/d1/")
    remaining = s3cmd.run("ls", "--recursive", f"{b}/sync/").stdout
    assert len(remaining.splitlines()) == 3
    down = tmp_path / "down"
    s3cmd.run("sync", f"{b}/sync/", f"{down}/")
    for name, data in files.items():
        if name.startswith("d0/"):
            assert (down / name).read_bytes() == data


def test_signurl(s3cmd: S3cmd, tmp_path: Path) -> None:
    b = s3cmd.bucket
    source = tmp_path / "signed"
    source.write_bytes(b"signed content")
    s3cmd.run("put", str(source), f"{b}/signed")
    url = s3cmd.run("signurl", f"{b}/signed", "+300").stdout.strip()
    assert "Signature=" in url  # SigV2 query authentication, s3cmd's presign
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read() == b"signed content"
