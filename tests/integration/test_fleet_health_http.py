"""Two replicas sharing route health through Redis: a route one replica sees failing (its
breaker held open) is stepped around by the other within a few seconds, and counts no more once
the first replica sees it healthy again."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx

from tests.loopback import REDIS_URL, GatewayFactory, RunningGateway, wait_for

CHAT = {"model": "default", "messages": [{"role": "user", "content": "Is the cluster healthy?"}]}


def served_by(gateway: RunningGateway) -> str:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=CHAT,
        headers={"x-operation-type": "infrastructure"},  # direct_bedrock, fallback mcp
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.headers["x-hybridroute-route"])


def test_a_route_failing_on_one_replica_is_avoided_by_the_other(
    redis_prefix: str, start_gateway: GatewayFactory
) -> None:
    def fleet(name: str) -> Any:
        def change(data: dict[str, Any]) -> None:
            data["fleet"] = {
                "redis_url": REDIS_URL,
                "redis_prefix": redis_prefix,
                "replica_id": name,
            }

        return change

    first, second = start_gateway(fleet("replica-a")), start_gateway(fleet("replica-b"))
    assert served_by(second) == "direct_bedrock"
    held = httpx.post(
        first.url + "/admin/health/circuit-breakers/direct_bedrock/force-open",
        json={"reason": "5xx burst"},
        timeout=10,
    )
    assert held.status_code == 200, held.text
    wait_for(lambda: served_by(second) == "mcp", timeout=5)
    health = second.runtime.health.route_health("direct_bedrock")
    assert "unhealthy on replica replica-a" in health.detail
    assert second.runtime.breakers["direct_bedrock"].state.value == "closed"  # its own is fine

    reset = httpx.post(
        first.url + "/admin/health/circuit-breakers/direct_bedrock/reset", json={}, timeout=10
    )
    assert reset.status_code == 200
    wait_for(lambda: served_by(second) == "direct_bedrock", timeout=5)
