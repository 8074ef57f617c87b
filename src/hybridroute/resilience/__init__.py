"""Resilience: circuit breakers and the health view built from them."""
