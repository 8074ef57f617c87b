"""Tests of the benchmark tools (upstream, payloads, load generators)."""
