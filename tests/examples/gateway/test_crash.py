"""``kill -9`` under concurrent PUT load: every acknowledged object survives, no orphan files."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import TYPE_CHECKING

from .conftest import boto3_client

if TYPE_CHECKING:
    from .conftest import GatewayProcess


def test_kill_9_under_put_load_loses_no_acknowledged_object(
    gateway_server: GatewayProcess,
) -> None:
    gw = gateway_server
    s3 = boto3_client(gw)
    s3.create_bucket(Bucket="crash")
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()
    enough = threading.Event()

    def writer(n: int) -> None:
        client = boto3_client(gw, retries={"max_attempts": 1})
        i = 0
        while not stop.is_set():
            key = f"w{n}/{i:05d}"
            data = os.urandom(1000 + (i * 7919) % 300_000)
            try:
                client.put_object(Bucket="crash", Key=key, Body=data)
            except Exception:
                return  # the server died under this request: not acknowledged
            with lock:
                acked[key] = hashlib.sha256(data).hexdigest()
                if len(acked) >= 200:
                    enough.set()
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    try:
        assert enough.wait(120), "the load never got going"
        gw.kill()
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    gw.restart()
    s3 = boto3_client(gw)
    for key, digest in sorted(acked.items()):
        body = s3.get_object(Bucket="crash", Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest, key
    # Recovery left exactly the bodies the metadata references: no orphans, no tmp files.
    listed = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="crash"):
        listed += [o["Key"] for o in page.get("Contents", [])]
    assert set(acked) <= set(listed)
    bodies = [
        name
        for shard in os.listdir(gw.data_dir / "bodies")
        for name in os.listdir(gw.data_dir / "bodies" / shard)
    ]
    assert len(bodies) == len(listed)
    assert os.listdir(gw.data_dir / "tmp") == []
