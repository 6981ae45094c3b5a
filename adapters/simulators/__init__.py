"""Faithful local service-desk servers for tests, the demo and the benchmarks."""
