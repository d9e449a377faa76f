"""rclone (the Debian package) against the real gateway, configured only through environment.

rclone reads ``AWS_CA_BUNDLE`` and fails when it names a bundle it cannot use, so every ``AWS_*``
variable is removed from its environment. rclone sends ``HEAD ...?versionId=null`` and lists with
small pages here (``--s3-list-chunk``) to exercise continuation; contents compared byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from typing import TYPE_CHECKING

import pytest

from .clients import CommandLine, MiB, blob, client_env, running_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from .conftest import GatewayProcess

RCLONE = shutil.which("rclone") or "/usr/bin/rclone"

pytestmark = pytest.mark.skipif(not os.path.exists(RCLONE), reason="rclone is not installed")


class Rclone(CommandLine):
    def __init__(self, gw: GatewayProcess, home: Path) -> None:
        config = home / "rclone.conf"
        config.write_text("")
        env = client_env(
            home,
            RCLONE_CONFIG=str(config),
            RCLONE_CONFIG_GW_TYPE="s3",
            RCLONE_CONFIG_GW_PROVIDER="Other",
            RCLONE_CONFIG_GW_ENDPOINT=gw.endpoint,
            RCLONE_CONFIG_GW_ACCESS_KEY_ID=gw.access_key,
            RCLONE_CONFIG_GW_SECRET_ACCESS_KEY=gw.secret_key,
            RCLONE_CONFIG_GW_REGION="us-east-1",
        )
        super().__init__([RCLONE, "--retries", "1", "--low-level-retries", "1"], env)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(tmp_path_factory.mktemp("rclone")) as gw:
        yield gw


@pytest.fixture(scope="module")
def rclone(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Rclone:
    tool = Rclone(gateway, tmp_path_factory.mktemp("rclone-home"))
    tool.run("mkdir", "gw:rclone")
    return tool


def test_copy_check_and_list(rclone: Rclone, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    files = {f"d{i % 3}/f{i:02d}": blob(10 + 37 * i, i) for i in range(14)}
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    rclone.run("copy", str(tree), "gw:rclone/tree")
    rclone.run("check", str(tree), "gw:rclone/tree")  # sizes and MD5s (ETags) match
    listed = rclone.run(
        "lsf", "-R", "--files-only", "--s3-list-chunk", "4", "gw:rclone/tree"
    ).stdout
    assert sorted(listed.split()) == sorted(files)
    entries = json.loads(rclone.run("lsjson", "gw:rclone/tree/d1").stdout)
    assert sorted(e["Name"] for e in entries) == sorted(
        n.split("/")[1] for n in files if n.startswith("d1/")
    )
    dirs = rclone.run("lsf", "--dirs-only", "gw:rclone/tree").stdout.split()
    assert dirs == ["d0/", "d1/", "d2/"]
    down = tmp_path / "down"
    rclone.run("copy", "gw:rclone/tree", str(down))
    for name, data in files.items():
        assert (down / name).read_bytes() == data


def test_ranged_cat_copyto_delete(rclone: Rclone, tmp_path: Path) -> None:
    data = blob(100_000, 5)
    source = tmp_path / "obj"
    source.write_bytes(data)
    rclone.run("copyto", str(source), "gw:rclone/obj")
    assert rclone.output("cat", "gw:rclone/obj") == data
    assert (
        rclone.output("cat", "--offset", "1000", "--count", "500", "gw:rclone/obj")
        == data[1000:1500]
    )
    assert rclone.output("cat", "--tail", "64", "gw:rclone/obj") == data[-64:]
    rclone.run("copyto", "gw:rclone/obj", "gw:rclone/obj-copy")  # server-side copy
    assert rclone.output("cat", "gw:rclone/obj-copy") == data
    rclone.run("deletefile", "gw:rclone/obj-copy")
    names = rclone.run("lsf", "gw:rclone/").stdout.split()
    assert "obj" in names
    assert "obj-copy" not in names
    rclone.run("delete", "--include", "obj", "gw:rclone/")
    assert "obj" not in rclone.run("lsf", "gw:rclone/").stdout.split()


def test_multipart_upload(rclone: Rclone, tmp_path: Path) -> None:
    data = blob(12 * MiB + 1, 9)
    source = tmp_path / "big"
    source.write_bytes(data)
    rclone.run(
        "copyto", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", str(source), "gw:rclone/big"
    )
    back = tmp_path / "big-back"
    rclone.run("copyto", "gw:rclone/big", str(back))
    assert back.read_bytes() == data
    # rclone keeps the whole-file MD5 in metadata for multipart objects; check uses it.
    rclone.run("check", "--one-way", str(tmp_path), "gw:rclone", "--include", "big")


def test_presigned_link(rclone: Rclone, tmp_path: Path) -> None:
    source = tmp_path / "linked"
    source.write_bytes(b"linked bytes")
    rclone.run("copyto", str(source), "gw:rclone/linked")
    url = rclone.run("link", "--expire", "1h", "gw:rclone/linked").stdout.strip()
    assert "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read() == b"linked bytes"


def test_wrong_secret(rclone: Rclone) -> None:
    wrong = CommandLine(rclone.argv, rclone.env | {"RCLONE_CONFIG_GW_SECRET_ACCESS_KEY": "wrong"})
    result = wrong.run("lsf", "gw:rclone", check=False)
    assert result.returncode != 0
    assert "SignatureDoesNotMatch" in result.stderr
