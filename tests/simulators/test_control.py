"""The /_sim/* control endpoints, served by the Bedrock simulator over loopback."""

from __future__ import annotations

import pytest

from hybridroute.simulators.knobs import Knobs


def test_get_knobs_returns_the_defaults(open_bedrock_sim, http) -> None:
    open_bedrock_sim.knobs.reset()
    reply = http.request("GET", f"{open_bedrock_sim.url}/_sim/knobs")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == Knobs().as_dict()


@pytest.mark.parametrize("method", ["PUT", "PATCH", "POST"])
def test_update_knobs_partially(open_bedrock_sim, http, method) -> None:
    open_bedrock_sim.knobs.reset()
    change = {"latency_ms": 5, "error_kind": "throttling", "stream_fail_after": 1}
    reply = http.json(method, f"{open_bedrock_sim.url}/_sim/knobs", change)
    assert reply.status == 200
    assert reply.json()["latency_ms"] == 5.0
    assert reply.json()["stream_chunks"] == 4
    assert open_bedrock_sim.knobs.error_kind == "throttling"
    assert open_bedrock_sim.knobs.stream_fail_after == 1
    open_bedrock_sim.knobs.reset()


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({"error_rate": 2}, "'error_rate'"),
        ({"warp_speed": 9}, "'warp_speed'"),
        ({"error_kind": "nope"}, "'error_kind'"),
        ([1, 2], "JSON object"),
    ],
)
def test_invalid_knobs_are_a_400_naming_the_problem(open_bedrock_sim, http, payload, named) -> None:
    open_bedrock_sim.knobs.reset()
    reply = http.json("PATCH", f"{open_bedrock_sim.url}/_sim/knobs", payload)
    assert reply.status == 400
    assert named in reply.json()["error"]
    assert open_bedrock_sim.knobs == Knobs()


def test_invalid_json_is_a_400(open_bedrock_sim, http) -> None:
    reply = http.request("PUT", f"{open_bedrock_sim.url}/_sim/knobs", b"{oops")
    assert reply.status == 400
    assert "not valid JSON" in reply.json()["error"]


def test_stats_and_reset(open_bedrock_sim, http) -> None:
    url = open_bedrock_sim.url
    open_bedrock_sim.stats.clear()
    body = b'{"messages": [{"role": "user", "content": [{"text": "hi"}]}]}'
    assert http.request("POST", f"{url}/model/m/converse", body).status == 200
    http.json("PATCH", f"{url}/_sim/knobs", {"outage": True})
    assert http.request("POST", f"{url}/model/m/converse", body).status == 503

    stats = http.request("GET", f"{url}/_sim/stats").json()
    assert stats["requests"] == 2
    assert stats["by_outcome"] == {"ok": 1, "error:outage": 1}
    assert [record["operation"] for record in stats["recent"]] == ["converse", "converse"]

    reply = http.request("POST", f"{url}/_sim/reset")
    assert reply.status == 200
    assert open_bedrock_sim.knobs == Knobs()
    assert http.request("GET", f"{url}/_sim/stats").json()["requests"] == 0
