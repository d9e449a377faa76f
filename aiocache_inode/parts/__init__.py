"""The parts of a caching inode, each named after its concern (see ``core.py`` for the seam).

Internal: :class:`~aiocache_inode.inode.CachingInode` composes them; nothing else imports them.
Bottom up: ``hostmap`` (standalone), ``core`` (the shared fields), then ``fills``, ``runs``,
``attributes``; ``writes`` and ``views`` call ``fills``, ``drops`` calls ``runs``.
"""

# Nothing is re-exported: each part is imported from its own module, by inode.py alone.
__all__: list[str] = []
