"""The machines clean up after themselves: no temporary directory of theirs is left behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Prefixes of the temporary directories the testing helpers create in this process (they
#: carry the pid, so another test run on the same machine cannot trip the check).
PREFIXES = tuple(f"aiocache-inode-{kind}-{os.getpid()}-" for kind in ("machine", "concurrent"))


def _ours() -> set[str]:
    tmp = Path(tempfile.gettempdir())
    return {p.name for p in tmp.iterdir() if p.name.startswith(PREFIXES)}


@pytest.fixture(scope="package", autouse=True)
def no_temporary_directories_left() -> Iterator[None]:
    """Fail the package's tests if they leave a helper's temporary directory in /tmp."""
    before = _ours()
    yield
    left = _ours() - before
    assert not left, f"temporary directories left behind: {sorted(left)}"
