"""Test doubles that are part of the product: the demo and the benchmarks use them too."""
