"""Benchmark suite: inference speed, end-to-end pipeline sweeps and overload, face detection cost.

Run from a source checkout with ``fer-pipeline bench <inference|pipeline|detection>`` or
``python -m benchmarks.<name>``; each prints tables and writes JSON under ``benchmarks/results/``.
See BENCHMARKS.md for the latest figures.
"""
