"""Benchmarks (``python -m loadtest.bench``) and Locust load tests (``python -m loadtest.run``).

Run from the repository root: both start their own ``redis-server`` (through
``loadtest.servers``) and worker stub, and write their reports to ``loadtest/results/``.
"""
