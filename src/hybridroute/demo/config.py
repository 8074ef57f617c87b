"""The embedded default configuration: the seed's matrix over the two local simulators.

`hybridroute demo` fills in the simulators' loopback URLs once they listen. The Direct Bedrock
route signs with the simulator's public demo key (the simulator verifies the SigV4 signature with
it); the MCP route speaks streamable HTTP to the MCP simulator's `generate` tool.
"""

from __future__ import annotations

from typing import Any

from hybridroute.config.load import parse_config
from hybridroute.config.schema import GatewayConfig
from hybridroute.simulators.bedrock import DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY

__all__ = ["DEMO_MODEL_ID", "DEMO_REGION", "embedded_config", "embedded_config_data"]

DEMO_REGION = "eu-central-1"
DEMO_MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def embedded_config_data(*, bedrock_url: str, mcp_url: str, port: int = 8080) -> dict[str, Any]:
    """The embedded default as plain data (what a YAML file for it would say)."""
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "routes": {
            "direct_bedrock": {
                "type": "bedrock",
                "region": DEMO_REGION,
                "model_id": DEMO_MODEL_ID,
                "endpoint_url": bedrock_url,
                "credentials": {
                    "source": "static",
                    "access_key_id": DEMO_ACCESS_KEY_ID,
                    "secret_access_key": DEMO_SECRET_ACCESS_KEY,
                },
            },
            "mcp": {
                "type": "mcp",
                "transport": "streamable_http",
                "url": mcp_url,
                "tool": "generate",
                "region": DEMO_REGION,
            },
        },
    }


def embedded_config(*, bedrock_url: str, mcp_url: str, port: int = 8080) -> GatewayConfig:
    """The embedded default, validated like any other configuration."""
    return parse_config(
        embedded_config_data(bedrock_url=bedrock_url, mcp_url=mcp_url, port=port),
        source="embedded default configuration",
    )
