"""The AWS CLI v1 (``aws s3`` and ``aws s3api``) against the real gateway, unmodified.

Credentials come from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``; a config file sets only
the multipart threshold and part size (5 MiB) so a small file exercises multipart. Each command is
a subprocess; contents are compared byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .clients import CommandLine, MiB, blob, client_env, running_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .conftest import GatewayProcess

AWS = str(Path(sys.executable).with_name("aws"))


class Cli(CommandLine):
    def __init__(self, gw: GatewayProcess, home: Path) -> None:
        config = home / "aws-config"
        config.write_text(
            "[default]\nregion = us-east-1\n"
            "s3 =\n  multipart_threshold = 5MB\n  multipart_chunksize = 5MB\n"
        )
        env = client_env(
            home,
            AWS_ACCESS_KEY_ID=gw.access_key,
            AWS_SECRET_ACCESS_KEY=gw.secret_key,
            AWS_CONFIG_FILE=str(config),
            AWS_SHARED_CREDENTIALS_FILE=str(home / "no-credentials"),
        )
        super().__init__([AWS, "--endpoint-url", gw.endpoint], env)

    def api(self, *args: str) -> Any:
        out = self.run("s3api", *args).stdout
        return json.loads(out) if out.strip() else {}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(tmp_path_factory.mktemp("awscli")) as gw:
        yield gw


@pytest.fixture(scope="module")
def cli(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = Cli(gateway, tmp_path_factory.mktemp("awscli-home"))
    cli.run("s3", "mb", "s3://cli")
    return cli


def test_cp_single_and_multipart(cli: Cli, tmp_path: Path) -> None:
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(blob(123_456, 1))
    big.write_bytes(blob(12 * MiB + 7, 2))
    cli.run("s3", "cp", str(small), "s3://cli/cp/small.bin")
    cli.run("s3", "cp", str(big), "s3://cli/cp/big.bin")
    head = cli.api("head-object", "--bucket", "cli", "--key", "cp/big.bin")
    assert head["ContentLength"] == big.stat().st_size
    assert head["ETag"].strip('"').endswith("-3")
    small_head = cli.api("head-object", "--bucket", "cli", "--key", "cp/small.bin")
    assert small_head["ETag"].strip('"') == hashlib.md5(small.read_bytes()).hexdigest()
    for name in ("small.bin", "big.bin"):
        back = tmp_path / f"back-{name}"
        cli.run("s3", "cp", f"s3://cli/cp/{name}", str(back))  # the big one in ranged parts
        assert back.read_bytes() == (tmp_path / name).read_bytes()
    cli.run("s3", "cp", "s3://cli/cp/big.bin", "s3://cli/cp/big-copy.bin")  # multipart copy
    copy = tmp_path / "copy.bin"
    cli.run("s3", "cp", "s3://cli/cp/big-copy.bin", str(copy))
    assert copy.read_bytes() == big.read_bytes()


def test_sync_ls_and_rm(cli: Cli, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    files = {f"d{i % 3}/f{i}.txt": blob(100 + i, i) for i in range(12)}
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    cli.run("s3", "sync", str(tree), "s3://cli/sync/")
    again = cli.run("s3", "sync", str(tree), "s3://cli/sync/").stdout
    assert "upload:" not in again  # sizes and times match: nothing re-sent
    listing = cli.run("s3", "ls", "--recursive", "s3://cli/sync/").stdout
    assert sorted(line.split()[-1] for line in listing.splitlines()) == sorted(
        f"sync/{n}" for n in files
    )
    top = cli.run("s3", "ls", "s3://cli/sync/").stdout
    assert sorted(line.split()[-1] for line in top.splitlines()) == ["d0/", "d1/", "d2/"]
    down = tmp_path / "down"
    cli.run("s3", "sync", "s3://cli/sync/", str(down))
    for name, data in files.items():
        assert (down / name).read_bytes() == data
    cli.run("s3", "rm", "--recursive", "s3://cli/sync/d1/")
    remaining = cli.run("s3", "ls", "--recursive", "s3://cli/sync/").stdout
    assert "d1/" not in remaining
    assert len(remaining.splitlines()) == 8


def test_s3api_ranges_listing_and_presign(cli: Cli, tmp_path: Path) -> None:
    data = blob(50_000, 9)
    source = tmp_path / "obj"
    source.write_bytes(data)
    cli.api("put-object", "--bucket", "cli", "--key", "api/obj", "--body", str(source))
    many = tmp_path / "many"
    many.mkdir()
    for i in range(7):
        (many / str(i)).write_bytes(data[: 100 * i])
    cli.run("s3", "cp", "--recursive", str(many), "s3://cli/api/many/")
    part = tmp_path / "part"
    got = cli.api(
        "get-object", "--bucket", "cli", "--key", "api/obj", "--range", "bytes=1000-1999", str(part)
    )
    assert got["ContentLength"] == 1000
    assert part.read_bytes() == data[1000:2000]
    page = cli.api(
        "list-objects-v2",
        "--bucket",
        "cli",
        "--prefix",
        "api/many/",
        "--max-keys",
        "3",
        "--no-paginate",
    )
    assert page["IsTruncated"] is True
    assert [o["Key"] for o in page["Contents"]] == ["api/many/0", "api/many/1", "api/many/2"]
    rest = cli.api(
        "list-objects-v2", "--bucket", "cli", "--prefix", "api/many/", "--continuation-token",
        page["NextContinuationToken"], "--no-paginate",
    )  # fmt: skip
    assert [o["Key"] for o in rest["Contents"]] == [f"api/many/{i}" for i in range(3, 7)]
    everything = cli.api(
        "list-objects-v2", "--bucket", "cli", "--prefix", "api/many/", "--page-size", "2"
    )
    assert len(everything["Contents"]) == 7
    cli.api("copy-object", "--bucket", "cli", "--key", "api/copied", "--copy-source", "cli/api/obj")
    cli.api("delete-object", "--bucket", "cli", "--key", "api/obj")
    missing = cli.run("s3api", "head-object", "--bucket", "cli", "--key", "api/obj", check=False)
    assert missing.returncode != 0
    assert "404" in missing.stderr
    url = cli.run("s3", "presign", "s3://cli/api/copied", "--expires-in", "300").stdout.strip()
    assert "Signature=" in url  # SigV2: the CLI v1 default for presign
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read() == data


def test_bad_credentials(cli: Cli) -> None:
    wrong = CommandLine(cli.argv, cli.env | {"AWS_SECRET_ACCESS_KEY": "wrong"})
    result = wrong.run("s3api", "list-buckets", check=False)
    assert result.returncode != 0
    assert "SignatureDoesNotMatch" in result.stderr
