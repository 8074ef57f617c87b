"""Two replicas sharing the response cache in Redis: an answer one produced is a hit on the
other, an invalidation through either reaches both, and residency still scopes the entries."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx

from tests.loopback import REDIS_URL, GatewayFactory, RunningGateway, Simulator

CHAT = {"model": "default", "messages": [{"role": "user", "content": "Any anomalies overnight?"}]}


def ask(gateway: RunningGateway, **headers: str) -> httpx.Response:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=CHAT,
        headers={"x-operation-type": "meta_monitor", **headers},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def test_replicas_share_answers_and_invalidations(
    redis_prefix: str, start_gateway: GatewayFactory, bedrock_sim: Simulator
) -> None:
    def shared(data: dict[str, Any]) -> None:
        data["cache"] = {"enabled": True, "redis_url": REDIS_URL, "redis_prefix": redis_prefix}

    first, second = start_gateway(shared), start_gateway(shared)
    produced = ask(first)
    assert produced.headers["x-hybridroute-cache"] == "miss"
    calls = bedrock_sim.requests()
    hit = ask(second)
    assert hit.headers["x-hybridroute-cache"] == "hit"
    assert (
        hit.json()["choices"][0]["message"]["content"]
        == (produced.json()["choices"][0]["message"]["content"])
    )
    assert bedrock_sim.requests() == calls  # nothing went upstream for the hit

    # Another residency is another scope: not served from the first answer.
    assert ask(second, **{"x-data-residency": "eu"}).headers["x-hybridroute-cache"] == "miss"

    # An invalidation through one replica reaches the other.
    dropped = httpx.post(second.url + "/admin/cache/invalidate", json={}, timeout=10)
    assert dropped.status_code == 200, dropped.text
    assert ask(first).headers["x-hybridroute-cache"] == "miss"


def test_a_cache_that_is_away_costs_misses_not_requests(start_gateway: GatewayFactory) -> None:
    def unreachable(data: dict[str, Any]) -> None:
        data["cache"] = {"enabled": True, "redis_url": "redis://127.0.0.1:9/0"}

    gateway = start_gateway(unreachable)
    for _ in range(2):
        assert ask(gateway).headers["x-hybridroute-cache"] == "miss"
    status = httpx.get(gateway.url + "/admin/cache", timeout=10).json()
    assert status["lookup_failures"] == 2
