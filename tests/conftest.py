"""Shared test set-up: both anyio backends, and the hypothesis profiles.

Profiles: ``dev`` (default, fast), ``ci`` (the fast profile without deadlines) and ``slow`` (ten
times and more the examples and steps; ``make test`` runs the tests marked ``slow`` with it once).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

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
