"""The embedded default configuration: the seed's matrix over the two local simulators.

`hybridroute demo` fills in the simulators' loopback URLs once they listen. The Direct Bedrock
route signs with the simulator's public demo key (the simulator verifies the SigV4 signature with
it); the MCP route speaks streamable HTTP to the MCP simulator's `generate` tool. Prices are
Bedrock's public list prices for the demo model (per 1,000 tokens) and a cheaper model behind
the MCP server; a global budget shows utilisation; spend is kept in SQLite under the data
directory (`data/` unless `hybridroute demo --data-dir` says otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridroute.config.load import parse_config
from hybridroute.config.schema import GatewayConfig
from hybridroute.simulators.bedrock import DEMO_ACCESS_KEY_ID, DEMO_SECRET_ACCESS_KEY

__all__ = [
    "DEMO_DATA_DIR",
    "DEMO_MODEL_ID",
    "DEMO_REGION",
    "DEMO_STORE_FILE",
    "embedded_config",
    "embedded_config_data",
]

DEMO_REGION = "eu-central-1"
DEMO_MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
DEMO_DATA_DIR = "data"
DEMO_STORE_FILE = "demo.sqlite3"


def embedded_config_data(
    *, bedrock_url: str, mcp_url: str, port: int = 8080, data_dir: str = DEMO_DATA_DIR
) -> dict[str, Any]:
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
        "pricing": {
            "currency": "USD",
            "routes": {
                "direct_bedrock": {"input_per_1k": "0.003", "output_per_1k": "0.015"},
                "mcp": {"input_per_1k": "0.00025", "output_per_1k": "0.00125"},
            },
        },
        "budgets": {"global": {"daily": "10.00", "monthly": "200.00"}},
        "storage": {"backend": "sqlite", "sqlite_path": str(Path(data_dir, DEMO_STORE_FILE))},
    }


def embedded_config(
    *, bedrock_url: str, mcp_url: str, port: int = 8080, data_dir: str = DEMO_DATA_DIR
) -> GatewayConfig:
    """The embedded default, validated like any other configuration."""
    return parse_config(
        embedded_config_data(
            bedrock_url=bedrock_url, mcp_url=mcp_url, port=port, data_dir=data_dir
        ),
        source="embedded default configuration",
    )
