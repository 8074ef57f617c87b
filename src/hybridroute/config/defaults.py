"""The seed's defaults: the 7-row routing matrix, per-operation model parameters, region sets.

These are plain data. `schema.py` uses them as field defaults, and `docs/configuration.md`
documents the same values.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_FLAGS",
    "DEFAULT_MATRIX",
    "DEFAULT_OPERATION_PARAMS",
    "DEFAULT_REGION_SETS",
    "EU_REGIONS",
    "FLAG_NAMES",
]

DEFAULT_MATRIX: dict[str, dict[str, Any]] = {
    "emergency": {
        "priority": "critical",
        "latency_budget_ms": 5_000,
        "primary": "direct_bedrock",
        "fallback": None,
    },
    "infrastructure": {
        "priority": "critical",
        "latency_budget_ms": 10_000,
        "primary": "direct_bedrock",
        "fallback": "mcp",
    },
    "meta_monitor": {
        "priority": "high",
        "latency_budget_ms": 15_000,
        "primary": "direct_bedrock",
        "fallback": "mcp",
    },
    "implementation": {
        "priority": "high",
        "latency_budget_ms": 15_000,
        "primary": "direct_bedrock",
        "fallback": "mcp",
    },
    "kiro_communication": {
        "priority": "medium",
        "latency_budget_ms": 30_000,
        "primary": "mcp",
        "fallback": "direct_bedrock",
    },
    "standard": {
        "priority": "medium",
        "latency_budget_ms": 30_000,
        "primary": "mcp",
        "fallback": "direct_bedrock",
    },
    "background": {
        "priority": "low",
        "latency_budget_ms": 60_000,
        "primary": "mcp",
        "fallback": "direct_bedrock",
    },
}

DEFAULT_OPERATION_PARAMS: dict[str, dict[str, Any]] = {
    "emergency": {
        "temperature": 0.1,
        "max_tokens": 1024,
        "system_prompt": (
            "You are assisting with a production emergency. Answer with the most likely cause "
            "and the first safe action. Be brief and precise."
        ),
    },
    "infrastructure": {
        "temperature": 0.2,
        "max_tokens": 2048,
        "system_prompt": (
            "You are an infrastructure engineer. Give concrete, verifiable steps and name the "
            "risk of each."
        ),
    },
    "meta_monitor": {
        "temperature": 0.3,
        "max_tokens": 2048,
        "system_prompt": (
            "You analyse monitoring data about an AI system. Point out anomalies and trends "
            "with the evidence for each."
        ),
    },
    "implementation": {
        "temperature": 0.4,
        "max_tokens": 4096,
        "system_prompt": "You are a senior software engineer. Prefer small, tested changes.",
    },
    "kiro_communication": {"temperature": 0.5, "max_tokens": 2048},
    "standard": {"temperature": 0.7, "max_tokens": 4096},
    "background": {"temperature": 0.7, "max_tokens": 4096},
}

EU_REGIONS: tuple[str, ...] = (
    "eu-central-1",  # Frankfurt
    "eu-north-1",  # Stockholm
    "eu-south-1",  # Milan
    "eu-south-2",  # Spain
    "eu-west-1",  # Ireland
    "eu-west-3",  # Paris
)
"""AWS regions inside the European Union. Not eu-west-2 (London) or eu-central-2 (Zurich):
the United Kingdom and Switzerland are not EU member states."""

DEFAULT_REGION_SETS: dict[str, tuple[str, ...]] = {"eu": EU_REGIONS}

FLAG_NAMES: tuple[str, ...] = (
    "ENABLE_BEDROCK_SUPPORT_MODE",
    "ENABLE_INTELLIGENT_ROUTING",
    "ENABLE_DIRECT_BEDROCK_FALLBACK",
    "ENABLE_HYBRID_HEALTH_MONITORING",
    "ENABLE_PERFORMANCE_OPTIMIZATION",
)

DEFAULT_FLAGS: dict[str, bool] = dict.fromkeys(FLAG_NAMES, True)
"""The seed's production flag set: all five on."""
