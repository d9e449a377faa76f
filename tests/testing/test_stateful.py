"""The inode state machine over both backings, both anyio backends, both write policies.

The default (dev) profile runs four combinations briefly; the ``slow`` profile runs all eight
with several times the examples and twice the steps, bounded so the whole slow pass of
``make test`` stays within CI's budget (long runs: raise ``SLOW_EXAMPLES`` locally).
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from aiocache_inode.testing.stateful import (
    local_file_factory,
    make_inode_machine,
    memory_factory,
)

FACTORIES = {"memory": memory_factory, "local": local_file_factory}
#: Backings that finish requests on host threads (no virtual clock for them).
THREADED = {"local"}

FAST = [
    ("asyncio", "memory", False),
    ("trio", "memory", True),
    ("asyncio", "local", True),
    ("trio", "local", False),
]
ALL = [(b, f, wb) for b in ("asyncio", "trio") for f in FACTORIES for wb in (False, True)]


def _ids(combo: tuple[str, str, bool]) -> str:
    backend, factory, write_back = combo
    return f"{backend}-{factory}-{'writeback' if write_back else 'writethrough'}"


def _machine(combo: tuple[str, str, bool]) -> type:
    backend, factory, write_back = combo
    return make_inode_machine(
        FACTORIES[factory], backend=backend, write_back=write_back, threads=factory in THREADED
    )


@pytest.mark.parametrize("combo", FAST, ids=_ids)
def test_inode_machine(combo: tuple[str, str, bool]) -> None:
    run_state_machine_as_test(_machine(combo), settings=settings())


#: Examples per combination in the slow pass: 400 took about 2 minutes per combination since
#: the machine runs every pass as a rule and checks inside the loop; 200 keeps the pass bounded.
SLOW_EXAMPLES = 200


@pytest.mark.slow
@pytest.mark.parametrize("combo", ALL, ids=_ids)
def test_inode_machine_slow(combo: tuple[str, str, bool]) -> None:
    run_state_machine_as_test(
        _machine(combo), settings=settings(settings(), max_examples=SLOW_EXAMPLES)
    )
