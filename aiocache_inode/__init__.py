"""aiocache_inode: caching inodes over one byte-budgeted memory pool, on anyio."""
