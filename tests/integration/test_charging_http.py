"""Charges for work the client never saw: abandoned requests, hedged streams, refusals.

Each test drives a gateway over loopback HTTP and reads what was charged from
`GET /admin/cost` (spend by route: requests served, attempts charged, tokens, cost).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx2 as httpx

from hybridroute.config.defaults import DEFAULT_MATRIX
from tests.loopback import GatewayFactory, RunningGateway, Simulator, wait_for

PRICES = {
    "direct_bedrock": {"input_per_1k": "0.003", "output_per_1k": "0.015"},
    "mcp": {"input_per_1k": "0.00025", "output_per_1k": "0.00125"},
}


def priced(**extra: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        data["pricing"] = {"currency": "USD", "routes": PRICES}
        data["budgets"] = {"global": {"daily": "100"}}
        for section, values in extra.items():
            data[section] = values

    return change


def by_route(gateway: RunningGateway) -> dict[str, dict[str, Any]]:
    status, body = gateway.get("/admin/cost?days=1")
    assert status == 200, body
    routes: dict[str, dict[str, Any]] = body["spend"]["by"]["route"]
    return routes


def body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "default", "messages": [{"role": "user", "content": content}], **extra}


def test_a_request_the_client_abandons_is_still_charged_for_the_attempt_in_flight(
    start_gateway: GatewayFactory, bedrock_sim: Simulator
):
    gateway = start_gateway(priced())
    bedrock_sim.set(latency_ms=1500)
    with httpx.Client(base_url=gateway.url, timeout=0.3) as http:
        try:
            http.post(
                "/v1/chat/completions",
                json=body("is the primary database down?"),
                headers={"x-operation-type": "emergency"},
            )
        except httpx.TimeoutException:
            pass
        else:
            raise AssertionError("the request should have outlived the client's patience")
    wait_for(lambda: bedrock_sim.requests() == 1, 5)
    wait_for(lambda: "direct_bedrock" in by_route(gateway), 5)
    charged = by_route(gateway)["direct_bedrock"]
    # No answer was served, but the upstream worked on the prompt: its estimated input is
    # charged (system prompt + message, a token per 4 characters, 4 per message).
    assert (charged["requests"], charged["charges"], charged["output_tokens"]) == (0, 1, 0)
    assert charged["input_tokens"] > 0
    assert Decimal(charged["cost"]) == Decimal(charged["estimated_cost"]) > 0
    _status, report = gateway.get("/admin/cost?days=1")
    (budget,) = [b for b in report["budgets"]["budgets"] if b["period"] == "daily"]
    assert Decimal(budget["spent"]) == Decimal(charged["cost"])
    assert Decimal(budget["reserved"]) == 0


def test_a_hedged_streams_loser_is_charged_its_input_only(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    matrix_change = priced()

    def change(data: dict[str, Any]) -> None:
        matrix_change(data)
        data["matrix"] = {op: dict(row) for op, row in DEFAULT_MATRIX.items()}
        data["matrix"]["infrastructure"]["hedge_after_fraction"] = 0.05  # after 0.5 s

    gateway = start_gateway(change)
    bedrock_sim.set(latency_ms=3000)  # the primary is slow to its first event: the hedge wins
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        response = http.post(
            "/v1/chat/completions",
            json=body("is the cluster healthy?", stream=True),
            headers={"x-operation-type": "infrastructure"},
        )
    assert response.status_code == 200
    assert response.headers["x-hybridroute-route"] == "mcp"
    assert response.headers["x-hybridroute-hedged"] == "true"
    assert response.headers["x-hybridroute-attempts"] == "direct_bedrock:cancelled,mcp:ok"
    wait_for(lambda: set(by_route(gateway)) == {"direct_bedrock", "mcp"}, 5)
    routes = by_route(gateway)
    loser, winner = routes["direct_bedrock"], routes["mcp"]
    # The race ended at mcp's first event: the cancelled primary wrote nothing the gateway
    # could count, so it is charged its estimated input and no output.
    assert (loser["requests"], loser["charges"], loser["output_tokens"]) == (0, 1, 0)
    assert Decimal(loser["cost"]) == Decimal(loser["estimated_cost"]) > 0
    assert (winner["requests"], winner["charges"]) == (1, 1)
    assert winner["output_tokens"] > 0


def test_a_refusal_by_the_global_budget_does_not_tell_a_caller_the_gateways_spend(
    start_gateway: GatewayFactory,
):
    def change(data: dict[str, Any]) -> None:
        priced()(data)
        data["budgets"] = {"global": {"daily": "0.0000001"}}

    gateway = start_gateway(change)
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        response = http.post(
            "/v1/chat/completions", json=body("hello"), headers={"x-operation-type": "standard"}
        )
    assert response.status_code == 429
    message = response.json()["error"]["message"]
    assert message.startswith("the gateway's daily budget (")
    assert "cannot cover this request now" in message
    assert "spent" not in message
    assert "0.0000001" not in message
