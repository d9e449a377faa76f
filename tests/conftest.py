"""Shared test set-up: both anyio backends, the hypothesis profiles, and the S3 servers.

Profiles: ``dev`` (default, fast), ``ci`` (the fast profile without deadlines) and ``slow`` (ten
times and more the examples and steps; ``make test`` runs the tests marked ``slow`` with it once).

The S3 servers (a moto server, a one-node Ceph) are session fixtures here so that the backing
tests and the gateway's proxy-mode tests share one of each: a Ceph cluster costs seconds to
start and hundreds of megabytes to run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .backing.s3_servers import Endpoint

settings.register_profile(
    "dev", max_examples=40, stateful_step_count=30, deadline=None, print_blob=True
)
settings.register_profile(
    "ci", max_examples=40, stateful_step_count=30, deadline=None, print_blob=True
)
settings.register_profile(
    "slow",
    max_examples=400,
    stateful_step_count=60,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("dev")


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every async test on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[Endpoint]:
    """moto's standalone server on loopback, with the bucket ``Endpoint.bucket`` made."""
    from .backing.s3_servers import MotoServer  # boto3 only for the tests that use S3

    server = MotoServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ceph_endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Endpoint, Any]]:
    """A one-node Ceph RGW: its http endpoint and its https one; skipped without the packages."""
    from .backing.s3_servers import CephServer, ceph_missing

    reason = ceph_missing()
    if reason:
        pytest.skip(reason)
    server = CephServer(tmp_path_factory.mktemp("ceph"))
    try:
        yield server.start()
    finally:
        server.stop()
