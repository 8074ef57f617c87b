"""Active health probes in a running gateway, against the simulators."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from openai import OpenAI

from hybridroute.signals import Flag
from tests.loopback import GatewayFactory, RunningGateway, Simulator, wait_for

INTERVAL = 0.4


def probing(**extra: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["health"] = {
            "probe_interval_s": INTERVAL,
            "probe_timeout_s": 0.3,
            "probe_jitter": 0.0,
            "unhealthy_after": 2,
        }
        for key, value in extra.items():
            section, _, name = key.partition("__")
            data.setdefault(section, {})[name] = value

    return change


def route_state(gateway: RunningGateway, route: str) -> dict[str, Any]:
    _, body = gateway.get("/ready")
    state: dict[str, Any] = body["routes"][route]
    return state


def ask(gateway: RunningGateway, operation_type: str) -> Any:
    api = OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    return api.chat.completions.with_raw_response.create(
        model="default",
        messages=[{"role": "user", "content": "status?"}],
        extra_headers={"X-Operation-Type": operation_type},
    )


def test_probes_take_a_dead_primary_out_before_a_request_fails(
    start_gateway: GatewayFactory, bedrock_sim: Simulator
):
    gateway = start_gateway(probing())
    bedrock_sim.set(outage=True)
    took = wait_for(lambda: route_state(gateway, "direct_bedrock")["ready"] is False, 5)
    print(f"\n  dead primary detected by probes after {took:.2f}s (interval {INTERVAL}s)")
    detail = route_state(gateway, "direct_bedrock")["detail"]
    assert detail.startswith("health probes failing (2 in a row): ServiceUnavailableException")
    raw = ask(gateway, "infrastructure")
    assert raw.headers["x-hybridroute-route"] == "mcp"
    assert "x-hybridroute-attempts" not in raw.headers  # no failed attempt before it
    assert "direct_bedrock unhealthy (health probes failing" in raw.headers["x-hybridroute-reason"]


def test_probes_pause_while_monitoring_is_off(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(probing(flags__ENABLE_HYBRID_HEALTH_MONITORING=False))
    time.sleep(3 * INTERVAL)  # noqa: TID251 - letting probe intervals pass
    assert bedrock_sim.requests() == 0
    assert route_state(gateway, "direct_bedrock")["ready"] is True
    gateway.runtime.flags.set(Flag.HYBRID_HEALTH_MONITORING, True)
    wait_for(lambda: bedrock_sim.requests() > 0, 5)
    assert bedrock_sim.stats.recent[-1]["outcome"] == "invalid_request"  # the free probe


def test_the_free_probe_catches_bad_credentials(
    start_gateway: GatewayFactory, bedrock_sim: Simulator
):
    def wrong_secret(data: dict[str, Any]) -> None:
        probing()(data)
        data["routes"]["direct_bedrock"]["credentials"]["secret_access_key"] = "wrong"

    gateway = start_gateway(wrong_secret)
    wait_for(lambda: route_state(gateway, "direct_bedrock")["ready"] is False, 5)
    assert "InvalidSignatureException" in route_state(gateway, "direct_bedrock")["detail"]
