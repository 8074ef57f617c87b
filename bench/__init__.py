"""Benchmark tooling for measuring gateway overhead: a fast upstream, load tools and payloads."""
