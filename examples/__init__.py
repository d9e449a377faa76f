"""Runnable examples of aiocache_inode.

- ``python -m examples.demo``: one real file through a 4 MiB cache, narrated step by step; what
  ``make run`` runs until the S3 gateway (``examples.object_store_gateway``) exists.
"""
