"""The response cache end to end over loopback HTTP.

Every test starts its own gateway with the cache turned on, over the session's simulators, and
judges the cache by what a caller sees (the `x-hybridroute-cache` header, the body, the stream)
and by whether a request reached a simulator (`sim.requests()`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx2 as httpx
import pytest
from openai import OpenAI

from hybridroute.caching import ENTRY_OVERHEAD_BYTES
from hybridroute.demo.config import DEMO_MODEL_ID, DEMO_REGION
from tests.loopback import GatewayFactory, RunningGateway, Simulator, wait_for

QUESTION = "Which disk is filling up on the build host?"
ACME_KEY, BETA_KEY = "acme-secret-key", "beta-secret-key"
PRICING = {
    "currency": "USD",
    "routes": {
        "direct_bedrock": {"input_per_1k": "0.003", "output_per_1k": "0.015"},
        "mcp": {"input_per_1k": "0.001", "output_per_1k": "0.002"},
    },
}


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def cache_on(**settings: Any) -> Callable[[dict[str, Any]], None]:
    """A config change turning the response cache on with `settings`."""

    def change(data: dict[str, Any]) -> None:
        data["cache"] = {"enabled": True, **settings}

    return change


def with_tenants(data: dict[str, Any]) -> None:
    data["cache"] = {"enabled": True}
    data["tenants"] = {
        "api_keys": [
            {"tenant": "acme", "sha256": _sha(ACME_KEY)},
            {"tenant": "beta", "sha256": _sha(BETA_KEY)},
        ]
    }


def chat(
    gateway: RunningGateway,
    operation_type: str = "implementation",
    *,
    headers: dict[str, str] | None = None,
    key: str | None = None,
    content: str = QUESTION,
    **body: Any,
) -> httpx.Response:
    """POST one chat request; `body` adds to (or overrides) the JSON body."""
    sent = {"X-Operation-Type": operation_type, **(headers or {})}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    payload = {"model": "default", "messages": [{"role": "user", "content": content}], **body}
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=payload, headers=sent, timeout=30.0
    )
    return response


def cache_status(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.headers["x-hybridroute-cache"])


def events(response: httpx.Response) -> tuple[list[dict[str, Any]], bool]:
    """The SSE chunks of a streamed response, and whether it ended with `data: [DONE]`."""
    chunks: list[dict[str, Any]] = []
    done = False
    for block in response.text.split("\n\n"):
        if not block.startswith("data: "):
            assert not block.strip(), f"unexpected SSE block {block!r}"
            continue
        data = block.removeprefix("data: ")
        assert not done, "data after [DONE]"
        if data == "[DONE]":
            done = True
            continue
        chunks.append(json.loads(data))
    return chunks, done


def content_pieces(chunks: list[dict[str, Any]]) -> list[str]:
    """The non-empty content deltas, in order."""
    pieces = []
    for chunk in chunks:
        for choice in chunk.get("choices", []):
            text = choice["delta"].get("content")
            if text:
                pieces.append(text)
    return pieces


def upstream(bedrock_sim: Simulator, mcp_sim: Simulator) -> int:
    return bedrock_sim.requests() + mcp_sim.requests()


def admin_post(gateway: RunningGateway, path: str, body: bytes) -> httpx.Response:
    return httpx.post(
        gateway.url + path,
        content=body,
        headers={"content-type": "application/json"},
        timeout=10.0,
    )


def invalidate(gateway: RunningGateway, body: dict[str, Any] | None) -> dict[str, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    response = admin_post(gateway, "/admin/cache/invalidate", raw)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def cache_admin(gateway: RunningGateway) -> dict[str, Any]:
    status, body = gateway.get("/admin/cache")
    assert status == 200, body
    return body


# -- hits and misses ---------------------------------------------------------------------------


def test_repeated_request_is_a_hit_that_never_reaches_the_route(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on())
    first = chat(gateway, temperature=0)
    assert cache_status(first) == "miss"
    assert first.headers["x-hybridroute-route"] == "direct_bedrock"
    assert "x-hybridroute-cache-reason" not in first.headers
    assert "age" not in first.headers
    assert Decimal(first.headers["x-hybridroute-cost"]) > 0
    assert first.json()["hybridroute"]["cache"] == "miss"
    reached = upstream(bedrock_sim, mcp_sim)
    assert bedrock_sim.requests() == 1

    for _ in range(3):
        again = chat(gateway, temperature=0)
        assert cache_status(again) == "hit"
        assert again.headers["x-hybridroute-cost"] == "0"
        assert again.headers["x-hybridroute-route"] == "direct_bedrock"
        assert again.headers["x-hybridroute-fallback"] == "false"
        assert again.headers["age"] == "0"
        assert again.headers["x-hybridroute-reason"] == (
            "served from cache: answer from direct_bedrock, 0 s old"
        )
        assert (
            again.headers["x-hybridroute-decision-id"] != first.headers["x-hybridroute-decision-id"]
        )
        body, original = again.json(), first.json()
        assert body["choices"] == original["choices"]
        assert body["usage"] == original["usage"]
        assert body["model"] == original["model"]
        assert body["hybridroute"]["cache"] == "hit"
        assert body["hybridroute"]["cost"] == "0"
    assert upstream(bedrock_sim, mcp_sim) == reached

    stats = cache_admin(gateway)
    assert stats["stats"]["total"]["hits"] == 3
    assert stats["stats"]["total"]["misses"] == 1
    assert stats["stats"]["total"]["stores"] == 1
    assert stats["stats"]["total"]["hit_rate"] == 0.75
    assert stats["store"]["entries"] == 1
    assert stats["store"]["bytes"] > 0


def test_a_different_tenant_never_gets_another_tenants_entry(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(with_tenants)
    assert cache_status(chat(gateway, key=ACME_KEY, temperature=0)) == "miss"
    assert cache_status(chat(gateway, key=ACME_KEY, temperature=0)) == "hit"
    reached = upstream(bedrock_sim, mcp_sim)

    beta = chat(gateway, key=BETA_KEY, temperature=0)
    assert cache_status(beta) == "miss"
    assert upstream(bedrock_sim, mcp_sim) == reached + 1
    anonymous = chat(gateway, temperature=0)  # no key: tenant "default"
    assert cache_status(anonymous) == "miss"
    assert upstream(bedrock_sim, mcp_sim) == reached + 2

    assert cache_status(chat(gateway, key=BETA_KEY, temperature=0)) == "hit"
    assert cache_status(chat(gateway, key=ACME_KEY, temperature=0)) == "hit"
    assert cache_status(chat(gateway, temperature=0)) == "hit"
    # The same key sent as X-Api-Key is the same tenant.
    same = chat(gateway, headers={"X-Api-Key": BETA_KEY}, temperature=0)
    assert cache_status(same) == "hit"
    # A key the gateway does not know is refused before the cache is consulted.
    refused = chat(gateway, key="not-a-known-key", temperature=0)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert upstream(bedrock_sim, mcp_sim) == reached + 2
    by_tenant = cache_admin(gateway)["stats"]["by_tenant"]
    assert {name: (line["hits"], line["misses"]) for name, line in by_tenant.items()} == {
        "acme": (2, 1),
        "beta": (2, 1),
        "default": (1, 1),
    }


def test_residency_constraint_keeps_separate_entries(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on())
    eu = {"X-Data-Residency": "eu"}
    assert cache_status(chat(gateway, temperature=0)) == "miss"
    reached = upstream(bedrock_sim, mcp_sim)
    in_eu = chat(gateway, headers=eu, temperature=0)
    assert cache_status(in_eu) == "miss"
    assert upstream(bedrock_sim, mcp_sim) == reached + 1

    assert cache_status(chat(gateway, headers=eu, temperature=0)) == "hit"
    assert cache_status(chat(gateway, temperature=0)) == "hit"
    assert upstream(bedrock_sim, mcp_sim) == reached + 1
    assert cache_admin(gateway)["store"]["entries"] == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"temperature": 0}, {"temperature": 0.1}),
        ({"temperature": 0, "max_tokens": 50}, {"temperature": 0, "max_tokens": 51}),
        ({"temperature": 0, "stop": ["END"]}, {"temperature": 0, "stop": ["STOP"]}),
        ({"temperature": 0}, {"temperature": 0, "stop": ["END"]}),
        ({"temperature": 0, "top_p": 0.5}, {"temperature": 0, "top_p": 0.9}),
        ({"temperature": 0, "model": "default"}, {"temperature": 0, "model": "other-model"}),
        (
            {"temperature": 0},
            {
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": "Answer in one line."},
                    {"role": "user", "content": QUESTION},
                ],
            },
        ),
    ],
    ids=["temperature", "max_tokens", "stop", "stop-added", "top_p", "model", "system"],
)
def test_a_request_differing_in_one_parameter_misses(
    start_gateway: GatewayFactory,
    bedrock_sim: Simulator,
    mcp_sim: Simulator,
    first: dict[str, Any],
    second: dict[str, Any],
):
    gateway = start_gateway(cache_on())
    assert cache_status(chat(gateway, **first)) == "miss"
    assert cache_status(chat(gateway, **first)) == "hit"
    reached = upstream(bedrock_sim, mcp_sim)
    assert cache_status(chat(gateway, **second)) == "miss"
    assert upstream(bedrock_sim, mcp_sim) == reached + 1
    assert cache_status(chat(gateway, **second)) == "hit"
    assert cache_status(chat(gateway, **first)) == "hit"
    assert upstream(bedrock_sim, mcp_sim) == reached + 1


def test_a_different_operation_type_or_message_misses(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on())
    assert cache_status(chat(gateway, "implementation", temperature=0)) == "miss"
    reached = upstream(bedrock_sim, mcp_sim)
    assert cache_status(chat(gateway, "meta_monitor", temperature=0)) == "miss"
    assert cache_status(chat(gateway, content=QUESTION + " Again.", temperature=0)) == "miss"
    assert upstream(bedrock_sim, mcp_sim) == reached + 2
    # Leading and trailing whitespace is normalised away: the same request.
    assert cache_status(chat(gateway, content=f"  {QUESTION}\n", temperature=0)) == "hit"
    assert upstream(bedrock_sim, mcp_sim) == reached + 2


# -- streams -----------------------------------------------------------------------------------


def test_streamed_answer_replays_as_the_same_stream(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on())
    bedrock_sim.set(stream_chunks=5)
    original = chat(gateway, temperature=0, stream=True)
    assert cache_status(original) == "miss"
    assert original.headers["content-type"].startswith("text/event-stream")
    first_chunks, first_done = events(original)
    assert first_done
    pieces = content_pieces(first_chunks)
    assert len(pieces) == 5
    text = "".join(pieces)
    assert text == f"Simulated answer from {DEMO_MODEL_ID} in {DEMO_REGION}: {QUESTION}"
    assert first_chunks[-1]["hybridroute"]["cache"] == "miss"
    cost = Decimal(first_chunks[-1]["hybridroute"]["cost"])
    assert cost > 0
    reached = upstream(bedrock_sim, mcp_sim)

    replay = chat(gateway, temperature=0, stream=True)
    assert cache_status(replay) == "hit"
    assert replay.headers["content-type"].startswith("text/event-stream")
    assert replay.headers["x-hybridroute-cost"] == "0"
    assert replay.headers["x-hybridroute-route"] == "direct_bedrock"
    assert "age" in replay.headers
    chunks, done = events(replay)
    assert done
    assert content_pieces(chunks) == pieces
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == first_chunks[-1]["choices"][0]["finish_reason"]
    assert final["choices"][0]["delta"] == {}
    assert final["hybridroute"]["cache"] == "hit"
    assert final["hybridroute"]["cost"] == "0"
    assert final["model"] == first_chunks[-1]["model"]
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * len(chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert upstream(bedrock_sim, mcp_sim) == reached
    assert Decimal(cache_admin(gateway)["saved"]) == cost


def test_stream_stored_entry_is_served_as_json_with_the_full_text(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on())
    bedrock_sim.set(stream_chunks=3)
    original = chat(gateway, temperature=0, stream=True, stream_options={"include_usage": True})
    assert cache_status(original) == "miss"
    chunks, _ = events(original)
    text = "".join(content_pieces(chunks))
    assert text.endswith(QUESTION)
    usage = chunks[-1]["usage"]
    reached = upstream(bedrock_sim, mcp_sim)

    hit = chat(gateway, temperature=0)
    assert cache_status(hit) == "hit"
    body = hit.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": text}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == usage
    assert body["hybridroute"]["cache"] == "hit"
    assert body["hybridroute"]["route"] == "direct_bedrock"
    assert upstream(bedrock_sim, mcp_sim) == reached


def test_json_stored_entry_replays_as_a_one_piece_stream(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on())
    original = chat(gateway, temperature=0)
    assert cache_status(original) == "miss"
    text = original.json()["choices"][0]["message"]["content"]
    reached = upstream(bedrock_sim, mcp_sim)

    replay = chat(gateway, temperature=0, stream=True, stream_options={"include_usage": True})
    assert cache_status(replay) == "hit"
    chunks, done = events(replay)
    assert done
    assert content_pieces(chunks) == [text]
    assert chunks[-1]["usage"] == original.json()["usage"]
    assert chunks[-1]["hybridroute"] == {"cache": "hit", "cost": "0", "currency": "USD"}
    assert upstream(bedrock_sim, mcp_sim) == reached


# -- what is never cached ----------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["outage", "error_rate"])
def test_upstream_error_is_not_cached(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator, fault: str
):
    gateway = start_gateway(cache_on())
    knob: dict[str, Any] = {"outage": True} if fault == "outage" else {"error_rate": 1.0}
    bedrock_sim.set(**knob)
    mcp_sim.set(**knob)
    failed = chat(gateway, temperature=0)
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["code"] == "all_routes_failed"
    assert cache_admin(gateway)["store"]["entries"] == 0

    bedrock_sim.set(outage=False, error_rate=0.0)
    mcp_sim.set(outage=False, error_rate=0.0)
    reached = upstream(bedrock_sim, mcp_sim)
    recovered = chat(gateway, temperature=0)
    assert cache_status(recovered) == "miss"
    assert recovered.json()["choices"][0]["message"]["content"].endswith(QUESTION)
    assert upstream(bedrock_sim, mcp_sim) == reached + 1
    assert cache_status(chat(gateway, temperature=0)) == "hit"
    assert upstream(bedrock_sim, mcp_sim) == reached + 1


def test_stream_cut_midway_is_not_cached(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on())
    bedrock_sim.set(stream_chunks=4, stream_fail_after=2, error_kind="unavailable")
    cut = chat(gateway, temperature=0, stream=True)
    assert cache_status(cut) == "miss"
    assert cut.headers["x-hybridroute-route"] == "direct_bedrock"
    assert len(content_pieces(events_until_error(cut))) == 2
    assert "data: [DONE]" not in cut.text
    assert '"error"' in cut.text
    assert cache_admin(gateway)["store"]["entries"] == 0

    bedrock_sim.set(stream_fail_after=None)
    reached = bedrock_sim.requests()
    for streaming in (True, False):
        again = chat(gateway, temperature=0, stream=streaming)
        assert cache_status(again) == ("miss" if streaming else "hit")
    assert bedrock_sim.requests() == reached + 1
    assert cache_admin(gateway)["store"]["entries"] == 1


def events_until_error(response: httpx.Response) -> list[dict[str, Any]]:
    """The chunks of a stream that ended with an error event (the error event excluded)."""
    chunks = []
    for block in response.text.split("\n\n"):
        if block.startswith("data: "):
            data = json.loads(block.removeprefix("data: "))
            if "error" in data:
                break
            chunks.append(data)
    return chunks


def test_uncacheable_requests_say_why(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on())
    cases: list[tuple[str, dict[str, Any], str]] = [
        # standard's default temperature is 0.7, above the 0.5 limit
        ("standard", {}, "temperature 0.7 above 0.5"),
        ("implementation", {"temperature": 0.9}, "temperature 0.9 above 0.5"),
        ("emergency", {}, "operation emergency is never cached (ttl 0)"),
        ("emergency", {"temperature": 0}, "operation emergency is never cached (ttl 0)"),
    ]
    for operation_type, body, reason in cases:
        reached = upstream(bedrock_sim, mcp_sim)
        for _ in range(2):
            response = chat(gateway, operation_type, **body)
            assert cache_status(response) == "off"
            assert response.headers["x-hybridroute-cache-reason"] == reason
            assert response.json()["hybridroute"]["cache"] == "off"
            assert Decimal(response.headers["x-hybridroute-cost"]) > 0
        assert upstream(bedrock_sim, mcp_sim) == reached + 2
    # With temperature 0, standard is cacheable.
    assert cache_status(chat(gateway, "standard", temperature=0)) == "miss"
    assert cache_status(chat(gateway, "standard", temperature=0)) == "hit"
    total = cache_admin(gateway)["stats"]["total"]
    assert (total["uncacheable"], total["misses"], total["hits"]) == (8, 1, 1)
    assert cache_admin(gateway)["store"]["entries"] == 1


def test_disabled_cache_is_off_for_every_request(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway()  # the test config: cache disabled
    for _ in range(2):
        response = chat(gateway, temperature=0)
        assert cache_status(response) == "off"
        assert response.headers["x-hybridroute-cache-reason"] == "the response cache is disabled"
    assert bedrock_sim.requests() == 2


# -- Cache-Control -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["no-cache", "max-age=0", "No-Cache, private"])
def test_no_cache_skips_the_lookup_but_stores_the_fresh_answer(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator, header: str
):
    gateway = start_gateway(cache_on())
    no_cache = {"Cache-Control": header}
    first = chat(gateway, headers=no_cache, temperature=0)
    assert cache_status(first) == "bypass"
    assert "x-hybridroute-cache-reason" not in first.headers
    assert first.json()["hybridroute"]["cache"] == "bypass"
    assert bedrock_sim.requests() == 1
    assert cache_status(chat(gateway, temperature=0)) == "hit"  # the fresh answer was stored
    assert bedrock_sim.requests() == 1

    # An entry exists, yet no-cache still goes to the route.
    assert cache_status(chat(gateway, headers=no_cache, temperature=0)) == "bypass"
    assert bedrock_sim.requests() == 2
    assert cache_status(chat(gateway, temperature=0)) == "hit"
    assert bedrock_sim.requests() == 2
    total = cache_admin(gateway)["stats"]["total"]
    assert (total["bypasses"], total["hits"], total["misses"], total["stores"]) == (2, 2, 0, 2)


@pytest.mark.parametrize("header", ["no-store", "no-cache, no-store"])
def test_no_store_neither_reads_nor_writes(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator, header: str
):
    gateway = start_gateway(cache_on())
    no_store = {"Cache-Control": header}
    assert cache_status(chat(gateway, headers=no_store, temperature=0)) == "bypass"
    assert cache_admin(gateway)["store"]["entries"] == 0
    assert cache_status(chat(gateway, temperature=0)) == "miss"  # nothing was stored
    assert bedrock_sim.requests() == 2

    # An entry exists, and no-store still goes to the route.
    assert cache_status(chat(gateway, headers=no_store, temperature=0, stream=True)) == "bypass"
    assert bedrock_sim.requests() == 3
    assert cache_status(chat(gateway, temperature=0)) == "hit"
    assert bedrock_sim.requests() == 3


def test_no_cache_stream_is_stored(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on())
    bedrock_sim.set(stream_chunks=2)
    first = chat(gateway, headers={"Cache-Control": "no-cache"}, temperature=0, stream=True)
    assert cache_status(first) == "bypass"
    chunks, _ = events(first)
    assert chunks[-1]["hybridroute"]["cache"] == "bypass"
    replay = chat(gateway, temperature=0, stream=True)
    assert cache_status(replay) == "hit"
    assert content_pieces(events(replay)[0]) == content_pieces(chunks)
    assert bedrock_sim.requests() == 1


# -- aggressive mode and TTL -------------------------------------------------------------------


def test_aggressive_mode_caches_hot_requests_but_never_emergencies(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(
        cache_on(aggressive=True, ttl_s={"standard": 0.2}, aggressive_ttl_multiplier=50)
    )
    first = chat(gateway, "standard")  # default temperature 0.7
    assert cache_status(first) == "miss"
    assert first.headers["x-hybridroute-route"] == "mcp"
    stored_at = time.monotonic()
    reached = upstream(bedrock_sim, mcp_sim)
    # The entry outlives the operation's plain TTL (0.2 s): it is kept 0.2 s x 50.
    hits = 0
    while time.monotonic() - stored_at < 0.6:
        hit = chat(gateway, "standard")
        assert cache_status(hit) == "hit"
        assert hit.headers["x-hybridroute-route"] == "mcp"
        hits += 1
    assert hits >= 2
    assert cache_status(chat(gateway, "standard", temperature=1.3)) == "miss"
    assert upstream(bedrock_sim, mcp_sim) == reached + 1

    for _ in range(2):
        emergency = chat(gateway, "emergency", temperature=0)
        assert cache_status(emergency) == "off"
        assert emergency.headers["x-hybridroute-cache-reason"] == (
            "operation emergency is never cached (ttl 0)"
        )
    assert upstream(bedrock_sim, mcp_sim) == reached + 3
    snapshot = cache_admin(gateway)
    assert snapshot["aggressive_always"] is True
    assert snapshot["ttl_s"]["emergency"] == 0


def test_entries_expire_after_their_ttl(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on(ttl_s={"infrastructure": 0.3}))
    assert cache_status(chat(gateway, "infrastructure")) == "miss"  # default temperature 0.2
    stored_at = time.monotonic()
    assert cache_status(chat(gateway, "infrastructure")) == "hit"
    assert bedrock_sim.requests() == 1

    wait_for(lambda: cache_status(chat(gateway, "infrastructure")) == "miss", timeout=5)
    assert time.monotonic() - stored_at >= 0.3
    assert bedrock_sim.requests() == 2
    assert cache_status(chat(gateway, "infrastructure")) == "hit"  # the fresh answer was stored
    assert bedrock_sim.requests() == 2
    snapshot = cache_admin(gateway)
    assert snapshot["store"]["evictions"]["expired"] == 1
    assert snapshot["store"]["entries"] == 1


# -- invalidation ------------------------------------------------------------------------------

ENTRIES = [
    (tenant_key, op) for tenant_key in (ACME_KEY, BETA_KEY) for op in ("standard", "implementation")
]


@pytest.mark.parametrize(
    ("body", "dropped", "scope"),
    [
        ({"tenant": "acme"}, {(ACME_KEY, "standard"), (ACME_KEY, "implementation")}, "tenant acme"),
        (
            {"operation_type": "standard"},
            {(ACME_KEY, "standard"), (BETA_KEY, "standard")},
            "operation_type standard",
        ),
        (
            {"tenant": "acme", "operation_type": "standard"},
            {(ACME_KEY, "standard")},
            "tenant acme, operation_type standard",
        ),
        ({}, set(ENTRIES), "everything"),
        (None, set(ENTRIES), "everything"),
        ({"tenant": "nobody"}, set(), "tenant nobody"),
    ],
    ids=["tenant", "operation", "tenant+operation", "empty-object", "empty-body", "no-match"],
)
def test_invalidation_drops_exactly_the_matching_entries(
    start_gateway: GatewayFactory,
    bedrock_sim: Simulator,
    mcp_sim: Simulator,
    body: dict[str, Any] | None,
    dropped: set[tuple[str, str]],
    scope: str,
):
    gateway = start_gateway(with_tenants)
    for key, op in ENTRIES:
        assert cache_status(chat(gateway, op, key=key, temperature=0)) == "miss"
    assert cache_admin(gateway)["store"]["entries"] == 4

    result = invalidate(gateway, body)
    assert result == {"removed": len(dropped), "scope": scope}
    snapshot = cache_admin(gateway)
    assert snapshot["store"]["entries"] == 4 - len(dropped)
    assert snapshot["store"]["evictions"]["invalidated"] == len(dropped)

    reached = upstream(bedrock_sim, mcp_sim)
    for key, op in ENTRIES:
        expected = "miss" if (key, op) in dropped else "hit"
        assert cache_status(chat(gateway, op, key=key, temperature=0)) == expected, (key, op)
    assert upstream(bedrock_sim, mcp_sim) == reached + len(dropped)


@pytest.mark.parametrize(
    ("raw", "status", "code", "words"),
    [
        (b'{"tenant": ', 400, "invalid_json", "not valid JSON"),
        (b'["acme"]', 400, "invalid_request", "the body must be a JSON object"),
        (b'{"tennant": "acme"}', 400, "invalid_request", "unknown field(s) tennant"),
        (b'{"tenant": 7}', 400, "invalid_request", "'tenant' must be a string"),
        (b'{"operation_type": null}', 400, "invalid_request", "'operation_type' must be a string"),
        (b'{"operation_type": "nonsense"}', 422, "unknown_operation_type", "'nonsense'"),
    ],
    ids=["malformed", "not-object", "unknown-field", "tenant-not-string", "op-null", "op-unknown"],
)
def test_invalidation_refuses_a_bad_body_and_drops_nothing(
    start_gateway: GatewayFactory, raw: bytes, status: int, code: str, words: str
):
    gateway = start_gateway(cache_on())
    assert cache_status(chat(gateway, temperature=0)) == "miss"
    response = admin_post(gateway, "/admin/cache/invalidate", raw)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert words in error["message"]
    assert cache_admin(gateway)["store"]["entries"] == 1
    assert cache_status(chat(gateway, temperature=0)) == "hit"


def test_invalidate_is_post_only(start_gateway: GatewayFactory):
    gateway = start_gateway(cache_on())
    status, body = gateway.get("/admin/cache/invalidate")
    assert status == 405
    assert "POST" in body["error"]["message"]


# -- money -------------------------------------------------------------------------------------


def test_hits_spend_no_budget_and_saved_grows_by_the_original_cost(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    def priced(data: dict[str, Any]) -> None:
        data["cache"] = {"enabled": True}
        data["pricing"] = PRICING
        data["budgets"] = {"global": {"daily": "100"}}

    gateway = start_gateway(priced)
    miss = chat(gateway, temperature=0)
    assert cache_status(miss) == "miss"
    cost = Decimal(miss.headers["x-hybridroute-cost"])
    assert cost > 0
    assert Decimal(miss.json()["hybridroute"]["cost"]) == cost

    def report() -> dict[str, Any]:
        status, body = gateway.get("/admin/cost?days=1")
        assert status == 200, body
        return body

    before = report()
    assert Decimal(before["spend"]["total"]["cost"]) == cost
    assert before["spend"]["total"]["requests"] == 1
    assert Decimal(before["cache_saved"]) == 0
    [daily] = [b for b in before["budgets"]["budgets"] if b["period"] == "daily"]
    assert Decimal(daily["spent"]) == cost
    assert Decimal(cache_admin(gateway)["saved"]) == 0

    for count in range(1, 4):
        hit = chat(gateway, temperature=0, stream=count == 2)
        assert cache_status(hit) == "hit"
        assert hit.headers["x-hybridroute-cost"] == "0"
        assert Decimal(cache_admin(gateway)["saved"]) == cost * count
    assert bedrock_sim.requests() == 1

    after = report()
    assert after["spend"]["total"] == before["spend"]["total"]

    def money(budgets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in b.items() if k != "resets_in_s"} for b in budgets]  # a clock

    assert money(after["budgets"]["budgets"]) == money(before["budgets"]["budgets"])
    assert Decimal(after["cache_saved"]) == cost * 3
    stats = cache_admin(gateway)["stats"]
    assert Decimal(stats["total"]["saved"]) == cost * 3
    assert Decimal(stats["by_operation"]["implementation"]["saved"]) == cost * 3


# -- the stock OpenAI SDK ----------------------------------------------------------------------


def test_openai_sdk_sees_a_hit_as_a_normal_completion(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on())
    api = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)

    def ask(stream: bool = False) -> Any:
        return api.chat.completions.with_raw_response.create(
            model="default",
            messages=[{"role": "user", "content": QUESTION}],
            temperature=0,
            stream=stream,
            extra_headers={"X-Operation-Type": "implementation"},
        )

    first = ask()
    assert first.headers["x-hybridroute-cache"] == "miss"
    original = first.parse()
    second = ask()
    assert second.headers["x-hybridroute-cache"] == "hit"
    assert second.headers["x-hybridroute-cost"] == "0"
    completion = second.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == original.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == original.model
    assert completion.usage is not None
    assert original.usage is not None
    assert completion.usage.completion_tokens == original.usage.completion_tokens
    assert completion.id != original.id

    streamed = ask(stream=True)
    assert streamed.headers["x-hybridroute-cache"] == "hit"
    chunks = list(streamed.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == original.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert bedrock_sim.requests() == 1


def test_a_hit_names_the_route_that_produced_the_entry(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on())
    bedrock_sim.set(stream_fail_after=0)  # the primary fails before its first chunk
    first = chat(gateway, temperature=0, stream=True)
    assert cache_status(first) == "miss"
    assert first.headers["x-hybridroute-route"] == "mcp"
    assert first.headers["x-hybridroute-fallback"] == "true"
    text = "".join(content_pieces(events(first)[0]))
    bedrock_sim.set(stream_fail_after=None)
    reached = upstream(bedrock_sim, mcp_sim)

    for streaming in (False, True):
        hit = chat(gateway, temperature=0, stream=streaming)
        assert cache_status(hit) == "hit"
        assert hit.headers["x-hybridroute-route"] == "mcp"
        assert hit.headers["x-hybridroute-fallback"] == "false"
        assert hit.headers["x-hybridroute-reason"].startswith("served from cache: answer from mcp,")
    assert hit.headers["x-hybridroute-cost"] == "0"
    assert "".join(content_pieces(events(hit)[0])) == text
    assert upstream(bedrock_sim, mcp_sim) == reached


# -- the store's bounds ------------------------------------------------------------------------


def test_least_recently_used_entry_is_evicted_first(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    gateway = start_gateway(cache_on(max_entries=2))
    for question in ("first?", "second?"):
        assert cache_status(chat(gateway, content=question, temperature=0)) == "miss"
    assert cache_status(chat(gateway, content="first?", temperature=0)) == "hit"  # now newest
    assert cache_status(chat(gateway, content="third?", temperature=0)) == "miss"
    snapshot = cache_admin(gateway)
    assert snapshot["store"]["entries"] == 2
    assert snapshot["store"]["evictions"]["lru"] == 1
    reached = bedrock_sim.requests()
    assert cache_status(chat(gateway, content="first?", temperature=0)) == "hit"
    assert cache_status(chat(gateway, content="third?", temperature=0)) == "hit"
    assert bedrock_sim.requests() == reached
    assert cache_status(chat(gateway, content="second?", temperature=0)) == "miss"
    assert bedrock_sim.requests() == reached + 1


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "stream"])
def test_an_answer_larger_than_an_entry_may_be_is_not_stored(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator, streaming: bool
):
    # An entry is its text, model and finish reason plus a fixed overhead: allow 700 bytes.
    gateway = start_gateway(cache_on(max_entry_kib=700 / 1024))
    small, large = "hi", "x" * 150
    prefix = f"Simulated answer from {DEMO_MODEL_ID} in {DEMO_REGION}: "
    assert len(prefix) + len(small) + len(DEMO_MODEL_ID) + 4 + ENTRY_OVERHEAD_BYTES <= 700
    assert len(prefix) + len(large) + len(DEMO_MODEL_ID) + 4 + ENTRY_OVERHEAD_BYTES > 700

    for _ in range(2):
        big = chat(gateway, content=large, temperature=0, stream=streaming)
        assert cache_status(big) == "miss"
    assert bedrock_sim.requests() == 2
    snapshot = cache_admin(gateway)
    assert snapshot["store"]["entries"] == 0
    assert snapshot["store"]["evictions"]["refused_too_big"] == 2
    assert snapshot["stats"]["total"]["stores"] == 0

    assert cache_status(chat(gateway, content=small, temperature=0, stream=streaming)) == "miss"
    assert cache_status(chat(gateway, content=small, temperature=0, stream=streaming)) == "hit"
    assert bedrock_sim.requests() == 3


# -- emergency cost controls -------------------------------------------------------------------


def test_cost_controls_serve_hits_and_turn_on_aggressive_caching(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator
):
    def tight_budget(data: dict[str, Any]) -> None:
        data["cache"] = {"enabled": True}
        data["pricing"] = PRICING
        data["budgets"] = {"global": {"daily": "0.001"}}

    gateway = start_gateway(tight_budget)
    stored = chat(gateway, temperature=0, max_tokens=10)
    assert cache_status(stored) == "miss"
    hot = chat(gateway, "infrastructure", temperature=0.9)
    assert cache_status(hot) == "off"
    assert hot.headers["x-hybridroute-cache-reason"] == "temperature 0.9 above 0.5"

    def level() -> str:
        status, body = gateway.get("/admin/cost?days=1")
        assert status == 200, body
        [daily] = body["budgets"]["budgets"]
        return str(daily["level"])

    def spend_on_emergencies() -> bool:  # critical work is served whatever the budget
        assert chat(gateway, "emergency").status_code == 200
        return level() == "exhausted"

    wait_for(spend_on_emergencies, timeout=10)

    # Exhausted: high-priority work is refused, but a cached answer costs nothing.
    refused = chat(gateway, temperature=0, max_tokens=11)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "budget_throttled"
    reached = upstream(bedrock_sim, mcp_sim)
    hit = chat(gateway, temperature=0, max_tokens=10)
    assert cache_status(hit) == "hit"
    assert hit.json()["choices"] == stored.json()["choices"]

    # Emergency cost controls cache what the policy would not.
    assert cache_status(chat(gateway, "infrastructure", temperature=0.9)) == "miss"
    assert cache_status(chat(gateway, "infrastructure", temperature=0.9)) == "hit"
    assert upstream(bedrock_sim, mcp_sim) == reached + 1


class _BrokenStore:
    """A cache store that is away: every call fails (e.g. a remote cache that went down)."""

    async def get(self, key: str) -> Any:
        raise ConnectionError("cache store is down")

    async def put(self, key: str, entry: Any, *, ttl_s: float, tags: tuple[str, ...] = ()) -> bool:
        raise ConnectionError("cache store is down")


def test_an_answer_is_delivered_even_when_the_cache_cannot_store_it(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
):
    gateway = start_gateway(cache_on())
    working = gateway.runtime.cache.store
    gateway.runtime.cache.store = _BrokenStore()
    try:
        with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
            payload = {
                "model": "default",
                "messages": [{"role": "user", "content": "is the store away?"}],
            }
            headers = {"x-operation-type": "infrastructure", "cache-control": "no-cache"}
            response = http.post("/v1/chat/completions", json=payload, headers=headers)
    finally:
        gateway.runtime.cache.store = working
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"].startswith("Simulated answer")
    assert "could not store an answer in the response cache" in caplog.text
