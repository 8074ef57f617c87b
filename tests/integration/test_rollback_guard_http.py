"""The automatic rollback guard in a running gateway: a Direct Bedrock outage makes every
`emergency` request fail (it has no fallback); once more than half the requests have failed for
the guard's span, the gateway rolls back to MCP-only routing by itself, and emergencies are
served again — by mcp."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx

from tests.loopback import GatewayFactory, Simulator, wait_for

CHAT = {"model": "default", "messages": [{"role": "user", "content": "is the database down?"}]}


def _emergency(http: httpx.Client) -> httpx.Response:
    return http.post("/v1/chat/completions", json=CHAT, headers={"x-operation-type": "emergency"})


def test_the_guard_rolls_back_when_most_requests_fail(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    def changes(data: dict[str, Any]) -> None:
        data["guard"] = {
            "auto_rollback": True,
            "error_rate": 0.5,
            "min_requests": 5,
            "for_s": 5,
            "check_every_s": 0.2,
        }

    gateway = start_gateway(changes)
    bedrock_sim.set(outage=True)
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        statuses: list[int] = []

        def failing_then_rolled_back() -> bool:
            response = _emergency(http)
            statuses.append(response.status_code)
            return response.status_code == 200

        wait_for(failing_then_rolled_back, timeout=30)
        assert statuses[0] >= 500  # it failed first ...
        assert statuses[-1] == 200  # ... then the guard rolled back
        served = _emergency(http)
        assert served.headers["x-hybridroute-route"] == "mcp"

        flags = http.get("/admin/feature-flags/bedrock").json()
        assert not any(flags["flags"].values())
        assert flags["last_change"]["by"] == "guard"
        actions = http.get("/admin/actions").json()
        assert actions["guard"]["fired"] == 1
        report = actions["guard"]["last_fired"]
        assert report["ok"] is True
        assert [s["name"] for s in report["steps"]] == [
            "disable_all_flags",
            "check_mcp_health",
            "sample_request",
        ]
        assert "requests failed over the last 5s" in report["reason"]
        exported = http.get("/admin/audit/export", params={"period": "all"}).json()
        rollbacks = [r for r in exported["records"] if r["kind"] == "rollback"]
        assert [r["actor"] for r in rollbacks] == ["guard"]

    # Still MCP-only: the guard does not fire again while nothing is left to roll back.
    runtime = gateway.runtime
    assert len(runtime.control.guard.triggered) == 1
    assert mcp_sim.requests() > 0
