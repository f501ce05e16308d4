"""Benchmarks: throughput and labeling quality, reported in BENCHMARKS.md."""
