"""The flag store: one place that holds the five feature flags for a deployment.

Every decision reads `current()`, so a change takes effect on the next request without a restart.
`InMemoryFlagStore` starts from the config's initial values; durable stores implement the same
protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from hybridroute.signals import Flag, FlagState

__all__ = ["FlagStore", "InMemoryFlagStore"]

_FIELD_OF = {
    Flag.BEDROCK_SUPPORT_MODE: "bedrock_support_mode",
    Flag.INTELLIGENT_ROUTING: "intelligent_routing",
    Flag.DIRECT_BEDROCK_FALLBACK: "direct_bedrock_fallback",
    Flag.HYBRID_HEALTH_MONITORING: "hybrid_health_monitoring",
    Flag.PERFORMANCE_OPTIMIZATION: "performance_optimization",
}


class FlagStore(Protocol):
    """Holds the current flag state."""

    def current(self) -> FlagState:
        """The flags as they are now (cheap: called once per decision)."""
        ...

    def set(self, flag: Flag, enabled: bool) -> FlagState:
        """Change one flag; returns the new state."""
        ...

    def disable_all(self) -> FlagState:
        """Turn all five flags off (the emergency rollback to MCP-only routing)."""
        ...


class InMemoryFlagStore:
    """Flags held in process memory, starting from the configured initial values."""

    __slots__ = ("_state",)

    def __init__(self, initial: FlagState) -> None:
        self._state = initial

    def current(self) -> FlagState:
        return self._state

    def set(self, flag: Flag, enabled: bool) -> FlagState:
        self._state = dataclasses.replace(self._state, **{_FIELD_OF[flag]: enabled})
        return self._state

    def disable_all(self) -> FlagState:
        self._state = FlagState.all_off()
        return self._state

    def __repr__(self) -> str:
        off = [name for name, on in self._state.as_mapping().items() if not on]
        return f"<InMemoryFlagStore off={off or 'none'}>"
