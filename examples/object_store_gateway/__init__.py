"""An S3-compatible object-store gateway that serves objects through aiocache_inode."""
