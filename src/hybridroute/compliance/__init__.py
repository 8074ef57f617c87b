"""GDPR tooling: PII redaction, data-subject pseudonyms and erasure, residency reports."""
