"""Routing: the matrix, the flag store and the pure decision policy.

Nothing here performs I/O. The executor (in `gateway`) carries decisions out.
"""
