"""S3 traffic for a running gateway, from a thread, until stopped: boto3 with default settings.

Small and large objects (together they pass the gateway's memory limit, so reads evict), a
stream of fresh objects each read whole once evicted (readahead), plain and ranged GETs
(x-cache HIT, MISS and PARTIAL), HEADs, listings, overwrites and deletes, and two kinds of
expected errors: a missing key (404) and an unsupported subresource (501 NotImplemented), so the
5xx series and the 5xx alert have data.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from tests.examples.gateway.conftest import GatewayProcess

KIB: Final = 1024
BUCKET: Final = "dashboard"
SMALL: Final = 32
LARGE: Final = 3
LARGE_SIZE: Final = 2048 * KIB
STREAM_SIZE: Final = 1024 * KIB
#: Rounds between writing a stream object and reading it: enough to push it out of a 4 MiB cache.
STREAM_LAG: Final = 6


class GatewayLoad:
    """Start with :meth:`start` (returns once the objects exist), :meth:`stop` when done.

    Attributes:
        errors: unexpected exceptions from the traffic (the test asserts there are none).
        requests: requests made so far, by kind.
    """

    def __init__(self, gw: GatewayProcess) -> None:
        self._gw = gw
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.errors: list[BaseException] = []
        self.requests: dict[str, int] = {}
        self._round_no = 0
        self._thread = threading.Thread(target=self._run, name="gateway-load", daemon=True)

    def start(self) -> None:
        """Start the traffic; return once the bucket and objects are written.

        Raises:
            RuntimeError: setting up failed or took over 60 s (the error attached).
        """
        self._thread.start()
        if not self._ready.wait(60) or self.errors:
            self.stop()
            raise RuntimeError(f"gateway load did not start: {self.errors!r}")

    def stop(self) -> None:
        """Stop the traffic and join the thread."""
        self._stop.set()
        self._thread.join(60)
        if self._thread.is_alive():
            raise RuntimeError("gateway load thread did not stop within 60 s")

    def _count(self, kind: str) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1

    def _run(self) -> None:
        from tests.examples.gateway.conftest import boto3_client

        try:
            s3 = boto3_client(self._gw)
            s3.create_bucket(Bucket=BUCKET)
            rng = random.Random(7)
            for i in range(SMALL):
                s3.put_object(Bucket=BUCKET, Key=f"small/{i}", Body=rng.randbytes(4 * KIB))
            for i in range(LARGE):
                s3.put_object(Bucket=BUCKET, Key=f"large/{i}", Body=rng.randbytes(LARGE_SIZE))
        except BaseException as exc:
            self.errors.append(exc)
            return
        finally:
            self._ready.set()
        try:
            while not self._stop.is_set():
                self._round(s3, rng)
                self._stop.wait(0.02)
        except BaseException as exc:
            self.errors.append(exc)

    def _round(self, s3: Any, rng: random.Random) -> None:
        for _ in range(8):
            s3.get_object(Bucket=BUCKET, Key=f"small/{rng.randrange(SMALL)}")["Body"].read()
            self._count("GetObject")
        key = f"large/{rng.randrange(LARGE)}"
        start = rng.randrange(0, LARGE_SIZE - 256 * KIB)
        s3.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={start}-{start + 256 * KIB - 1}")[
            "Body"
        ].read()
        self._count("GetObject")
        # A stream of fresh objects, each read whole once the cache has dropped it: a
        # sequential read of a body never read before, so it gets readahead.
        n = self._round_no = self._round_no + 1
        s3.put_object(Bucket=BUCKET, Key=f"stream/{n}", Body=rng.randbytes(STREAM_SIZE))
        if n > STREAM_LAG:
            s3.get_object(Bucket=BUCKET, Key=f"stream/{n - STREAM_LAG}")["Body"].read()
            s3.delete_object(Bucket=BUCKET, Key=f"stream/{n - STREAM_LAG}")
            self._count("DeleteObject")
        self._count("PutObject")
        self._count("GetObject")
        s3.head_object(Bucket=BUCKET, Key=f"small/{rng.randrange(SMALL)}")
        s3.list_objects_v2(Bucket=BUCKET, Prefix="small/", MaxKeys=10)
        s3.put_object(
            Bucket=BUCKET, Key=f"small/{rng.randrange(SMALL)}", Body=rng.randbytes(4 * KIB)
        )
        for kind in ("HeadObject", "ListObjectsV2", "PutObject"):
            self._count(kind)
        try:
            s3.get_object(Bucket=BUCKET, Key="missing")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NoSuchKey":
                raise
        self._count("NoSuchKey")
        try:
            s3.get_bucket_tagging(Bucket=BUCKET)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NotImplemented":
                raise
        self._count("NotImplemented")
