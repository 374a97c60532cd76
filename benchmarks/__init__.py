"""Benchmark suite: inference speed, end-to-end pipeline sweeps and overload, face detection cost.

Run from a source checkout with ``python -m benchmarks <inference|pipeline|cameras|detection|report|all>``
(``--help`` lists them; the product's CLI has no benchmarks) or ``python -m benchmarks.<name>``;
each prints tables and writes JSON under ``benchmarks/results/``.
See BENCHMARKS.md for the latest figures.
"""
