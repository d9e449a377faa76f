"""Attribute operations, and the ones that change the size: truncate, allocate, revalidate.

Every setter writes through to the backing first (shielded once sent) and changes the cache only
if the backing accepted it; times a write touches are kept pending (``_pending_mc``) and applied
when the attributes are next read.
"""

from __future__ import annotations

from typing import Final, final

import anyio
import anyio.lowlevel

from ..attrs import AttrMask, Attrs, TimeSpec
from ..backing.base import Revalidating
from ..errors import BackingError, ConflictError
from ..ranges import MAX_OFFSET, PAGE_MASK, Range, page_round_down, page_round_up
from .core import A_SIZE, A_USAGE, FILL, InodeCore, kill_suid

__all__ = ["Attributes"]

#: Attributes a revalidation keeps from the cache while they are dirty (size and usage follow
#: the backing, see revalidate).
_KEPT: Final = tuple(
    (flag.value, name)
    for flag, name in (
        (AttrMask.MODE, "mode"),
        (AttrMask.UID, "uid"),
        (AttrMask.GID, "gid"),
        (AttrMask.ATIME, "atime"),
        (AttrMask.MTIME, "mtime"),
        (AttrMask.CTIME, "ctime"),
    )
)


@final
class Attributes:
    """The attribute, size and revalidation operations of one inode."""

    __slots__ = ("_ino", "_stale")

    def __init__(self, inode: InodeCore) -> None:
        # The inode served, whose shared state (core.py) this part works on, and the parts
        # it calls. Immutable after __init__.
        self._ino = inode
        # The backing reported a change that the cache has not followed yet: the attribute
        # read (or the kept tail's read) after it failed. The backing reports a change once,
        # so the next revalidation follows it whatever the backing answers then.
        # Protected by: _attr_lock (written under it, with _map_lock and the data lock).
        self._stale = False

    @property
    def stale(self) -> bool:
        """Whether a change the backing reported is not yet followed (see revalidate)."""
        return self._stale

    async def set_permissions(self, mode: int) -> bool:
        """The body of :meth:`CachingInode.set_permissions`, which states the contract."""
        ino = self._ino
        if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ValueError(f"mode {mode!r} is not a permission mask")
        async with ino._attr_lock:
            ino._check_open()
            try:
                await ino._set_through_locked(AttrMask.MODE, ino.attrs.with_(mode=mode), False)
            except Exception:
                return False
            ino._attrs = ino.attrs.with_(mode=mode)
            ino._set_times_locked(ctime=ino._svc.clock())
            return True

    async def set_owner(self, uid: int | None = None, gid: int | None = None) -> None:
        """The body of :meth:`CachingInode.set_owner`, which states the contract."""
        ino = self._ino
        for v in (uid, gid):
            if v is not None and (not isinstance(v, int) or v < 0):
                raise ValueError(f"invalid id {v!r}")
        if uid is None and gid is None:
            await anyio.lowlevel.checkpoint()
            return
        async with ino._attr_lock:
            ino._check_open()
            mask = AttrMask.NONE
            changes: dict[str, int] = {}
            if uid is not None:
                mask |= AttrMask.UID
                changes["uid"] = uid
            if gid is not None:
                mask |= AttrMask.GID
                changes["gid"] = gid
            try:
                await ino._set_through_locked(mask, ino.attrs.with_(**changes), False)
            except Exception as exc:
                raise BackingError(f"set_owner failed: {exc}") from exc
            ino._attrs = ino.attrs.with_(**changes)
            ino._set_times_locked(ctime=ino._svc.clock())

    async def set_timestamps(self, atime: TimeSpec, mtime: TimeSpec) -> None:
        """The body of :meth:`CachingInode.set_timestamps`, which states the contract."""
        ino = self._ino
        if not isinstance(atime, TimeSpec) or not isinstance(mtime, TimeSpec):
            raise TypeError("set_timestamps takes TimeSpec values")
        if atime.omitted and mtime.omitted:
            await anyio.lowlevel.checkpoint()
            return
        async with ino._attr_lock:
            ino._check_open()
            clock = ino._svc.clock
            now = clock()
            mask = AttrMask.NONE
            changes: dict[str, int] = {}
            if not atime.omitted:
                mask |= AttrMask.ATIME
                changes["atime"] = now if atime.use_now else atime.resolve(clock)
            if not mtime.omitted:
                mask |= AttrMask.MTIME
                changes["mtime"] = now if mtime.use_now else mtime.resolve(clock)
            try:
                await ino._set_through_locked(mask, ino.attrs.with_(**changes), True)
            except Exception as exc:
                raise BackingError(f"set_timestamps failed: {exc}") from exc
            ino._attrs = ino.attrs.with_(**changes)
            ino._dirty_attr &= ~mask.value
            ino._set_times_locked(ctime=now)

    async def inc_links(self) -> None:
        """The body of :meth:`CachingInode.inc_links`, which states the contract."""
        ino = self._ino
        async with ino._attr_lock:
            ino._check_open()
            ino._attrs = ino.attrs.with_(links=ino._attrs.links + 1)
            ino._set_times_locked(ctime=ino._svc.clock())

    async def dec_links(self) -> None:
        """The body of :meth:`CachingInode.dec_links`, which states the contract."""
        ino = self._ino
        async with ino._attr_lock:
            ino._check_open()
            if ino._attrs.links == 0:
                raise ValueError("link count is already 0")
            ino._attrs = ino.attrs.with_(links=ino._attrs.links - 1)
            ino._set_times_locked(ctime=ino._svc.clock())

    async def touch_access_time(self) -> None:
        """The body of :meth:`CachingInode.touch_access_time`, which states the contract."""
        ino = self._ino
        async with ino._attr_lock:
            ino._check_open()
            if not ino._svc.noatime:
                ino._set_times_locked(atime=ino._svc.clock())

    async def touch_modification_and_status_change_time(self) -> None:
        """The body of ``CachingInode.touch_modification_and_status_change_time``."""
        ino = self._ino
        async with ino._attr_lock:
            ino._check_open()
            now = ino._svc.clock()
            ino._set_times_locked(mtime=now, ctime=now)

    async def truncate(self, size: int) -> None:
        """The body of :meth:`CachingInode.truncate`, which states the contract."""
        ino = self._ino
        if not isinstance(size, int) or size < 0 or size > MAX_OFFSET:
            raise ValueError(f"invalid size {size!r}")
        async with ino._attr_lock:
            ino._check_open()
            if size >= ino._size:
                await self.truncate_locked(size)
                return
            # Shrinking: from before the backing call until the cache is cut, fills may see the
            # backing's new EOF while the cached size is the old one (see _resizing).
            resizing = ino._resizing = anyio.Event()
            for _s, _e, op in ino._inflight.overlapping(0, MAX_OFFSET):
                if op.kind == FILL:
                    op.invalid = True
            try:
                await self.truncate_locked(size)
            finally:
                ino._resizing = None
                resizing.set()

    async def truncate_locked(self, size: int) -> None:
        """The body of :meth:`truncate`. Requires: _attr_lock held."""
        ino = self._ino
        async with ino._data_lock.write_locked():
            with anyio.CancelScope(shield=True):
                a = ino.attrs
                mask = AttrMask.SIZE
                new_mode = kill_suid(a.mode)
                if new_mode != a.mode:
                    mask |= AttrMask.MODE
                try:
                    await ino._set_through_locked(mask, a.with_(size=size, mode=new_mode), False)
                except Exception as exc:
                    raise BackingError(f"truncate to {size} failed: {exc}") from exc
                old = ino._size
                ino._size = size
                ino._dirty_attr &= ~A_SIZE
                ino._attrs = ino.attrs.with_(size=size, mode=new_mode)
                now = ino._svc.clock()
                ino._set_times_locked(mtime=now, ctime=now)
                if size < old:
                    for _s, _e, op in ino._inflight.overlapping(size, MAX_OFFSET):
                        op.invalid = True
        if size >= old:
            return
        with anyio.CancelScope(shield=True):
            new_end, old_end = page_round_up(size), page_round_up(old)
            if new_end != old_end:
                async with ino._map_lock:
                    ino._maps.invalidate(Range(new_end, old_end), True)
            async with ino._data_lock.write_locked():
                self.truncate_cache_locked(size, old_end)

    def truncate_cache_locked(self, size: int, old_end: int) -> None:
        """Drop pages past ``size``, zero its partial page, discard dirty data past it.

        Requires: _data_lock held exclusively.
        """
        ino = self._ino
        ino._release_append()
        new_end = page_round_up(size)
        freed = ino._cache.truncate_pages(new_end)
        dropped = sum(length for _o, length in freed)
        for off, length in freed:
            ino._free_extent(off, length)
        if size & PAGE_MASK:
            seg = ino._cache.find(size)
            if seg is not None:
                s, _e, fr = seg
                ino._svc.pool.fill_zero(fr + size - s, new_end - size)
        ino._dirty.keep_clean(size, max(old_end, size))
        ino._count_dropped(new_end, MAX_OFFSET, dropped, "truncate")
        ino._report()

    async def allocate(self, offset: int, length: int) -> None:
        """The body of :meth:`CachingInode.allocate`, which states the contract."""
        ino = self._ino
        if offset < 0 or length <= 0 or offset + length > MAX_OFFSET:
            raise ValueError(f"invalid allocation [{offset}, +{length})")
        async with ino._attr_lock:
            ino._check_open()
            if offset + length <= ino._size:
                await anyio.lowlevel.checkpoint()
                return
            async with ino._data_lock.write_locked():
                with anyio.CancelScope(shield=True):
                    try:
                        await ino._backing.allocate(offset, length)
                    except Exception as exc:
                        raise BackingError(f"allocate failed: {exc}") from exc
                    ino._size = max(ino._size, offset + length)
                    now = ino._svc.clock()
                    ino._set_times_locked(mtime=now, ctime=now)

    async def revalidate(self) -> bool:
        """The body of :meth:`CachingInode.revalidate`, which states the contract."""
        ino = self._ino
        ino._check_open()
        backing = ino._backing
        if not isinstance(backing, Revalidating):
            await anyio.lowlevel.checkpoint()
            return False
        async with ino._attr_lock, ino._map_lock:
            ino._check_open()
            async with ino._data_lock.write_locked():
                with anyio.CancelScope(shield=True):
                    try:
                        changed = await backing.refresh()
                    except Exception as exc:
                        raise BackingError(f"revalidation failed: {exc}") from exc
                    if not changed and not self._stale:
                        return False
                    # The backing reports a change once: from here until the cache has
                    # followed it, a failure must leave a mark that the next call follows.
                    self._stale = True
                    fresh: Attrs | None = None
                    tail = b""
                    failure: Exception | None = None
                    try:
                        fresh = await backing.get_attributes()
                        tail = await self._read_kept_tail_locked(fresh.size)
                    except Exception as exc:
                        failure = exc
                    ino._maps.invalidate_all(False)
                    self.follow_change_locked(None if failure is not None else fresh, tail)
                    if failure is None:
                        self._stale = False
        if failure is not None:
            kept = f", {ino._dirty.total()} dirty bytes kept" if ino._dirty else ""
            raise BackingError(
                "the file changed behind the cache, but reading the new version failed:"
                f" {failure}; its clean pages are dropped{kept}, and the size and attributes"
                " stay the old ones until a revalidation succeeds"
            ) from failure
        if ino._dirty:
            ranges = ino.dirty_ranges()
            raise ConflictError(
                f"the file changed behind the cache with {ino._dirty.total()} bytes dirty in"
                f" {len(ranges)} ranges; they are kept",
                ranges,
            )
        return True

    async def _read_kept_tail_locked(self, new_size: int) -> bytes:
        """The new version's bytes past the cached size in a kept last page, read from it.

        A page holding dirty bytes is kept whole through a revalidation, but past the cached
        size it holds only zeros (no version the cache followed had bytes there). When the new
        version is longer, those bytes are its own: they are read here, to be copied in clean.
        Nothing to read when the size is page-aligned, the new version is not longer, or the
        last page is clean (then it is dropped whole and read again on demand). At most one
        page; a zero count is EOF (the rest stays zero), never a loop.

        Checkpoint: yes, when there is something to read.
        Cancellation: nothing changed (the caller shields it).
        Requires: _attr_lock and _map_lock held, _data_lock held exclusively.

        Raises:
            Exception: whatever the backing's read raises.
        """
        ino = self._ino
        size = ino._size
        last = page_round_down(size)
        end = min(page_round_up(size), new_size)
        if end <= size or last == size or not ino._dirty.covered_bytes(last, size):
            return b""
        buf = bytearray(end - size)
        view = memoryview(buf)
        done = 0
        while done < len(buf):
            got = await ino._backing_read(size + done, [view[done:]])
            if got <= 0:
                break
            done += got
        return bytes(buf)

    def follow_change_locked(self, fresh: Attrs | None, tail: bytes = b"") -> None:
        """Drop the clean pages of a changed file and adopt ``fresh`` attributes (if known).

        ``tail`` is what :meth:`_read_kept_tail_locked` read for ``fresh``: the new version's
        bytes from the cached size to the end of a kept last page (or to its own end).
        Requires: _attr_lock and _map_lock held, mappings invalidated, _data_lock held
        exclusively (so no write-back is in flight: every unsaved byte is in the dirty set).
        Complexity: O(n + k); n cached segments, k dirty ones.
        """
        ino = self._ino
        assert ino._data_lock.writer_active
        for _s, _e, op in ino._inflight.segments():
            if op.kind == FILL:
                op.invalid = True
        ino._release_append()
        # Dirty ranges are byte-granular, but a page with any dirty byte stays whole: its clean
        # bytes (from the old version) become dirty with it, so that after a write_out the
        # backing holds exactly what reads return. The rejected alternative, refilling them
        # from the new version, is I/O under the exclusive data lock for a state the caller
        # is about to resolve anyway. Clipped to the old size: past it the page holds zeros
        # that no version had, and marking them dirty would write zeros the user never wrote
        # over the new version's bytes; ``tail`` replaces them instead (clean, see below).
        for ds, de, _keep in list(ino._dirty.segments()):
            ino._dirty.mark_dirty(page_round_down(ds), min(page_round_up(de), ino._size))
        freed = 0
        for s, e, _fr in list(ino._cache.segments()):
            for gs, ge in list(ino._dirty.gaps(s, e)):
                ps, pe = page_round_up(gs), page_round_down(ge)
                if ps < pe:
                    for off, length in ino._cache.drop(ps, pe):
                        ino._free_extent(off, length)
                        freed += length
        if freed:
            ino._count_dropped(0, MAX_OFFSET, freed, "revalidate")
        if fresh is not None:
            if tail:
                # The kept last page, still cached (it holds dirty bytes): the new version's
                # bytes past the old end, clean, where the cache held zeros.
                found = ino._cache.pool_offset(ino._size)
                assert found is not None, "a kept page is cached"
                ino._svc.pool.view(found[2], len(tail))[:] = tail
            local = ino.attrs  # applies pending write times first
            keep = {name: getattr(local, name) for bit, name in _KEPT if ino._dirty_attr & bit}
            dirty_end = max((e for _s, e, _keep in ino._dirty.segments()), default=0)
            size = max(fresh.size, dirty_end)
            ino._attrs = fresh.with_(size=size, **keep)
            ino._size = size
            ino._pending_usage = 0
            ino._dirty_attr &= ~(A_SIZE | A_USAGE)
            if size != fresh.size:
                ino._dirty_attr |= A_SIZE
        ino._report()
