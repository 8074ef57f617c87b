"""The decision policy's throughput in process: `python -m bench.policy` prints decisions/s."""

from __future__ import annotations

import sys
import time

from hybridroute.config.load import parse_config
from hybridroute.routing.matrix import RoutingMatrix, Topology
from hybridroute.routing.policy import decide
from hybridroute.signals import FlagState

__all__ = ["decisions_per_second"]

_ROUTES = {
    "direct_bedrock": {"type": "bedrock", "region": "eu-central-1", "model_id": "m"},
    "mcp": {"type": "mcp", "transport": "stdio", "command": ["server"], "region": "eu-central-1"},
}


def decisions_per_second(count: int = 200_000, rounds: int = 3) -> float:
    """The best of `rounds` timed runs of `count` decisions over the default matrix's rows."""
    config = parse_config({"routes": _ROUTES})
    matrix, topology = RoutingMatrix.from_config(config), Topology.from_config(config)
    rules = list(matrix.rules.values())
    flags = FlagState()
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(count):
            decide(
                rules[i % len(rules)],
                topology=topology,
                health={},
                flags=flags,
                now=1.0,
                decision_id="dec",
            )
        best = max(best, count / (time.perf_counter() - started))
    return best


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print(f"{decisions_per_second(count):.0f}")
