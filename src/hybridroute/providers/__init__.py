"""Route clients (providers): one package per upstream kind, and the factory that builds them.

Each route maps its library's exceptions to the gateway's typed errors at its own boundary.
"""

from __future__ import annotations

from hybridroute._clock import Clock
from hybridroute._tasks import TaskSupervisor
from hybridroute.config.schema import BedrockRouteConfig, RouteConfig
from hybridroute.providers.base import Route
from hybridroute.providers.bedrock import DirectBedrockRoute
from hybridroute.providers.mcp import McpRoute
from hybridroute.types import RouteId

__all__ = ["Route", "build_route"]


def build_route(
    route_id: RouteId, config: RouteConfig, *, clock: Clock, supervisor: TaskSupervisor
) -> Route:
    """The route client for one configured route (not started yet)."""
    if isinstance(config, BedrockRouteConfig):
        return DirectBedrockRoute(route_id, config)
    return McpRoute(route_id, config, clock=clock, supervisor=supervisor)
