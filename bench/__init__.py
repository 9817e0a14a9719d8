"""The benchmark: ``python -m bench --images 100000 --products 20000 --latency-ms 20`` (see bench/README.md)."""
