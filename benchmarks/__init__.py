"""Benchmarks: never collected by pytest; each script prints ratios against named baselines.

Run one with ``python -m benchmarks.<name>``; results are kept in ``benchmarks/results/`` with the
machine and versions they were measured on.
"""
