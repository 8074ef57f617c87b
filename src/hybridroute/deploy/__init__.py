"""Deployment validation: `hybridroute deploy check` — smoke tests against the configured,
running routes, integration tests of the gateway's systems, environment gates, and the
deployment report in the original deployment report's format (Markdown) plus JSON."""
