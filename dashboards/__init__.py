"""The Grafana dashboard for aiocache_inode: ``build.py`` generates ``aiocache_inode.json``."""
