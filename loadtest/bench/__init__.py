"""Benchmarks of cps_limiter and the dialer, side by side with what users would use instead.

``python -m loadtest.bench`` (``make bench``) starts its own redis-server on a free port and a
worker stub, then runs every comparison in one go. Within a comparison the contenders take turns
round by round (the order rotating each round), so that a noisy neighbour slows all of them
alike; each figure is the median of the rounds, and each ratio is the median of the per-round
ratios against the baseline measured in the same round. It prints a table and the targets with
PASS/MISS, and writes ``loadtest/results/bench.json`` and ``bench.md``.

The parts: ``_measure`` takes the samples, ``_limiters`` and ``_processes`` set up the
comparisons (the latter through the probe children of ``_probes``), ``_scale`` the ones that
decide how far a shared limit scales: Redis CPU per decision (``_server`` reads it from INFO)
and the saturation of one Redis by several client processes (``_hammer``), both over the
contenders of ``_contenders``; ``_targets`` holds the results against the issue's targets,
``_report`` writes them down.
"""
