"""Spend and budgets end to end over loopback HTTP: costs on responses, reservations under
concurrency, thresholds, throttling, cheaper routes, restarts, tenant budgets and streams.

Every figure is checked against the price table applied to the usage the response reports (the
simulators count whitespace words as tokens), or against the admin cost report. Budgets are sized
from the measured cost of one request on a throwaway gateway with the same prices, so a test
knows exactly how many requests take spend past 80 %, 95 % and 100 %.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
import json
import math
import time
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx2 as httpx

from hybridroute.config.defaults import DEFAULT_MATRIX, DEFAULT_OPERATION_PARAMS
from tests.loopback import (
    GatewayFactory,
    RunningGateway,
    Simulator,
    gateway_config_data,
    serving,
    wait_for,
)

USD = "USD"
LIST_PRICES = {
    "direct_bedrock": {"input_per_1k": "0.003", "output_per_1k": "0.015"},
    "mcp": {"input_per_1k": "0.00025", "output_per_1k": "0.00125"},
}
# A short incident question; with max_tokens 8 the simulated answer (ten words and more) is cut
# to exactly 8 output tokens, so one such request always costs the same.
EMERGENCY = "disk full on db-1"
EMERGENCY_MAX_TOKENS = 8
RETRY_AFTER_MAX_S = 60
IN_FLIGHT_RETRY_S = 5  # Retry-After when only requests in flight hold the budget
QUANTUM = Decimal("0.0000000001")

Changes = Callable[[dict[str, Any]], None]


# -- helpers -------------------------------------------------------------------------------------


def configure(
    *,
    prices: dict[str, dict[str, str]] | None = None,
    budgets: dict[str, Any] | None = None,
    tenants: dict[str, Any] | None = None,
    storage: dict[str, Any] | None = None,
    matrix: dict[str, dict[str, Any]] | None = None,
) -> Changes:
    """Config changes: prices (default list prices), budgets (replacing the embedded ones),
    tenants, storage, and matrix rows (over the default matrix)."""

    def change(data: dict[str, Any]) -> None:
        data["pricing"] = {"currency": USD, "routes": copy.deepcopy(prices or LIST_PRICES)}
        data["budgets"] = copy.deepcopy(budgets) if budgets is not None else {}
        if tenants is not None:
            data["tenants"] = copy.deepcopy(tenants)
        if storage is not None:
            data["storage"] = copy.deepcopy(storage)
        if matrix is not None:
            data["matrix"] = {**copy.deepcopy(DEFAULT_MATRIX), **copy.deepcopy(matrix)}

    return change


def global_daily(limit: Decimal, **extra: Any) -> dict[str, Any]:
    return {"global": {"daily": str(limit)}, "retry_after_max_s": RETRY_AFTER_MAX_S, **extra}


def chat(
    http: httpx.Client,
    operation_type: str,
    content: str = EMERGENCY,
    *,
    max_tokens: int | None = EMERGENCY_MAX_TOKENS,
    api_key: str | None = None,
    **extra: Any,
) -> httpx.Response:
    body: dict[str, Any] = {"model": "default", "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    body.update(extra)
    headers = {"x-operation-type": operation_type}
    if api_key is not None:
        headers["x-api-key"] = api_key
    return http.post("/v1/chat/completions", json=body, headers=headers)


def price_of(prices: dict[str, dict[str, str]], route: str, inp: int, out: int) -> Decimal:
    """What `inp` input and `out` output tokens cost on `route` (exact, 10^-10 half-even)."""
    price = prices[route]
    raw = (inp * Decimal(price["input_per_1k"]) + out * Decimal(price["output_per_1k"])) / 1000
    return raw.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def served_cost(response: httpx.Response, prices: dict[str, dict[str, str]]) -> Decimal:
    """The cost a 200 JSON answer reports, after checking it is its usage at the route's price."""
    assert response.status_code == 200, response.text
    body = response.json()
    route = response.headers["x-hybridroute-route"]
    usage = body["usage"]
    expected = price_of(prices, route, usage["prompt_tokens"], usage["completion_tokens"])
    header = response.headers["x-hybridroute-cost"]
    assert Decimal(header) == expected, (header, expected, usage, route)
    assert header == format(expected.normalize(), "f")  # plain decimal text, no exponent
    assert response.headers["x-hybridroute-currency"] == USD
    extension = body["hybridroute"]
    assert extension["cost"] == header
    assert extension["currency"] == USD
    assert extension["cache"] == "off"
    return expected


def refusal(response: httpx.Response) -> dict[str, Any]:
    """A budget refusal's error, after checking status, code and Retry-After."""
    assert response.status_code == 429, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "budget_throttled", error
    retry_after = int(response.headers["retry-after"])
    if "requests in flight hold the rest" in error["message"]:
        assert retry_after == IN_FLIGHT_RETRY_S  # they settle within seconds
        assert "x-hybridroute-cost" not in response.headers
        return error
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    left = (midnight - now).total_seconds()
    if left > RETRY_AFTER_MAX_S + 2:
        assert retry_after == RETRY_AFTER_MAX_S
    else:  # the daily window resets sooner than the cap
        assert 1 <= retry_after <= RETRY_AFTER_MAX_S
    assert "x-hybridroute-cost" not in response.headers
    return error


def cost_report(gateway: RunningGateway, days: int = 1) -> dict[str, Any]:
    status, body = gateway.get(f"/admin/cost?days={days}")
    assert status == 200, body
    return body


def budget_status(report: dict[str, Any], budget: str = "global") -> dict[str, Any]:
    rows: list[dict[str, Any]] = [
        b for b in report["budgets"]["budgets"] if b["budget"] == budget and b["period"] == "daily"
    ]
    assert len(rows) == 1, report["budgets"]["budgets"]
    return rows[0]


def fired(report: dict[str, Any], budget: str = "global") -> list[str]:
    """The thresholds fired for `budget`'s daily window, in the order the events came."""
    window = budget_status(report, budget)["window"]
    return [
        e["threshold"]
        for e in report["budgets"]["events"]
        if e["budget"] == budget
        and e["period"] == "daily"
        and e["window"] == window
        and e["kind"] == "fired"
    ]


def total_spend(report: dict[str, Any]) -> Decimal:
    return Decimal(report["spend"]["total"]["cost"])


def unit_cost(
    start_gateway: GatewayFactory,
    operation_type: str = "emergency",
    prices: dict[str, dict[str, str]] | None = None,
) -> Decimal:
    """The cost of one driver request, measured on a gateway with the same prices, no budgets."""
    gateway = start_gateway(configure(prices=prices))
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        return served_cost(chat(http, operation_type), prices or LIST_PRICES)


def spend_with_emergencies(
    http: httpx.Client, count: int, prices: dict[str, dict[str, str]] | None = None
) -> Decimal:
    """Send `count` emergency requests (critical: always served); what they cost."""
    spent = Decimal(0)
    for _ in range(count):
        spent += served_cost(chat(http, "emergency"), prices or LIST_PRICES)
    return spent


def prompt_estimate(system: str, content: str) -> int:
    """The gateway's documented prompt estimate: a token per 4 characters, 4 per message."""
    return (len(system) + len(content) + 3) // 4 + 4


def reserve_estimate(
    prices: dict[str, dict[str, str]],
    content: str,
    max_tokens: int,
    system: str = "",
    *,
    attempts: int = 2,
    answers: int = 1,
) -> Decimal:
    """The documented reservation: `answers` whole answers (the prompt estimate + 20 % + 8
    tokens in, max_tokens out) and the input of the other `attempts`, at the dearest route of
    the decision. Defaults: an unhedged row with a fallback and no retries."""
    inp = int(prompt_estimate(system, content) * 1.2) + 8
    answer = max(price_of(prices, route, inp, max_tokens) for route in prices)
    input_only = max(price_of(prices, route, inp, 0) for route in prices)
    return answer * answers + input_only * (attempts - answers)


serve = serving


# -- 1. concurrency ------------------------------------------------------------------------------

CONCURRENT = 200
CONC_CONTENT = "budget concurrency probe number"
CONC_MAX_TOKENS = 10
SAME_PRICES = {
    "direct_bedrock": {"input_per_1k": "0.001", "output_per_1k": "0.01"},
    "mcp": {"input_per_1k": "0.001", "output_per_1k": "0.01"},
}


def test_concurrent_requests_cannot_spend_past_the_budget(
    start_gateway: GatewayFactory, mcp_sim: Simulator, bedrock_sim: Simulator
):
    # Equal prices: the reservation is the same whichever route; the actual cost (4 words in,
    # exactly 10 out) is below it, so settled spend can never pass the limit at all.
    estimate = reserve_estimate(SAME_PRICES, CONC_CONTENT, CONC_MAX_TOKENS)
    assert estimate == Decimal("0.000144")  # an answer (22 in, 10 out) and the fallback's input
    limit = estimate * 45
    gateway = start_gateway(configure(prices=SAME_PRICES, budgets=global_daily(limit)))
    mcp_sim.set(latency_ms=20)  # every request is in flight while the others reserve
    mcp_before, bedrock_before = mcp_sim.requests(), bedrock_sim.requests()

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30.0, limits=limits) as http:
            body = {
                "model": "default",
                "messages": [{"role": "user", "content": CONC_CONTENT}],
                "max_tokens": CONC_MAX_TOKENS,
            }
            return list(
                await asyncio.gather(
                    *(
                        http.post(
                            "/v1/chat/completions",
                            json=body,
                            headers={"x-operation-type": "standard"},
                        )
                        for _ in range(CONCURRENT)
                    )
                )
            )

    started = time.monotonic()
    responses = asyncio.run(burst())
    elapsed = time.monotonic() - started

    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    for response in refused:
        refusal(response)
    costs = {served_cost(r, SAME_PRICES) for r in served}
    assert len(costs) == 1
    (per_request,) = costs
    assert per_request == Decimal("0.000104")  # 4 words in, 10 out
    report = cost_report(gateway)
    spend = total_spend(report)
    status = budget_status(report)
    print(
        f"\nbudget concurrency: sent {CONCURRENT}, served {len(served)}, refused {len(refused)} "
        f"(429 budget_throttled), spend {spend} of limit {limit} {USD} "
        f"({float(spend / limit) * 100:.1f} %), per request {per_request}, reserved per request "
        f"{estimate}, {elapsed:.2f} s"
    )
    assert spend == per_request * len(served)
    assert Decimal(status["spent"]) == spend
    assert Decimal(status["reserved"]) == 0
    assert report["spend"]["total"]["requests"] == len(served)
    assert spend <= limit  # and so by no more than one estimate either
    # Every refusal saw more than limit - estimate held or spent, all by requests that were
    # then served for at most their estimate: at least floor(limit / estimate) were served.
    assert len(served) >= math.floor(limit / estimate)
    assert len(served) <= math.floor(limit / per_request)
    assert len(refused) == CONCURRENT - len(served) > 0
    # Refused work never reached an upstream.
    assert mcp_sim.requests() - mcp_before == len(served)
    assert bedrock_sim.requests() == bedrock_before


# -- 2. thresholds -------------------------------------------------------------------------------


def test_each_threshold_fires_exactly_once_per_window(start_gateway: GatewayFactory):
    unit = unit_cost(start_gateway)
    limit = unit * 21  # 17 requests: 81 %; 20: 95.2 %; 21: 100 %
    gateway = start_gateway(configure(budgets=global_daily(limit)))
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        spent = spend_with_emergencies(http, 16)  # 76 %
        report = cost_report(gateway)
        assert fired(report) == []
        assert budget_status(report)["level"] == "normal"

        spent += spend_with_emergencies(http, 1)  # 81 %
        report = cost_report(gateway)
        assert fired(report) == ["info"]
        assert budget_status(report)["level"] == "elevated"
        assert budget_status(report)["fired"] == ["info"]

        spent += spend_with_emergencies(http, 3)  # 95.2 %
        report = cost_report(gateway)
        assert fired(report) == ["info", "critical"]
        assert budget_status(report)["level"] == "critical"

        spent += spend_with_emergencies(http, 1)  # 100 %
        report = cost_report(gateway)
        assert fired(report) == ["info", "critical", "exhausted"]
        assert budget_status(report)["level"] == "exhausted"

        spent += spend_with_emergencies(http, 3)  # 114 %: nothing fires again
        for _ in range(2):
            assert chat(http, "standard").status_code == 429
    report = cost_report(gateway)
    assert fired(report) == ["info", "critical", "exhausted"]
    assert budget_status(report)["fired"] == ["info", "critical", "exhausted"]
    assert Decimal(budget_status(report)["spent"]) == spent == total_spend(report) == unit * 24
    events = {e["threshold"]: e for e in report["budgets"]["events"]}
    assert events["info"]["utilisation"] == round(float(unit * 17 / limit), 6)
    assert events["info"]["severity"] == "info"
    assert "passed 80 %" in events["info"]["message"]
    assert events["critical"]["utilisation"] == round(float(unit * 20 / limit), 6)
    assert events["critical"]["severity"] == "critical"
    assert events["exhausted"]["utilisation"] == 1.0
    assert events["exhausted"]["severity"] == "critical"
    assert Decimal(events["exhausted"]["spent"]) == limit


# -- 3. throttling at 95 % and 100 % -------------------------------------------------------------


def test_critical_level_throttles_low_priority_and_exhaustion_serves_only_critical(
    start_gateway: GatewayFactory, mcp_sim: Simulator
):
    unit = unit_cost(start_gateway)
    limit = unit * 21
    gateway = start_gateway(configure(budgets=global_daily(limit)))
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        spent = spend_with_emergencies(http, 20)  # 95.2 %
        assert budget_status(cost_report(gateway))["level"] == "critical"
        mcp_before = mcp_sim.requests()

        error = refusal(chat(http, "background", "nightly report", max_tokens=5))
        assert "low priority" in error["message"]
        assert mcp_sim.requests() == mcp_before  # refused before any route was tried
        assert total_spend(cost_report(gateway)) == spent  # a refusal costs nothing

        emergency = chat(http, "emergency")
        spent += served_cost(emergency, LIST_PRICES)
        assert emergency.headers["x-hybridroute-route"] == "direct_bedrock"
        assert emergency.json()["choices"][0]["message"]["content"].startswith(
            "Simulated answer from"
        )
        assert budget_status(cost_report(gateway))["level"] == "exhausted"  # 100 %

        error = refusal(chat(http, "standard", "what is our uptime", max_tokens=5))
        assert "exhausted" in error["message"]
        assert "standard is medium priority" in error["message"]
        refusal(chat(http, "background", "nightly report", max_tokens=5))
        assert mcp_sim.requests() == mcp_before

        for operation_type in ("emergency", "infrastructure"):
            response = chat(http, operation_type, max_tokens=None)
            spent += served_cost(response, LIST_PRICES)
            assert response.headers["x-hybridroute-route"] == "direct_bedrock"
    report = cost_report(gateway)
    assert total_spend(report) == spent
    assert set(report["spend"]["by"]["operation_type"]) == {"emergency", "infrastructure"}


# -- 4. the cheaper route between 80 % and 95 % --------------------------------------------------

# Direct Bedrock is the cheaper route here, so preferring it shows on `standard` and
# `background` rows, whose matrix primary is mcp.
CHEAP_BEDROCK = {
    "direct_bedrock": {"input_per_1k": "0.002", "output_per_1k": "0.010"},
    "mcp": {"input_per_1k": "0.003", "output_per_1k": "0.015"},
}


def test_elevated_spend_prefers_the_cheaper_route_for_medium_and_low_rows(
    start_gateway: GatewayFactory,
):
    unit = unit_cost(start_gateway, prices=CHEAP_BEDROCK)
    # one emergency request: 2.5 %; at 82–87 % a hedged high-priority request's worst case (two
    # answers) still fits what is left
    limit = unit * 40
    # implementation (high priority) on the dearer route first: it must keep its order.
    matrix = {
        "implementation": {
            "priority": "high",
            "latency_budget_ms": 15_000,
            "primary": "mcp",
            "fallback": "direct_bedrock",
        }
    }
    gateway = start_gateway(
        configure(prices=CHEAP_BEDROCK, budgets=global_daily(limit), matrix=matrix)
    )
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        control = chat(http, "standard", "which route is cheaper", max_tokens=5)
        spent = served_cost(control, CHEAP_BEDROCK)
        assert control.headers["x-hybridroute-route"] == "mcp"
        assert (
            control.headers["x-hybridroute-reason"]
            == "matrix: mcp, fallback direct_bedrock; mcp healthy"
        )
        while spent / limit < Decimal("0.82"):
            spent += spend_with_emergencies(http, 1, CHEAP_BEDROCK)
        assert spent / limit < Decimal("0.87")
        assert budget_status(cost_report(gateway))["level"] == "elevated"

        for operation_type, primary in (("standard", "mcp"), ("background", "mcp")):
            used = f"{float(spent / limit) * 100:.0f}"
            response = chat(http, operation_type, "which route is cheaper", max_tokens=5)
            spent += served_cost(response, CHEAP_BEDROCK)
            assert response.headers["x-hybridroute-route"] == "direct_bedrock"
            assert response.headers["x-hybridroute-reason"] == (
                f"matrix: {primary}, fallback direct_bedrock; budget {used}% used: preferring "
                "cheaper route direct_bedrock; direct_bedrock healthy"
            )

        high = chat(http, "implementation", "which route is cheaper", max_tokens=5)
        spent += served_cost(high, CHEAP_BEDROCK)
        assert high.headers["x-hybridroute-route"] == "mcp"
        assert "preferring cheaper route" not in high.headers["x-hybridroute-reason"]
    report = cost_report(gateway)
    assert total_spend(report) == spent
    assert budget_status(report)["level"] == "elevated"
    assert fired(report) == ["info"]


# -- 5. a restart keeps spend and fired thresholds -----------------------------------------------


def test_restart_restores_spend_and_does_not_fire_thresholds_again(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator, tmp_path: Path
):
    unit = unit_cost(start_gateway)
    limit = unit * 21
    data = gateway_config_data(bedrock_sim, mcp_sim)
    configure(
        budgets=global_daily(limit),
        storage={
            "backend": "sqlite",
            "sqlite_path": str(tmp_path / "ledger.sqlite3"),
            "flush_interval_ms": 20,
        },
    )(data)

    with serve(data) as first, httpx.Client(base_url=first.url, timeout=30.0) as http:
        spent = spend_with_emergencies(http, 20)  # 95.2 %
        before = cost_report(first)
        assert fired(before) == ["info", "critical"]
        assert total_spend(before) == spent

    with serve(data) as second, httpx.Client(base_url=second.url, timeout=30.0) as http:
        after = cost_report(second)
        assert total_spend(after) == spent
        assert after["spend"]["total"]["requests"] == 20
        assert after["spend"]["by"]["route"].keys() == {"direct_bedrock"}
        status = budget_status(after)
        assert Decimal(status["spent"]) == spent
        assert status["level"] == "critical"
        assert status["fired"] == ["info", "critical"]
        # the events from before the restart, read back; nothing fired again at start
        assert after["budgets"]["events"] == before["budgets"]["events"]
        where = f"SQLite file {(tmp_path / 'ledger.sqlite3').resolve()}"
        assert after["budgets"]["store"]["where"] == where

        refusal(chat(http, "background", "nightly report", max_tokens=5))

        spent += spend_with_emergencies(http, 1)  # 100 %: only the new threshold fires
        final = cost_report(second)
        assert fired(final) == ["info", "critical", "exhausted"]
        assert final["budgets"]["events"][:-1] == before["budgets"]["events"]
        assert total_spend(final) == spent
        assert budget_status(final)["fired"] == ["info", "critical", "exhausted"]


# -- 6. a tenant's own budget --------------------------------------------------------------------

ACME_KEY = "acme-data-plane-key-1"
BETA_KEY = "beta-budget-test-key"


def test_an_exhausted_tenant_budget_throttles_only_that_tenant(start_gateway: GatewayFactory):
    unit = unit_cost(start_gateway)
    # tenant budgets need keys required: no caller can shed its tenant by leaving its key out
    tenants = {
        "require_api_key": True,
        "api_keys": [
            {"tenant": "acme", "sha256": hashlib.sha256(ACME_KEY.encode()).hexdigest()},
            {"tenant": "beta", "sha256": hashlib.sha256(BETA_KEY.encode()).hexdigest()},
        ],
    }
    budgets = {
        "global": {"daily": "10"},
        "tenants": {"acme": {"daily": str(unit * 3)}},
        "retry_after_max_s": RETRY_AFTER_MAX_S,
    }
    gateway = start_gateway(configure(budgets=budgets, tenants=tenants))
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        acme = Decimal(0)
        for _ in range(3):
            acme += served_cost(chat(http, "emergency", api_key=ACME_KEY), LIST_PRICES)
        assert acme == unit * 3

        error = refusal(chat(http, "standard", "how busy are we", max_tokens=5, api_key=ACME_KEY))
        assert "exhausted" in error["message"]
        beta = served_cost(
            chat(http, "standard", "how busy are we", max_tokens=5, api_key=BETA_KEY), LIST_PRICES
        )
        assert chat(http, "standard", "how busy are we", max_tokens=5).status_code == 401
        # critical work of the exhausted tenant is still served
        acme += served_cost(chat(http, "emergency", api_key=ACME_KEY), LIST_PRICES)

    report = cost_report(gateway)
    by_tenant = report["spend"]["by"]["tenant"]
    assert by_tenant.keys() == {"acme", "beta"}
    assert Decimal(by_tenant["acme"]["cost"]) == acme
    assert by_tenant["acme"]["requests"] == 4
    assert Decimal(by_tenant["beta"]["cost"]) == beta
    assert by_tenant["beta"]["requests"] == 1
    tenant_budget = budget_status(report, "tenant:acme")
    assert tenant_budget["level"] == "exhausted"
    assert Decimal(tenant_budget["spent"]) == acme
    assert fired(report, "tenant:acme") == ["info", "critical", "exhausted"]
    assert budget_status(report)["level"] == "normal"
    assert Decimal(budget_status(report)["spent"]) == acme + beta
    assert fired(report) == []


# -- 7. streams ----------------------------------------------------------------------------------


def sse_events(text: str) -> list[Any]:
    """The data of each server-sent event ("[DONE]" kept as a string)."""
    events: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_streams_report_their_cost_and_a_cut_stream_is_charged_an_estimate(
    gateway: RunningGateway, bedrock_sim: Simulator
):
    content = "why is the queue backing up"
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"x-operation-type": "emergency"}
    before = cost_report(gateway)
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        response = http.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200
        assert response.headers["x-hybridroute-route"] == "direct_bedrock"
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        final = [e for e in events[:-1] if e["choices"] and e["choices"][0]["finish_reason"]]
        assert len(final) == 1
        usage_chunk = events[-2]
        assert usage_chunk["choices"] == []
        usage = usage_chunk["usage"]
        expected = price_of(
            LIST_PRICES, "direct_bedrock", usage["prompt_tokens"], usage["completion_tokens"]
        )
        assert expected > 0
        for chunk in (final[0], usage_chunk):
            assert chunk["hybridroute"] == {
                "cache": "off",
                "cost": format(expected.normalize(), "f"),
                "currency": USD,
            }
        after = cost_report(gateway)
        assert total_spend(after) - total_spend(before) == expected
        assert after["spend"]["total"]["requests"] == before["spend"]["total"]["requests"] + 1
        assert Decimal(after["spend"]["total"]["estimated_cost"]) == 0

        bedrock_sim.set(stream_fail_after=2)
        cut = http.post("/v1/chat/completions", json=body, headers=headers)
        assert cut.status_code == 200  # the stream had started
        events = sse_events(cut.text)
        assert any("error" in e for e in events if isinstance(e, dict))
        assert not any(
            e["choices"] and e["choices"][0]["finish_reason"]
            for e in events
            if isinstance(e, dict) and "choices" in e
        )
        relayed = "".join(
            e["choices"][0]["delta"].get("content") or ""
            for e in events
            if isinstance(e, dict) and e.get("choices")
        )
        assert relayed  # two pieces of the answer reached the client

    # The cut stream is charged (estimated) when the gateway closes it, just after the client
    # saw the error event.
    charges = after["spend"]["total"]["charges"] + 1

    def charged() -> bool:
        return bool(cost_report(gateway)["spend"]["total"]["charges"] == charges)

    wait_for(charged, timeout=5.0)
    report = cost_report(gateway)
    system = str(DEFAULT_OPERATION_PARAMS["emergency"]["system_prompt"])
    estimated = price_of(
        LIST_PRICES,
        "direct_bedrock",
        prompt_estimate(system, content),
        max(1, (len(relayed) + 3) // 4),
    )
    total = report["spend"]["total"]
    assert Decimal(total["estimated_cost"]) == estimated > 0
    assert total_spend(report) - total_spend(after) == estimated
    assert total["requests"] == after["spend"]["total"]["requests"]  # not a served answer
    assert Decimal(report["spend"]["by"]["route"]["direct_bedrock"]["estimated_cost"]) == estimated
