"""Measured comparisons (``make bench``): each module prints a table and writes
``benchmarks/results/<name>.json``; :mod:`benchmarks.run_all` writes ``benchmarks/RESULTS.md``."""
