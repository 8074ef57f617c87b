"""hybridroute: a production AI routing gateway (Direct Bedrock and MCP routes)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
