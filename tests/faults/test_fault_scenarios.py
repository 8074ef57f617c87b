"""Fault scenarios: a running gateway, the simulators' fault knobs, and the figures that result.

Each scenario checks the resilience promise it is named after and reports its figures, printed
at the end of the run under "fault scenarios: figures". Times are functional bounds (a budget
that must hold, two probe intervals), with the slack a busy two-core machine needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx2 as httpx

from hybridroute.config.schema import GatewayConfig
from hybridroute.signals import Flag
from tests.faults.conftest import Report
from tests.faults.traffic import Outcome, ask, ask_async, p95, summary
from tests.loopback import GatewayFactory, RunningGateway, Simulator, wait_for

FALLBACK_ELIGIBLE = ("infrastructure", "meta_monitor", "implementation")


def configure(**sections: Any) -> Callable[[dict[str, Any]], None]:
    """Config changes: `matrix={op: {key: value}}`, `routes={id: {...}}`, other sections merged."""

    def change(data: dict[str, Any]) -> None:
        if "matrix" in sections:
            defaults = GatewayConfig.model_validate({"routes": data["routes"]}).matrix
            rows = {op: row.model_dump(mode="json") for op, row in defaults.items()}
            rows.update(data.get("matrix", {}))
            for op, values in sections["matrix"].items():
                rows[op].update(values)
            data["matrix"] = rows
        for name, values in sections.items():
            if name == "matrix":
                continue
            if name == "routes":
                for route, route_values in values.items():
                    data["routes"][route].update(route_values)
            else:
                data.setdefault(name, {}).update(values)

    return change


def client(gateway: RunningGateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, timeout=30.0)


def breaker(gateway: RunningGateway, route: str) -> str:
    _, body = gateway.get("/ready")
    return str(body["routes"][route]["breaker"])


def test_primary_outage_costs_no_client_errors_for_fallback_eligible_work(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, report: Report
):
    threshold = 3
    gateway = start_gateway(
        configure(breaker={"consecutive_failures": threshold, "open_s": 60, "max_open_s": 120})
    )
    bedrock_sim.set(outage=True)
    with client(gateway) as http:
        outcomes = [ask(http, FALLBACK_ELIGIBLE[i % 3]) for i in range(60)]
        reached = bedrock_sim.requests()
        emergency = [ask(http, "emergency") for _ in range(3)]

    errors = [o for o in outcomes if not o.ok]
    failed_first = [i for i, o in enumerate(outcomes) if "direct_bedrock:failed" in o.attempts]
    assert errors == []
    assert all(o.route == "mcp" for o in outcomes)
    assert len(failed_first) <= threshold  # then the breaker is open: no more failed attempts
    assert failed_first == list(range(len(failed_first)))
    assert breaker(gateway, "direct_bedrock") == "open"
    assert reached == len(failed_first)
    # emergency has no fallback: it fails fast with a 503 naming the route
    assert {o.status for o in emergency} == {503}
    report(
        "primary outage (direct_bedrock down, breaker opens after 3 consecutive failures)",
        [
            f"fallback-eligible requests: {summary(outcomes)}",
            f"failed primary attempts before the breaker opened: {len(failed_first)} "
            f"(allowed: {threshold}); client-visible errors: {len(errors)}",
            f"requests that reached the Bedrock simulator: {reached}",
            f"emergency (no fallback, forced onto the open breaker with its 1 retry): "
            f"{summary(emergency)}",
        ],
    )


def test_a_slow_primary_is_hedged_and_critical_p95_stays_inside_the_budget(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator, report: Report
):
    budget_ms = 2000
    gateway = start_gateway(
        configure(
            matrix={"infrastructure": {"latency_budget_ms": budget_ms}},
            breaker={"consecutive_failures": 5},
        )
    )
    bedrock_sim.set(latency_ms=20)
    mcp_sim.set(latency_ms=20)
    with client(gateway) as http:
        warm = [ask(http, "infrastructure") for _ in range(30)]  # the primary's p95 is learnt
        time.sleep(1.1)  # noqa: TID251 - the observed p95 is recomputed at most once a second
        learnt_p95 = gateway.runtime.monitor.route_p95_s("direct_bedrock")
        bedrock_sim.set(latency_ms=budget_ms)  # 2x its share (half the budget)
        slow = [ask(http, "infrastructure") for _ in range(40)]
        breaker_after_slow = breaker(gateway, "direct_bedrock")
        gateway.runtime.flags.set(Flag.PERFORMANCE_OPTIMIZATION, False)
        unhedged = [ask(http, "infrastructure") for _ in range(10)]

    assert all(o.ok and o.route == "direct_bedrock" for o in warm)
    assert learnt_p95 is not None
    assert all(o.ok for o in slow)
    hedged = [o for o in slow if o.hedged]
    assert len(hedged) == len(slow)
    assert all(o.route == "mcp" and "direct_bedrock:cancelled" in o.attempts for o in slow)
    slow_p95 = p95([o.latency_s for o in slow])
    assert slow_p95 * 1000 <= budget_ms
    assert breaker_after_slow == "closed"  # a lost race is not a failure
    report(
        f"slow primary (direct_bedrock at {budget_ms} ms = 2x its share of infrastructure's "
        f"{budget_ms} ms budget)",
        [
            f"primary's observed p95 before it slowed (the hedge delay, at least "
            f"min_attempt_ms): {learnt_p95 * 1000:.0f} ms",
            f"hedged: {summary(slow)}; {len(hedged)} hedged, all won by mcp",
            f"critical p95 {slow_p95 * 1000:.0f} ms, budget {budget_ms} ms",
            f"same traffic with ENABLE_PERFORMANCE_OPTIMIZATION off: {summary(unhedged)} "
            f"(each waits out the primary's share until its breaker opens)",
        ],
    )


def test_overload_at_three_times_capacity_sheds_low_and_serves_critical(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator, report: Report
):
    in_flight, queue, latency_ms = 4, 16, 200
    limits = {"max_in_flight": in_flight, "max_queue": queue}
    gateway = start_gateway(configure(routes={"direct_bedrock": limits, "mcp": limits}))
    for sim in (bedrock_sim, mcp_sim):
        sim.set(latency_ms=latency_ms, jitter_ms=20)
    capacity_rps = 2 * in_flight / (latency_ms / 1000)
    offered_rps, seconds = 3 * capacity_rps, 5.0

    async def offer() -> list[Outcome]:
        limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60.0, limits=limits) as http:
            tasks = []
            started = time.monotonic()
            for i in range(int(offered_rps * seconds)):
                delay = started + i / offered_rps - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                operation = "infrastructure" if i % 4 == 0 else "background"
                tasks.append(asyncio.create_task(ask_async(http, operation)))
            return list(await asyncio.gather(*tasks))

    outcomes = asyncio.run(offer())
    critical = [o for o in outcomes if o.operation_type == "infrastructure"]
    low = [o for o in outcomes if o.operation_type == "background"]
    critical_ok = sum(o.ok for o in critical) / len(critical)
    shed = [o for o in low if o.status == 429]
    assert critical_ok >= 0.99
    assert not [o for o in critical if o.status == 429]
    assert shed
    assert all(o.retry_after is not None and int(o.retry_after) >= 1 for o in shed)
    assert {o.status for o in low} <= {200, 429}
    monitor = gateway.runtime.monitor.report()
    assert monitor.shed.get("low", 0) == len(shed)
    report(
        f"overload: {offered_rps:.0f} req/s offered for {seconds:.0f} s to a capacity of "
        f"{capacity_rps:.0f} req/s (2 routes x {in_flight} in flight at {latency_ms} ms)",
        [
            f"critical (infrastructure, 1 in 4): {summary(critical)}",
            f"low (background, 3 in 4): {summary(low)}",
            f"critical success rate {critical_ok * 100:.1f} % (required: 99 %)",
        ],
    )


def test_recovery_returns_traffic_to_the_primary_within_two_probe_intervals(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, report: Report
):
    interval = 0.4
    gateway = start_gateway(
        configure(
            health={"probe_interval_s": interval, "probe_timeout_s": 0.3, "probe_jitter": 0.0},
            breaker={"open_s": 60, "max_open_s": 120},  # so the breaker's timer cannot recover it
        )
    )
    bedrock_sim.set(outage=True)
    with client(gateway) as http:
        during = [ask(http, "infrastructure") for _ in range(6)]
        assert breaker(gateway, "direct_bedrock") == "open"
        bedrock_sim.set(outage=False)
        closed_after = wait_for(lambda: breaker(gateway, "direct_bedrock") == "closed", 10)
        after = ask(http, "infrastructure")
    assert all(o.ok for o in during)
    assert closed_after <= 2 * interval + 0.3  # two passing probes, plus a probe's own latency
    assert after.route == "direct_bedrock"
    report(
        f"recovery (probes every {interval} s; breaker open time 60 s)",
        [
            f"during the outage: {summary(during)}, all on mcp",
            f"breaker closed {closed_after:.2f} s after the outage ended "
            f"(two probe intervals: {2 * interval:.1f} s); the next request went to "
            f"{after.route}",
        ],
    )


def test_both_routes_down_is_an_emergency_that_ends_by_itself(
    start_gateway: GatewayFactory, bedrock_sim: Simulator, mcp_sim: Simulator, report: Report
):
    interval = 0.4
    gateway = start_gateway(
        configure(
            health={"probe_interval_s": interval, "probe_timeout_s": 0.3, "probe_jitter": 0.0},
            breaker={"open_s": 60, "max_open_s": 120},
        )
    )
    support = gateway.runtime.support
    bedrock_sim.set(outage=True)
    mcp_sim.set(outage=True)
    with client(gateway) as http:
        entered = wait_for(lambda: support.in_emergency, 10)
        during = [ask(http, op) for op in ("infrastructure", "standard")]
        mcp_sim.set(outage=False)
        resolved = wait_for(lambda: not support.in_emergency, 10)
        after = ask(http, "standard")
    kinds = [e.kind for e in support.status().events]
    assert "emergency_started" in kinds
    assert "emergency_resolved" in kinds
    assert {o.status for o in during} == {503}
    assert after.ok
    assert after.route == "mcp"
    started = next(e for e in support.status().events if e.kind == "emergency_started")
    report(
        "both routes down (probes every 0.4 s)",
        [
            f"emergency declared {entered:.2f} s after both outages began: {started.message}",
            f"during it: {summary(during)} (nothing to serve with; each error lists its attempts)",
            f"emergency over {resolved:.2f} s after mcp came back; the next standard request "
            f"was served by {after.route}",
        ],
    )
