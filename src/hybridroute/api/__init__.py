"""The data plane over HTTP: the OpenAI-compatible chat endpoint, health, readiness, models."""

from hybridroute.api.app import DataPlane

__all__ = ["DataPlane"]
