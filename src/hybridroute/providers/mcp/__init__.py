"""MCP route: tools/call over the official MCP SDK (stdio or streamable HTTP).

The SDK is imported only inside this package (`import mcp` would otherwise read as this package).
"""

from hybridroute.providers.mcp.route import McpRoute

__all__ = ["McpRoute"]
