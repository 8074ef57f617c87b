"""The audit trail: one append-only, hash-chained log of what the gateway decided and what
operators did."""
