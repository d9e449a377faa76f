"""Memory-pressure sources and the background evictor.

The evictor wakes when usage crosses the high watermark of the budget or when a pressure source
reports that the machine (cgroup v2) or the kernel (PSI) is short of memory, and evicts in policy
order (see ``policies.py``) down to a target. Dirty chunks are written back before they are
dropped; a failed write-back keeps them; mapped (pinned) pages are never dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, final

import anyio

from .errors import CacheError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .stats import Counters

__all__ = [
    "BudgetPressure",
    "CgroupPressure",
    "Evictor",
    "PressureSource",
    "PsiPressure",
    "own_cgroup_dir",
]

log = logging.getLogger(__name__)


class PressureSource(Protocol):
    """Something that can ask the cache to shrink."""

    def target(self, usage: int, limit: int) -> int | None:
        """The usage to shrink to now, or None when there is no pressure. Cheap, synchronous."""
        ...


@final
class BudgetPressure:
    """The budget itself: above ``high`` x limit, shrink to ``low`` x limit."""

    __slots__ = ("high", "low")

    def __init__(self, high: float = 0.95, low: float = 0.85) -> None:
        if not 0 < low <= high <= 1:
            raise ValueError(f"need 0 < low <= high <= 1, got low={low} high={high}")
        self.high = high
        self.low = low

    def target(self, usage: int, limit: int) -> int | None:
        """Shrink to the low watermark once usage passes the high one."""
        if usage > self.high * limit:
            return int(self.low * limit)
        return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def own_cgroup_dir(
    proc_cgroup: str | Path = "/proc/self/cgroup", root: str | Path = "/sys/fs/cgroup"
) -> Path:
    """This process's cgroup v2 directory (the ``0::`` line of /proc/self/cgroup).

    Outside a container the root group has no ``memory.current``, so the process's own group
    is the one whose limit matters. Falls back to ``root``.
    """
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return Path(root)
    for line in lines:
        if line.startswith("0::"):
            return Path(root) / line[3:].strip().lstrip("/")
    return Path(root)


@final
class CgroupPressure:
    """cgroup v2: ``memory.current`` against ``memory.high`` (or ``memory.max``).

    When the group uses more than ``high`` of its limit, shrink the cache by the excess over
    ``low`` of the limit (never below zero). Reads two small files; no pressure when the group
    has no limit or the files are missing.
    """

    __slots__ = ("_dir", "high", "low")

    def __init__(
        self, cgroup_dir: str | Path | None = None, high: float = 0.9, low: float = 0.8
    ) -> None:
        if not 0 < low <= high <= 1:
            raise ValueError(f"need 0 < low <= high <= 1, got low={low} high={high}")
        self._dir = Path(cgroup_dir) if cgroup_dir is not None else own_cgroup_dir()
        self.high = high
        self.low = low

    def target(self, usage: int, limit: int) -> int | None:
        """The cache usage that brings the group back to ``low`` of its limit."""
        current = _read_int(self._dir / "memory.current")
        cap = _read_int(self._dir / "memory.high") or _read_int(self._dir / "memory.max")
        if current is None or not cap:
            return None
        if current <= self.high * cap:
            return None
        excess = current - int(self.low * cap)
        return max(0, usage - excess)


@final
class PsiPressure:
    """Linux PSI: ``some avg10`` of ``/proc/pressure/memory`` above ``threshold`` percent.

    Under pressure the cache gives back ``step`` of its usage per check.
    """

    __slots__ = ("_path", "step", "threshold")

    def __init__(
        self, path: str | Path = "/proc/pressure/memory", threshold: float = 10.0, step: float = 0.1
    ) -> None:
        if threshold < 0 or not 0 < step <= 1:
            raise ValueError("threshold must be >= 0 and step in (0, 1]")
        self._path = Path(path)
        self.threshold = threshold
        self.step = step

    def avg10(self) -> float | None:
        """The ``some avg10`` figure, or None when PSI is unavailable."""
        try:
            lines = self._path.read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            if line.startswith("some"):
                for field in line.split()[1:]:
                    name, _, value = field.partition("=")
                    if name == "avg10":
                        try:
                            return float(value)
                        except ValueError:
                            return None
        return None

    def target(self, usage: int, limit: int) -> int | None:
        """Give back ``step`` of usage while the stall figure is over the threshold."""
        avg = self.avg10()
        if avg is None or avg <= self.threshold:
            return None
        return int(usage * (1 - self.step))


@final
class Evictor:
    """The store's background eviction task and its wake-up.

    Args:
        poll_interval: seconds between polls of the pressure sources when nobody wakes it.
    """

    __slots__ = ("_interval", "_wakeup")

    def __init__(self, poll_interval: float) -> None:
        # Immutable after __init__.
        self._interval = poll_interval
        # Set to run a pass now; replaced by the task after each wake-up. Loop-atomic.
        self._wakeup = anyio.Event()

    def wake(self) -> None:
        """Run a pass now rather than at the next poll. Synchronous."""
        self._wakeup.set()

    async def run(
        self,
        target: Callable[[], int | None],
        evict_to: Callable[[int, str], Awaitable[int]],
        counters: Counters,
    ) -> None:
        """Evict to ``target()`` (when it is not None) at every wake-up; runs until cancelled.

        Checkpoint: always (it loops on waits).
        Cancellation: stops between chunks; a chunk being written back stays dirty and cached.
        """
        while True:
            with anyio.move_on_after(self._interval):
                await self._wakeup.wait()
            self._wakeup = anyio.Event()
            goal = target()
            if goal is None:
                continue
            counters.eviction_runs += 1
            try:
                await evict_to(goal, "pressure")
            except CacheError as exc:
                log.warning("eviction stopped: %s", exc)
