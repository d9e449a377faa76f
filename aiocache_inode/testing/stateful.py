"""A model-based state machine for one caching inode, shipped for backend authors.

After Hypothesis's ``DatabaseComparison`` and zarr's ``ZarrStoreStateMachine``: every rule is
applied to the cache and to a plain model (a ``bytearray``; the backing is "assumed perfect"),
and the two are compared after every step. Faults (errors, short I/O) and cancellations at a
chosen backing call are injected; both anyio backends run it through a blocking portal (rules
are synchronous).

It replays: a failure found once is found again from its seed, and shrinks. What makes it so:

- the store runs no background tasks (``background=False``): eviction and flush passes are
  rules of their own, and every rule waits, inside the event loop, for the readahead it
  started; so between two rules the loop is idle, and the invariants are checked in the loop
  (a synchronous call through the portal) where nothing can run half-way;
- dirty-data ages use a virtual clock (``monotonic=``) that only the ``advance_clock`` rule
  moves; on trio the loop also runs under ``trio.testing.MockClock(autojump_threshold=0)``, so
  the guard against a hang costs no real time; trio's scheduler randomness is registered with
  Hypothesis by trio itself;
- the fault sequence is reseeded before every rule from the drawn seed and the rule's number,
  and a cancellation point counts only the backing calls of the rule's own task, so what one
  rule meets does not depend on how many calls earlier rules (or readahead) made.

Backings over host threads (``LocalFile``) still finish in real time, in whatever order the
threads do; pass ``threads=True`` for them (no virtual clock there, and the hang guard is real
time). A failure there may not replay exactly.

Use it for your own backing::

    from aiocache_inode.testing.stateful import make_inode_machine

    async def open_mine(data: bytes) -> tuple[BackingFile, Callable[[], Awaitable[bytes]]]:
        ...  # a backing holding `data`, and a coroutine function reading it back

    TestMine = make_inode_machine(open_mine, backend="asyncio").TestCase

The file also changes behind the cache (``change_behind_and_revalidate``): the backing is
wrapped in an :class:`~.backings.OutOfBandBacking`, a rule rewrites its bytes and size as another
writer would and then revalidates. The model: clean pages are dropped and read afresh from the
new version, the size follows it; pages holding dirty bytes are kept whole, dirty, over the new
version and reported in the ``ConflictError`` (never dropped, never overwritten by it), the size
staying at least their end; past the old end a kept last page shows the new version's bytes.
A hook that fails changes nothing; a cancellation once the backing was asked leaves the
revalidation completed. Injected errors and short reads stay on during that rule: one drawn
for the attribute read (or a kept page's tail read) after a successful refresh leaves the inode
on the old size with ``attributes_stale`` set, and the next revalidation (faults off) must still
follow the change the backing reported once.

Invariants checked after every step:
    1. the cached pages equal the model (and bytes past the size in the last page are zero);
    2. the inode's size equals the model's length, and its mode the model's mode;
    3. dirty ⊆ cached, policy and pool accounting exact (``store._check_invariants()``);
    4. no pins, maps or in-flight I/O left behind by a finished (or cancelled) operation;
    5. usage <= memory_limit once background I/O has drained;
    and after every successful ``write_out``: the backing holds exactly the model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.from_thread import start_blocking_portal
from hypothesis import event, note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from ..backing import FaultInjector, LocalFile, MemoryBacking
from ..errors import BackingError, CacheError, ConflictError
from ..ranges import PAGE_SIZE, Range, page_round_down, page_round_up
from ..store import CacheStore
from .backings import CancellingBacking, OutOfBandBacking

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..backing.base import BackingFile
    from ..inode import CachingInode

__all__ = ["local_file_factory", "make_inode_machine", "memory_factory"]

P = PAGE_SIZE
#: Files stay small so each comparison is cheap, and the budget is smaller than a file can grow,
#: so eviction under pressure is part of every run.
MAX_FILE = 40 * P
MEMORY_LIMIT = 16 * P


async def memory_factory(data: bytes) -> tuple[BackingFile, Callable[[], Awaitable[bytes]]]:
    """A MemoryBacking holding ``data``, and its read-back."""
    b = MemoryBacking(data)

    async def read_back() -> bytes:
        return b.data

    return b, read_back


async def local_file_factory(data: bytes) -> tuple[BackingFile, Callable[[], Awaitable[bytes]]]:
    """A LocalFile holding ``data`` on an unlinked temporary file, and its read-back.

    The file is removed (with its directory) as soon as it is open: nothing is left on disk
    whatever happens to the test, and the data goes when the backing is closed. The read-back
    reads through the open descriptor.
    """
    d = Path(tempfile.mkdtemp(prefix=f"aiocache-inode-machine-{os.getpid()}-"))
    try:
        path = d / "file.bin"
        path.write_bytes(data)
        b = await LocalFile.open(path, writable=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)

    async def read_back() -> bytes:
        fd = b.fd()
        return os.pread(fd, os.fstat(fd).st_size, 0)

    return b, read_back


#: Spacing of the per-rule fault seeds derived from the drawn seed (see ``_rule_seed``).
_SEED_STRIDE = 1_000_003


def _rule_seed(seed: int, rule: int) -> int:
    """The fault seed for rule number ``rule`` of a run drawn with ``seed``."""
    return seed * _SEED_STRIDE + rule


def make_inode_machine(
    factory: Callable[[bytes], Awaitable[tuple[BackingFile, Callable[[], Awaitable[bytes]]]]],
    *,
    backend: str = "asyncio",
    write_back: bool = False,
    policy: str = "s3fifo",
    threads: bool = False,
) -> type[RuleBasedStateMachine]:
    """Build a state machine class over backings made by ``factory``.

    Args:
        factory: makes a backing holding the given bytes, and a coroutine function reading the
            backing's bytes back.
        backend: the anyio backend.
        write_back: the store's write policy.
        policy: the store's eviction policy.
        threads: the backing finishes requests on host threads (``LocalFile``): run on the
            real clock, since a virtual one would jump past a thread still working.
    """

    class InodeMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            options: dict[str, Any] = {}
            if backend == "trio" and not threads:
                from trio.testing import MockClock

                options["clock"] = MockClock(autojump_threshold=0)
            self._portal_cm = start_blocking_portal(backend, options)
            self.portal = self._portal_cm.__enter__()
            self.model = bytearray()
            self.model_mode = 0
            self.inner: BackingFile | None = None
            self.changer: OutOfBandBacking | None = None
            self.read_back: Callable[[], Awaitable[bytes]] | None = None
            self.store: CacheStore | None = None
            self._store_cm: Any = None
            self._open_cm: Any = None
            self.inode: CachingInode | None = None
            self.faults: FaultInjector | None = None
            self.canceller: CancellingBacking | None = None
            self.steps = 0
            # The virtual clock of dirty-data ages: only advance_clock moves it.
            self.now = 0.0
            self.seed = 0
            self.rule_count = 0

        # -- set-up and tear-down ---------------------------------------------------------------

        @precondition(lambda self: self.inode is None)
        @rule(
            data=st.binary(max_size=8 * P),
            seed=st.integers(0, 2**16),
        )
        def open(self, data: bytes, seed: int) -> None:
            self.model = bytearray(data)
            inner, self.read_back = self.portal.call(factory, data)
            self.inner = inner
            self.seed = seed
            self.changer = OutOfBandBacking(inner)
            self.faults = FaultInjector(self.changer, seed=seed)
            self.canceller = CancellingBacking(self.faults)
            self.store = CacheStore(
                MEMORY_LIMIT,
                registry=CollectorRegistry(),
                write_back=write_back,
                policy=policy,
                readahead_initial=4 * P,
                readahead_max=8 * P,
                readahead_request=4 * P,
                # Freed pages come back with old bytes: nothing may assume zeros.
                pool_warm_bytes=2 * P,
                background=False,
                monotonic=lambda: self.now,
            )
            self._store_cm = self.portal.wrap_async_context_manager(self.store)
            self._store_cm.__enter__()
            self._open_cm = self.portal.wrap_async_context_manager(
                self.store.open("k", self.canceller)
            )
            self.inode = self._open_cm.__enter__()
            self.model_mode = self.inode.attrs.mode
            note(f"open: {len(data)} bytes, write_back={write_back}, seed={seed}")

        def teardown(self) -> None:
            try:
                if self.inode is not None:
                    self._set_faults(0.0, 0.0)
                    self._open_cm.__exit__(None, None, None)
                    self._store_cm.__exit__(None, None, None)
                    close = getattr(self.inner, "aclose", None)
                    if close is not None:
                        self.portal.call(close)
            finally:
                self._portal_cm.__exit__(None, None, None)

        # -- helpers ---------------------------------------------------------------------------

        def _set_faults(self, error_rate: float, short_io_rate: float) -> None:
            assert self.faults is not None
            self.faults.error_rate = error_rate
            self.faults.short_io_rate = short_io_rate

        async def _drain(self) -> None:
            """Wait for the background I/O (readahead) the last operation started.

            Under trio's MockClock a hang fails at once (the clock jumps to the deadline); on
            the real clock the bound is generous (a loaded CI machine runs threads late).
            """
            inode = self.inode
            if inode is None:
                return
            with anyio.fail_after(30):
                while inode._inflight:
                    _s, _e, op = next(iter(inode._inflight.segments()))
                    await op.event.wait()

        def _run(self, fn: Callable[[], Awaitable[Any]], cancel_at: int | None) -> tuple[str, Any]:
            """Run ``fn`` in the loop: ("ok", value), ("error", exc) or ("cancelled", None).

            The fault sequence is reseeded first (from the drawn seed and this rule's number),
            and the background I/O ``fn`` started has finished when this returns.
            """
            canceller = self.canceller
            faults = self.faults
            assert canceller is not None
            assert faults is not None
            self.rule_count += 1
            rule_seed = _rule_seed(self.seed, self.rule_count)

            async def runner() -> tuple[str, Any]:
                faults.reseed(rule_seed)
                result: tuple[str, Any] = ("cancelled", None)
                with anyio.CancelScope() as scope:
                    if cancel_at is not None:
                        canceller.arm(scope, cancel_at)
                    try:
                        result = ("ok", await fn())
                    except CacheError as exc:
                        result = ("error", exc)
                    finally:
                        canceller.disarm()
                await self._drain()
                return result

            result: tuple[str, Any] = self.portal.call(runner)
            return result

        def _content(self) -> bytes:
            """The inode's whole content, read with faults off (used after failures only)."""
            inode = self.inode
            assert inode is not None
            saved = (self.faults.error_rate, self.faults.short_io_rate) if self.faults else (0, 0)
            self._set_faults(0.0, 0.0)
            try:
                status, value = self._run(lambda: inode.read(0, inode.size), None)
            finally:
                self._set_faults(*saved)
            assert status == "ok", (status, value)
            assert isinstance(value, bytes)
            return value

        def _adopt_write_prefix(self, offset: int, data: bytes, old_size: int) -> None:
            """After a failed or cancelled write: the inode must show exactly a prefix applied."""
            inode = self.inode
            assert inode is not None
            content = self._content()
            if inode.size > max(old_size, offset):
                k = inode.size - offset
            else:
                k = 0
                window = content[offset : offset + len(data)]
                while k < len(window) and window[k] == data[k]:
                    k += 1
            expect = bytearray(self.model)
            if k:
                if offset > len(expect):
                    expect.extend(bytes(offset - len(expect)))
                expect[offset : offset + k] = data[:k]
            assert bytes(expect) == content, f"not a prefix of the write (k={k})"
            self.model = expect
            note(f"  -> prefix of {k} bytes applied")

        # -- rules -----------------------------------------------------------------------------

        @precondition(lambda self: self.inode is not None)
        @rule(offset=st.integers(0, MAX_FILE), size=st.integers(0, 8 * P))
        def read(self, offset: int, size: int) -> None:
            inode = self.inode
            assert inode is not None
            status, value = self._run(lambda: inode.read(offset, size), None)
            note(f"read({offset}, {size}) -> {status}")
            if status == "ok":
                assert value == bytes(self.model[offset : offset + size])

        @precondition(lambda self: self.inode is not None)
        @rule(
            offset=st.integers(0, MAX_FILE - 4 * P),
            data=st.binary(min_size=1, max_size=4 * P),
            cancel_at=st.none() | st.integers(1, 4),
        )
        def write(self, offset: int, data: bytes, cancel_at: int | None) -> None:
            inode = self.inode
            assert inode is not None
            old_size = inode.size
            status, value = self._run(lambda: inode.write(offset, data), cancel_at)
            note(f"write({offset}, {len(data)} bytes, cancel_at={cancel_at}) -> {status}")
            if status == "ok":
                assert value == len(data)
                if offset > len(self.model):
                    self.model.extend(bytes(offset - len(self.model)))
                self.model[offset : offset + len(data)] = data
            else:
                self._adopt_write_prefix(offset, data, old_size)

        @precondition(lambda self: self.inode is not None)
        @rule(size=st.integers(0, MAX_FILE), cancel_at=st.none() | st.integers(1, 3))
        def truncate(self, size: int, cancel_at: int | None) -> None:
            inode = self.inode
            assert inode is not None
            status, _ = self._run(lambda: inode.truncate(size), cancel_at)
            note(f"truncate({size}, cancel_at={cancel_at}) -> {status}")
            if status == "ok" or (status == "cancelled" and inode.size == size):
                if size < len(self.model):
                    del self.model[size:]
                else:
                    self.model.extend(bytes(size - len(self.model)))
            assert inode.size == len(self.model)

        @precondition(lambda self: self.inode is not None)
        @rule(offset=st.integers(0, MAX_FILE - 2 * P), length=st.integers(1, 2 * P))
        def allocate(self, offset: int, length: int) -> None:
            inode = self.inode
            assert inode is not None
            status, _ = self._run(lambda: inode.allocate(offset, length), None)
            note(f"allocate({offset}, {length}) -> {status}")
            if status == "ok" and offset + length > len(self.model):
                self.model.extend(bytes(offset + length - len(self.model)))

        @precondition(lambda self: self.inode is not None)
        @rule(cancel_at=st.none() | st.integers(1, 4))
        def write_out(self, cancel_at: int | None) -> None:
            inode = self.inode
            assert inode is not None
            assert self.read_back is not None
            status, _ = self._run(inode.write_out, cancel_at)
            note(f"write_out(cancel_at={cancel_at}) -> {status}")
            if status == "ok":
                backed = self.portal.call(self.read_back)
                assert backed == bytes(self.model), "backing differs from the model after write_out"
                assert inode.dirty_bytes == 0

        @precondition(lambda self: self.inode is not None)
        @rule(offset=st.integers(0, MAX_FILE), length=st.integers(0, 12 * P))
        def prefetch(self, offset: int, length: int) -> None:
            inode = self.inode
            assert inode is not None

            async def go() -> int:
                return inode.prefetch(offset, length)

            status, value = self._run(go, None)
            note(f"prefetch({offset}, {length}) -> {status} {value if status == 'ok' else ''}")
            if status == "ok":
                # Readahead only: the range in whole pages, or a window continuing a stream
                # (at most readahead_max).
                assert 0 <= value <= max(-(-length // P) * P + P, 8 * P)

        @precondition(lambda self: self.inode is not None)
        @rule(start=st.integers(0, MAX_FILE), length=st.integers(1, 16 * P))
        def evict(self, start: int, length: int) -> None:
            inode = self.inode
            assert inode is not None
            status, _ = self._run(lambda: inode.evict(start, start + length), None)
            note(f"evict({start}, +{length}) -> {status}")

        @precondition(lambda self: self.inode is not None)
        @rule(goal=st.integers(0, MEMORY_LIMIT))
        def shrink(self, goal: int) -> None:
            store = self.store
            assert store is not None
            status, value = self._run(lambda: store.shrink(goal), None)
            note(f"shrink({goal}) -> {status} {value if status == 'ok' else ''}")
            if status == "ok" and self.faults is not None and self.faults.error_rate == 0:
                assert value == store.usage

        @precondition(lambda self: self.inode is not None)
        @rule(offset=st.integers(0, MAX_FILE), length=st.integers(0, 6 * P))
        def view_read(self, offset: int, length: int) -> None:
            inode = self.inode
            assert inode is not None

            async def go() -> bytes:
                async with inode.view(offset, length) as views:
                    return b"".join(bytes(v) for v in views)

            status, value = self._run(go, None)
            note(f"view_read({offset}, {length}) -> {status}")
            if status == "ok":
                assert value == bytes(self.model[offset : offset + length])

        @precondition(lambda self: self.inode is not None and len(self.model) > 0)
        @rule(data=st.data(), fill=st.integers(0, 255))
        def view_write(self, data: st.DataObject, fill: int) -> None:
            inode = self.inode
            assert inode is not None
            size = len(self.model)
            offset = data.draw(st.integers(0, size - 1), label="offset")
            length = data.draw(st.integers(1, min(3 * P, size - offset)), label="length")
            pattern = bytes([fill]) * length

            async def go() -> int:
                async with inode.view(offset, length, writable=True) as views:
                    pos = 0
                    for v in views:
                        v[:] = pattern[pos : pos + len(v)]
                        pos += len(v)
                    return pos

            status, value = self._run(go, None)
            note(f"view_write({offset}, {length}) -> {status}")
            if status == "ok":
                assert value == length
                self.model[offset : offset + length] = pattern

        @precondition(lambda self: self.inode is not None)
        @rule(mode=st.integers(0, 0o777))
        def set_permissions(self, mode: int) -> None:
            inode = self.inode
            assert inode is not None
            status, ok = self._run(lambda: inode.set_permissions(mode), None)
            note(f"set_permissions({mode:#o}) -> {status} {ok}")
            if status == "ok" and ok:
                self.model_mode = mode

        @precondition(lambda self: self.inode is not None)
        @rule()
        def forget_and_reopen(self) -> None:
            """Release the inode (writing everything back) and open the key afresh."""
            store = self.store
            assert store is not None
            assert self.canceller is not None
            status, _ = self._run(lambda: store.forget("k"), None)
            note(f"forget -> {status}")
            if status != "ok":
                return
            assert self.inode is not None
            assert self.inode.closed
            self._open_cm.__exit__(None, None, None)
            self._open_cm = self.portal.wrap_async_context_manager(store.open("k", self.canceller))
            saved = (self.faults.error_rate, self.faults.short_io_rate) if self.faults else (0, 0)
            self._set_faults(0.0, 0.0)  # get_attributes of the reopen must succeed
            try:
                self.inode = self._open_cm.__enter__()
            finally:
                self._set_faults(*saved)
            assert self.inode.size == len(self.model)
            assert self.inode.attrs.mode == self.model_mode
            assert self.inode.cached_bytes == 0

        def _after_change(self, new: bytes) -> tuple[bytearray, list[Range]]:
            """What the inode must show once it followed ``new``, and the conflicting ranges.

            Every page holding a dirty byte is kept whole from the old view (clipped to the old
            size: past it the page shows the new version) and stays dirty; everything else is
            the new version, zeros past its end. The size is the new version's, or at least the
            end of the kept pages.
            """
            inode = self.inode
            assert inode is not None
            old = bytes(self.model)
            kept: list[Range] = []
            for r in inode.dirty_ranges():
                start, end = page_round_down(r.start), min(page_round_up(r.end), len(old))
                if kept and kept[-1].end >= start:
                    kept[-1] = Range(kept[-1].start, max(kept[-1].end, end))
                else:
                    kept.append(Range(start, end))
            size = max(len(new), kept[-1].end if kept else 0)
            view = bytearray(new[:size])
            view.extend(bytes(size - len(view)))
            for r in kept:
                view[r.start : r.end] = old[r.start : r.end]
            return view, kept

        def _changed_state(self) -> tuple[int, list[Range], list[Range]]:
            """What a revalidation changes: the size, the dirty and the cached ranges."""
            inode = self.inode
            assert inode is not None
            return inode.size, inode.dirty_ranges(), inode.cached_ranges()

        @precondition(lambda self: self.inode is not None)
        @rule(
            change=st.booleans(),
            offset=st.integers(0, MAX_FILE - 4 * P),
            data=st.binary(max_size=4 * P),
            size=st.none() | st.integers(0, MAX_FILE - 4 * P),
            refresh_fails=st.booleans(),
            cancel_at=st.none() | st.integers(1, 2),
        )
        def change_behind_and_revalidate(
            self,
            change: bool,
            offset: int,
            data: bytes,
            size: int | None,
            refresh_fails: bool,
            cancel_at: int | None,
        ) -> None:
            """Another writer rewrites bytes and size of the backing's file; then revalidate.

            Without ``change``, only the revalidation: nothing changed, so nothing may be
            dropped (the cache's own writes are not a change). With ``refresh_fails`` the store
            first cannot tell (the hook raises): nothing may change, and the next revalidation
            follows.

            Injected faults stay on: one drawn for the hook changes nothing, one drawn for the
            attribute or tail read after a successful hook leaves ``attributes_stale`` set; in
            either case a second revalidation, with faults off, must follow the change (the
            backing reports it once, so the second one follows it only if the inode remembers).
            """
            inode = self.inode
            changer = self.changer
            faults = self.faults
            assert inode is not None
            assert changer is not None
            assert faults is not None
            assert self.read_back is not None
            before = self._changed_state()
            new = b""
            if change:
                # Derived from what the backing holds, not from the model: dirty bytes the
                # cache has not written out are not there.
                backed = bytearray(self.portal.call(self.read_back))
                if size is not None:
                    del backed[size:]
                    backed.extend(bytes(size - len(backed)))
                if offset > len(backed):
                    backed.extend(bytes(offset - len(backed)))
                backed[offset : offset + len(data)] = data
                new = bytes(backed)
                self.portal.call(changer.change_behind, new)
            if refresh_fails:
                changer.refresh_error = OSError("store unreachable")
                status, value = self._run(inode.revalidate, cancel_at)
                note(f"revalidate with a failing hook -> {status} {value!r}")
                changer.refresh_error = None  # not consumed when an injected fault came first
                assert status == "error", (status, value)
                assert isinstance(value, BackingError), value
                assert not inode.attributes_stale, "the hook failed, yet a change is pending"
                assert self._changed_state() == before, "a failed revalidation changed state"
            status, value = self._run(inode.revalidate, cancel_at)
            stale = inode.attributes_stale
            if stale or status == "cancelled" or isinstance(value, BackingError):
                # An injected fault: at the hook (nothing changed), or at the attribute or tail
                # read after it (the change is seen, not followed, and remembered). A
                # cancellation may also have hidden either. The next revalidation, with faults
                # off, must follow what the backing reported, whether or not it reports it again.
                note(f"revalidate -> {status} {value!r}, stale={stale}")
                event(f"revalidate retried: {'stale' if stale else status}")
                if stale:
                    assert change, "stale without a change"
                    assert status != "ok", (status, value)
                    assert inode.size == before[0], "a change not followed moved the size"
                elif status == "error":
                    assert self._changed_state() == before, "a failed revalidation changed state"
                saved = (faults.error_rate, faults.short_io_rate)
                self._set_faults(0.0, 0.0)
                try:
                    retry = self._run(inode.revalidate, None)
                finally:
                    self._set_faults(*saved)
                assert not inode.attributes_stale, "a successful revalidation left it stale"
                # ("ok", False) after a cancelled call: that call had completed the follow.
                if retry != ("ok", False) or status != "cancelled":
                    status, value = retry
            note(
                f"change_behind({change}: {len(new)} bytes, +{len(data)} at {offset})"
                f" revalidate(cancel_at={cancel_at}) -> {status} {value!r}"
            )
            if not change:
                event(f"revalidate unchanged: {status}")
                if status != "cancelled":
                    assert (status, value) == ("ok", False), (status, value)
                assert self._changed_state() == before, "an unchanged file lost cached state"
                return
            view, kept = self._after_change(new)
            event(f"revalidate changed: {status}, {'conflict' if kept else 'no conflict'}")
            # A cancellation armed at the hook or the attribute read lands after them: the
            # revalidation completes all the same (it is shielded once the backing is asked).
            if status != "cancelled":
                if kept:
                    assert status == "error", (status, value)
                    assert isinstance(value, ConflictError), value
                    assert value.ranges == kept, (value.ranges, kept)
                else:
                    assert (status, value) == ("ok", True), (status, value)
            assert inode.dirty_ranges() == kept, "dirty pages dropped or invented by revalidate"
            self.model = view

        @precondition(lambda self: self.inode is not None)
        @rule(
            error_rate=st.sampled_from([0.0, 0.0, 0.1, 0.5]),
            short_io_rate=st.sampled_from([0.0, 0.3, 1.0]),
        )
        def set_faults(self, error_rate: float, short_io_rate: float) -> None:
            note(f"faults: error_rate={error_rate} short_io_rate={short_io_rate}")
            self._set_faults(error_rate, short_io_rate)

        # -- invariants ------------------------------------------------------------------------

        @precondition(lambda self: self.inode is not None)
        @rule()
        def eviction_pass(self) -> None:
            """One pass of the evictor, as the background task would run it."""
            store = self.store
            assert store is not None
            status, value = self._run(store.run_eviction_pass, None)
            note(f"eviction_pass -> {status} {value if status == 'ok' else ''}")

        @precondition(lambda self: self.inode is not None)
        @rule(everything=st.booleans(), cancel_at=st.none() | st.integers(1, 3))
        def flush_pass(self, everything: bool, cancel_at: int | None) -> None:
            """One pass of the flusher: expired dirty data (on the virtual clock), or all."""
            store = self.store
            assert store is not None
            status, _ = self._run(lambda: store.run_flush_pass(everything=everything), cancel_at)
            note(f"flush_pass(everything={everything}, cancel_at={cancel_at}) -> {status}")
            if status == "ok" and everything and self.faults and self.faults.error_rate == 0:
                assert store.dirty_bytes == 0

        @precondition(lambda self: self.inode is not None)
        @rule(seconds=st.sampled_from([0.5, 2.0, 6.0]))
        def advance_clock(self, seconds: float) -> None:
            """Move the virtual clock that dirty-data ages are measured on."""
            self.now += seconds
            note(f"clock +{seconds} -> {self.now}")

        # -- invariants ------------------------------------------------------------------------

        def _check_in_loop(self) -> None:
            """The invariants, run synchronously in the event loop (nothing interleaves)."""
            inode = self.inode
            store = self.store
            assert inode is not None
            assert store is not None
            assert not inode._inflight, "background I/O still in flight after the rule"
            assert inode.size == len(self.model), (inode.size, len(self.model))
            assert inode.attrs.mode == self.model_mode
            pool = store._pool
            for s, e, fr in inode._cache.segments():
                got = bytes(pool.view(fr, e - s))
                want = bytes(self.model[s:e]).ljust(e - s, b"\0")
                assert got == want, f"cached [{s}, {e}) differs from the model"
            assert inode.mapped_bytes == 0
            assert not inode._pins
            store._check_invariants()
            assert store.usage <= store.memory_limit, (store.usage, store.memory_limit)

        @invariant()
        def matches_model(self) -> None:
            if self.inode is None or self.store is None:
                return
            self.steps += 1
            self.portal.call(self._check_in_loop)

    InodeMachine.__name__ = f"InodeMachine_{backend}_{'wb' if write_back else 'wt'}"
    return InodeMachine
