"""Alerts end to end: a gateway on a FakeClock over the loopback simulators, real traffic with
fault knobs, alert evaluation driven by hand, and a loopback receiver standing in for a webhook
(`/hook`) and a Slack incoming webhook (`/slack`).

How time works here. The gateway's runtime clock is a `FakeClock`. Requests are stamped with the
gateway's steady clock (`runtime.gateway.now()`: the wall time at start plus monotonic time
since, which on a FakeClock is its `now()`), while their latency is measured in real time. A
scenario is a schedule of fake instants `t` (seconds after the gateway started): at each, the
clock is moved to `t` on the gateway's own event loop (the observability loop, which sleeps on
that clock, wakes and runs one evaluation of its own, before the step's traffic), the step's
batch of requests is sent for real, and then the alert rules are evaluated once more on the
gateway's loop, so that evaluation sees the batch.

What an evaluation sees. Each rule's condition is judged on the traffic figures over
`alerts.condition_window_s` (60 s), from 10-second buckets, the oldest overlapping bucket taken
whole: a batch sent at `t` (a multiple of 10) counts in every evaluation from `t` to `t + 69`.
A rule's `for_s` is how long its condition must hold at every evaluation, so a condition that
must hold for 10 minutes needs a failing or slow batch every 30 or 50 s of fake time; a step at
`for_s - 5` (one default evaluation interval early) proves an alert does not fire early. A
firing alert resolves once its condition has been *known* false at every evaluation for
`alerts.resolve_after_s` (60 s unless a scenario says otherwise); a step 5 s before proves it
does not resolve early. A figure over fewer than `slo.min_requests` requests is unknown, and
changes nothing.

Config used throughout: `slo.min_requests` 4 (one batch of four requests is enough to judge a
figure), `routing.retry_backoff_ms` 0 (a retry's backoff sleeps on the runtime clock, which would
hold a failing emergency request until the test moved time), the rules' `for_s` exactly the
seed's. Which other knobs a scenario turns is said where it does.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import httpx2 as httpx
import orjson
import pytest

from hybridroute.app import create_app
from hybridroute.config.load import parse_config
from hybridroute.notify import DEDUPE_HEADER
from hybridroute.serving import ThreadedServer
from hybridroute.testing import FakeClock
from tests.loopback import RunningGateway, Simulator, gateway_config_data

T = TypeVar("T")

START_MONO = 1000.0
START_WALL = 1_800_000_000.0  # 2027-01-15T08:00:00Z: a minute boundary, 16 h before midnight
MIN_REQUESTS = 4
PER_BATCH = 4
RESOLVE_AFTER_S = 60.0  # alerts.resolve_after_s' default
WAIT_S = 15.0  # real seconds to wait for deliveries and recorded requests
STOPPED = " (the gateway stopped)"
LIST_PRICES = {
    "direct_bedrock": {"input_per_1k": "0.003", "output_per_1k": "0.015"},
    "mcp": {"input_per_1k": "0.00025", "output_per_1k": "0.00125"},
}
# The breaker never opens: every request tries the matrix's first route, so each one counts
# exactly as the scenario says (a fallback after the primary failed, or a failure).
BREAKER_NEVER_OPENS = {"consecutive_failures": 1_000_000, "min_requests": 1_000_000}


# -- the receiver ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    path: str
    status: int
    key: str
    body: dict[str, Any]


@dataclass
class Hook:
    """Records every POST; answers 500 to the next `fail[path]` requests on that path."""

    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        with self.lock:
            status = 200
            if self.fail.get(path, 0) > 0:
                self.fail[path] -= 1
                status = 500
            self.deliveries.append(
                Delivery(path, status, headers.get(DEDUPE_HEADER.lower(), ""), orjson.loads(body))
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok" if status == 200 else b"no"})

    def on(self, path: str, *, ok_only: bool = True) -> list[Delivery]:
        with self.lock:
            return [
                d for d in self.deliveries if d.path == path and (d.status == 200 or not ok_only)
            ]


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    with ThreadedServer(receiver, name="alert-receiver") as server:
        receiver.url = server.url
        yield receiver


# -- the gateway on a FakeClock ----------------------------------------------------------------


class Stage:
    """A gateway on a FakeClock, its alert sinks pointed at `hook`; `at(t)` moves to fake t."""

    def __init__(
        self,
        bedrock_sim: Simulator,
        mcp_sim: Simulator,
        hook: Hook,
        change: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        data = copy.deepcopy(gateway_config_data(bedrock_sim, mcp_sim))
        data["slo"] = {"min_requests": MIN_REQUESTS}
        data["routing"] = {"retry_backoff_ms": 0, "retry_backoff_max_ms": 0}
        data["alerts"] = {
            "sinks": [
                {"type": "webhook", "url": f"{hook.url}/hook"},
                {"type": "slack", "url": f"{hook.url}/slack"},
            ]
        }
        if change is not None:
            change(data)
        self.clock = FakeClock(start=START_MONO, wall_start=START_WALL)
        self.app = create_app(parse_config(data), clock=self.clock)
        self.server = ThreadedServer(self.app, name="gateway").start()
        self.gateway = RunningGateway(self.server.url, self.app)
        self.gateway.wait_ready()
        self.hook = hook
        self.sent = 0
        self.states: list[tuple[float, dict[str, str]]] = []

    def close(self) -> None:
        """Stop the gateway (its runtime's `aclose()` runs); a second call does nothing."""
        self.server.stop()

    @property
    def runtime(self) -> Any:
        return self.gateway.runtime

    # -- running things on the gateway's loop ---------------------------------------------------

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return asyncio.run_coroutine_threadsafe(fn(), self.server.loop).result(timeout=30)

    def now(self) -> float:
        return self.clock.monotonic() - START_MONO

    def steady_now(self) -> float:
        """The gateway's steady clock (what request events and alert events are stamped
        with), relative to the start."""

        async def read() -> float:
            return float(self.runtime.gateway.now()) - START_WALL

        return self.call(read)

    def at(self, t: float) -> None:
        """Move the fake clock to t; the sleepers it wakes (the observability loop among
        them, which evaluates the rules once) run their step before this returns."""
        delta = START_MONO + t - self.clock.monotonic()
        assert delta >= 0, f"time runs forward only: at {self.now()}, asked for {t}"

        async def move() -> None:
            self.clock.advance(delta)
            for _ in range(20):
                await asyncio.sleep(0)

        self.call(move)

    def evaluate(self) -> dict[str, str]:
        """Evaluate the alert rules now; returns {rule: status} of pending and active alerts."""

        async def run() -> dict[str, str]:
            self.runtime.observability.evaluate()
            manager = self.runtime.alerts
            return {a.rule: a.status for a in [*manager.pending(), *manager.active()]}

        states = self.call(run)
        self.states.append((self.now(), states))
        return states

    def readings(self) -> dict[str, list[tuple[float | None, dict[str, str]]]]:
        async def run() -> dict[str, list[tuple[float | None, dict[str, str]]]]:
            found = self.runtime.observability.readings()
            return {m: [(r.value, dict(r.labels)) for r in rs] for m, rs in found.items()}

        return self.call(run)

    def figure_now(self, metric: str) -> float | None:
        """The one (unlabelled) reading of a traffic figure now."""
        [(value, labels)] = self.readings()[metric]
        assert labels == {}
        return value

    # -- traffic ----------------------------------------------------------------------------------

    def send(self, operation: str, contents: list[str], **extra: Any) -> list[httpx.Response]:
        """Send one request per content, all at once; wait until the gateway recorded them."""

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=self.gateway.url, timeout=30.0) as http:
                return list(
                    await asyncio.gather(
                        *(
                            http.post(
                                "/v1/chat/completions",
                                json={
                                    "model": "default",
                                    "messages": [{"role": "user", "content": content}],
                                    "max_tokens": 8,
                                    **extra,
                                },
                                headers={"x-operation-type": operation},
                            )
                            for content in contents
                        )
                    )
                )

        responses = asyncio.run(burst())
        self.sent += len(contents)
        self._wait_recorded()
        return responses

    def _wait_recorded(self) -> None:
        async def count() -> int:
            runtime = self.runtime
            # events are stamped with the gateway's steady clock: read the window on it too
            return int(runtime.traffic.totals(86_400, runtime.gateway.now()).requests)

        deadline = time.monotonic() + WAIT_S
        while self.call(count) < self.sent:
            assert time.monotonic() < deadline, "the gateway did not record every request"
            time.sleep(0.005)  # noqa: TID251 - polling from the test thread

    # -- admin API ---------------------------------------------------------------------------------

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        with httpx.Client(base_url=self.gateway.url, timeout=10.0) as http:
            response = http.request(method, path, json=body)
        return response.status_code, response.json()

    def alerts(self) -> dict[str, Any]:
        status, body = self.gateway.get("/admin/alerts")
        assert status == 200, body
        return body

    # -- what happened --------------------------------------------------------------------------

    def episodes(self) -> dict[str, list[dict[str, Any]]]:
        """Every alert the manager knows (pending, active, resolved), per rule, with its times
        relative to the start: pending_t, fired_t, resolved_t."""

        async def run() -> dict[str, list[dict[str, Any]]]:
            manager = self.runtime.alerts
            found: dict[str, list[dict[str, Any]]] = {}
            for alert in [*manager.pending(), *manager.active(), *manager.resolved(500)]:
                entry = alert.as_dict()
                entry["pending_t"] = alert.pending_since - START_MONO
                entry["fired_t"] = (
                    None if alert.started_at is None else alert.started_at - START_WALL
                )
                entry["resolved_t"] = (
                    None if alert.resolved_at is None else alert.resolved_at - START_WALL
                )
                found.setdefault(alert.rule, []).append(entry)
            return found

        return self.call(run)

    def wait_delivered(self, per_sink: dict[str, int]) -> list[dict[str, Any]]:
        """Wait until each sink delivered exactly that many notices and holds none."""
        deadline = time.monotonic() + WAIT_S
        while True:
            sinks = self.alerts()["notifications"]
            got = {s["name"]: s["delivered"] for s in sinks}
            if got == per_sink and all(s["queued"] == 0 for s in sinks):
                time.sleep(0.1)  # noqa: TID251 - a late duplicate would show up now
                sinks = self.alerts()["notifications"]
                assert {s["name"]: s["delivered"] for s in sinks} == per_sink
                return list(sinks)
            assert time.monotonic() < deadline, f"deliveries: {sinks}, expected {per_sink}"
            time.sleep(0.02)  # noqa: TID251 - polling from the test thread

    def check_notices(
        self,
        rule: str,
        transitions: list[str],
        *,
        slack: bool = True,
        episode: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The webhook and (unless `slack` is False: none there) the Slack sink each got exactly
        these transitions of `rule`'s one alert, once each, every body's dedupe key matching
        its header and the alert. `episode`: the alert as known before the gateway stopped
        (else it is read from the running gateway)."""
        if episode is None:
            [episode] = self.episodes()[rule]
        hooked = [d for d in self.hook.on("/hook") if d.body["rule"] == rule]
        assert [d.body["transition"] for d in hooked] == transitions, rule
        for d in hooked:
            assert d.body["alert_id"] == episode["id"]
            assert d.key == d.body["dedupe_key"] == f"{episode['id']}:{d.body['transition']}"
            assert d.body["severity"] == episode["severity"]
            assert d.body["labels"] == episode["labels"]
            assert d.body["started_at"] == START_WALL + episode["fired_t"]
            assert d.body["gateway"] == "hybridroute"
        keys = {d.key for d in hooked}
        slacked = [d for d in self.hook.on("/slack", ok_only=False) if d.key in keys]
        assert sorted(d.key for d in slacked) == (sorted(keys) if slack else []), rule
        for d in slacked:
            transition = d.key.rsplit(":", 1)[1]
            assert d.body["text"].startswith(f"[{episode['severity'].upper()}] {transition}: ")
            assert d.body["text"].endswith(f" ({rule}, hybridroute)")
            assert d.body["blocks"][2]["elements"][0]["text"].endswith(f"dedupe key {d.key}")
        return episode

    def figure(self, rule: str, episode: dict[str, Any]) -> None:
        counts: dict[str, int] = {}
        for d in self.hook.on("/hook"):
            if d.body["rule"] == rule:
                counts[d.body["transition"]] = counts.get(d.body["transition"], 0) + 1
        said = ", ".join(f"{k} {v}" for k, v in counts.items())
        print(  # the figure line the brief asks for
            f"rule {rule}: pending at t+{episode['pending_t']:g}s, fired at "
            f"t+{episode['fired_t']:g}s, resolved at t+{episode['resolved_t']:g}s, "
            f"notices: {said}"
        )


@pytest.fixture
def stage(bedrock_sim: Simulator, mcp_sim: Simulator, hook: Hook) -> Iterator[Callable[..., Stage]]:
    started: list[Stage] = []

    def start(change: Callable[[dict[str, Any]], None] | None = None) -> Stage:
        s = Stage(bedrock_sim, mcp_sim, hook, change)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def rules(**changes: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["alerts"]["rules"] = changes

    return change


def unique(prefix: str, t: float, n: int = PER_BATCH) -> list[str]:
    return [f"{prefix} question {int(t)} number {i}" for i in range(n)]


def timeline(episode: dict[str, Any]) -> tuple[float, float | None, float | None]:
    return episode["pending_t"], episode["fired_t"], episode["resolved_t"]


# -- P95 latency (5 min critical, 10 min warning) --------------------------------------------------

# Lowered thresholds, the seed's durations: the MCP simulator answers in 400 ms (slow: above
# both) or at once (fast: a few ms, far below both), so thirteen slow batches take ~5 s of real
# time instead of the ~25 s that 2.1 s answers would. `standard` is MCP-first, never hedged.
# Slow batches every 50 s keep the 60-second p95 known and above both thresholds.
P95_CRITICAL_S = 0.30
P95_WARNING_S = 0.25
SLOW_MS = 400


@pytest.mark.slow
def test_latency_alerts_fire_after_5_and_10_minutes_and_resolve(
    stage: Callable[..., Stage], mcp_sim: Simulator
) -> None:
    s = stage(
        rules(
            latency_p95_critical={"threshold": P95_CRITICAL_S},
            latency_p95_warning={"threshold": P95_WARNING_S},
        )
    )
    body = s.alerts()
    assert body["rules"]["latency_p95_critical"]["for_s"] == 300
    assert body["rules"]["latency_p95_warning"]["for_s"] == 600
    assert body["alerting"] is True

    def step(t: float) -> dict[str, str]:
        s.at(t)
        answers = s.send("standard", unique("slow", t))
        assert [r.status_code for r in answers] == [200] * PER_BATCH
        assert {r.headers["x-hybridroute-route"] for r in answers} == {"mcp"}
        return s.evaluate()

    def quiet(t: float) -> dict[str, str]:
        s.at(t)
        return s.evaluate()

    mcp_sim.set(latency_ms=SLOW_MS)
    both_pending = {"latency_p95_critical": "pending", "latency_p95_warning": "pending"}
    assert step(0) == both_pending
    listed = s.alerts()
    assert sorted(a["rule"] for a in listed["pending"]) == sorted(both_pending)
    assert listed["active"] == []
    assert listed["resolved"] == []
    for t in (50, 100, 150, 200, 250):
        assert step(t) == both_pending, t
    p95 = s.figure_now("generation_p95_s")
    assert p95 is not None
    assert p95 > P95_CRITICAL_S
    assert quiet(295) == both_pending  # one evaluation before 5 min: not yet
    assert step(300) == {"latency_p95_critical": "firing", "latency_p95_warning": "pending"}
    listed = s.alerts()
    assert [(a["rule"], a["status"]) for a in listed["active"]] == [
        ("latency_p95_critical", "firing")
    ]
    assert [a["rule"] for a in listed["pending"]] == ["latency_p95_warning"]
    critical_id = listed["active"][0]["id"]
    warning_id = listed["pending"][0]["id"]

    # An operator acknowledges the critical alert: one notice, then silence until it resolves.
    assert step(350) == {"latency_p95_critical": "firing", "latency_p95_warning": "pending"}
    status, acked = s.admin(
        "POST", f"/admin/alerts/{critical_id}/acknowledge", {"by": "alice", "note": "on it"}
    )
    assert status == 200, acked
    assert (acked["status"], acked["acknowledged_by"], acked["acknowledge_note"]) == (
        "acknowledged",
        "alice",
        "on it",
    )
    assert acked["acknowledged_at"] == START_WALL + 350
    status, again = s.admin("POST", f"/admin/alerts/{critical_id}/acknowledge", {"by": "bob"})
    assert status == 400, again
    assert again["error"]["message"] == f"alert {critical_id} was already acknowledged by alice"
    status, early = s.admin("POST", f"/admin/alerts/{warning_id}/acknowledge", {"by": "bob"})
    assert status == 400, early
    assert early["error"]["message"] == (
        f"alert {warning_id} is pending, not firing: nothing to acknowledge yet"
    )
    status, missing = s.admin("POST", "/admin/alerts/alert-000000-424242/acknowledge", {})
    assert status == 404, missing
    assert missing["error"]["code"] == "not_found"

    critical_acked = {"latency_p95_critical": "acknowledged", "latency_p95_warning": "pending"}
    for t in (400, 450, 500, 550):
        assert step(t) == critical_acked, t
    listed = s.alerts()
    assert [(a["id"], a["status"], a["acknowledged_by"]) for a in listed["active"]] == [
        (critical_id, "acknowledged", "alice")
    ]
    assert [a["transition"] for a in listed["active"][0]["transitions"]] == [
        "firing",
        "acknowledged",
    ]
    assert [a["id"] for a in listed["pending"]] == [warning_id]
    assert quiet(595) == critical_acked  # one evaluation before 10 min: not yet
    both_active = {"latency_p95_critical": "acknowledged", "latency_p95_warning": "firing"}
    assert step(600) == both_active
    listed = s.alerts()
    assert [a["rule"] for a in listed["active"]] == [
        "latency_p95_critical",  # critical first
        "latency_p95_warning",
    ]
    assert listed["pending"] == []

    # Fast answers from t=650. At 650 the window still holds the slow batch of t=600 (4 of 8
    # answers: the p95 is slow); from 700 it holds fast answers only: the condition is known
    # false from 700, so both alerts resolve at 760 (resolve_after_s, 60 s), not at 755.
    mcp_sim.set(latency_ms=0)
    assert step(650) == both_active
    assert step(700) == both_active
    p95 = s.figure_now("generation_p95_s")
    assert p95 is not None
    assert p95 < P95_WARNING_S
    assert step(750) == both_active
    assert quiet(755) == both_active  # known false for 55 s: not yet
    assert quiet(760) == {}
    listed = s.alerts()
    assert listed["active"] == []
    assert listed["pending"] == []
    # newest first: both cleared in one evaluation, which resolves in the order the alerts
    # were opened (the critical rule comes first in the rules)
    assert [(a["rule"], a["status"]) for a in listed["resolved"]] == [
        ("latency_p95_warning", "resolved"),
        ("latency_p95_critical", "resolved"),
    ]
    assert [a["resolved_at"] for a in listed["resolved"]] == [START_WALL + 760] * 2
    assert listed["evaluations"] >= len(s.states)
    assert listed["last_evaluated_at"] == START_WALL + 760
    assert s.steady_now() == 760  # on a FakeClock, the steady clock is the fake one

    s.wait_delivered({"webhook": 5, "slack": 5})
    critical = s.check_notices("latency_p95_critical", ["firing", "acknowledged", "resolved"])
    warning = s.check_notices("latency_p95_warning", ["firing", "resolved"])
    assert timeline(critical) == (0, 300, 760)
    assert timeline(warning) == (0, 600, 760)
    assert critical["acknowledged_by"] == "alice"
    resolved_notice = [
        d.body
        for d in s.hook.on("/hook")
        if d.body["rule"] == "latency_p95_critical" and d.body["transition"] == "resolved"
    ]
    assert resolved_notice[0]["acknowledged_by"] == "alice"
    assert resolved_notice[0]["at"] == START_WALL + 760
    assert not resolved_notice[0]["summary"].endswith(STOPPED)
    assert {d.body["rule"] for d in s.hook.on("/hook")} == {
        "latency_p95_critical",
        "latency_p95_warning",
    }
    s.figure("latency_p95_critical", critical)
    s.figure("latency_p95_warning", warning)


# -- error rate (2 min critical, 5 min warning) ----------------------------------------------------


def error_stage(stage: Callable[..., Stage]) -> Stage:
    """`emergency` has no fallback: with the Bedrock simulator out, every emergency request
    fails (5xx). The breaker is kept closed so no Direct Bedrock connection alert joins in,
    and routing efficiency (a failed request is not efficient) is judged by its own test."""

    def change(data: dict[str, Any]) -> None:
        data["breaker"] = BREAKER_NEVER_OPENS
        data["alerts"]["rules"] = {"routing_efficiency_info": {"enabled": False}}

    return stage(change)


def emergency_step(s: Stage, t: float, *, failing: bool, n: int = PER_BATCH) -> dict[str, str]:
    s.at(t)
    answers = s.send("emergency", unique("incident", t, n))
    expected = {503} if failing else {200}
    assert {r.status_code for r in answers} == expected, [r.text for r in answers]
    return s.evaluate()


def test_error_rate_alerts_fire_after_2_and_5_minutes_and_resolve(
    stage: Callable[..., Stage], bedrock_sim: Simulator
) -> None:
    s = error_stage(stage)

    def step(t: float, *, failing: bool) -> dict[str, str]:
        return emergency_step(s, t, failing=failing)

    def quiet(t: float) -> dict[str, str]:
        s.at(t)
        return s.evaluate()

    # A failing batch every 30 s.
    bedrock_sim.set(outage=True)
    both_pending = {"error_rate_critical": "pending", "error_rate_warning": "pending"}
    assert step(0, failing=True) == both_pending
    assert s.readings()["error_rate"] == [(1.0, {})]
    for t in (30, 60, 90):
        assert step(t, failing=True) == both_pending, t
    assert quiet(115) == both_pending  # one evaluation before 2 min
    critical_firing = {"error_rate_critical": "firing", "error_rate_warning": "pending"}
    assert step(120, failing=True) == critical_firing
    for t in (150, 180, 210, 240, 270):
        assert step(t, failing=True) == critical_firing, t
    assert quiet(295) == critical_firing  # one evaluation before 5 min
    both_firing = {"error_rate_critical": "firing", "error_rate_warning": "firing"}
    assert step(300, failing=True) == both_firing

    # Recovered from t=330. The failures of t=270 and t=300 leave the window at 340 and 370:
    # the error rate is 8/12 at 330, 4/12 at 360 and known to be 0 from 390 (the evaluation
    # before that step's batch), so both alerts resolve at 450, not at 445.
    bedrock_sim.set(outage=False)
    assert step(330, failing=False) == both_firing
    assert s.figure_now("error_rate") == 8 / 12
    assert step(360, failing=False) == both_firing
    assert s.figure_now("error_rate") == 4 / 12
    assert step(390, failing=False) == both_firing
    assert s.figure_now("error_rate") == 0.0
    assert step(420, failing=False) == both_firing
    assert quiet(445) == both_firing  # known false for 55 s: not yet
    assert quiet(450) == {}

    s.wait_delivered({"webhook": 4, "slack": 4})
    critical = s.check_notices("error_rate_critical", ["firing", "resolved"])
    warning = s.check_notices("error_rate_warning", ["firing", "resolved"])
    assert timeline(critical) == (0, 120, 450)
    assert timeline(warning) == (0, 300, 450)
    assert {d.body["rule"] for d in s.hook.on("/hook")} == {
        "error_rate_critical",
        "error_rate_warning",
    }
    s.figure("error_rate_critical", critical)
    s.figure("error_rate_warning", warning)


def test_an_outage_that_silences_traffic_does_not_resolve_a_firing_error_rate_alert(
    stage: Callable[..., Stage], bedrock_sim: Simulator
) -> None:
    s = error_stage(stage)

    def quiet(t: float) -> dict[str, str]:
        s.at(t)
        return s.evaluate()

    bedrock_sim.set(outage=True)
    both_pending = {"error_rate_critical": "pending", "error_rate_warning": "pending"}
    critical_firing = {"error_rate_critical": "firing", "error_rate_warning": "pending"}
    for t in (0, 30, 60, 90):
        assert emergency_step(s, t, failing=True) == both_pending, t
    assert emergency_step(s, 120, failing=True) == critical_firing

    # The outage goes on, but the callers mostly give up: one (failing) request every 30 s.
    # The window holds 9 and 6 requests at 150 and 180 (full batches are still in it), then
    # three at most: the error rate is unknown, and an unknown figure changes nothing:
    # the firing alert keeps firing, the pending one stays pending (its 5 min are up at 300,
    # but it has no known reading to fire on).
    for t in (150, 180):
        assert emergency_step(s, t, failing=True, n=1) == critical_firing, t
        assert s.figure_now("error_rate") == 1.0
    for t in range(210, 601, 30):
        assert emergency_step(s, t, failing=True, n=1) == critical_firing, t
        assert s.figure_now("error_rate") is None, t
    assert quiet(605) == critical_firing
    listed = s.alerts()
    [active] = listed["active"]
    assert (active["rule"], active["status"], active["value"]) == (
        "error_rate_critical",
        "firing",
        1.0,  # its last known reading
    )
    assert active["resolved_at"] is None
    assert [a["rule"] for a in listed["pending"]] == ["error_rate_warning"]
    assert listed["resolved"] == []
    episodes = s.episodes()
    assert timeline(episodes["error_rate_critical"][0]) == (0, 120, None)
    assert timeline(episodes["error_rate_warning"][0]) == (0, None, None)  # pending since 0
    s.wait_delivered({"webhook": 1, "slack": 1})  # the critical alert's firing, nothing since

    # The callers come back (still failing): the first known reading fires the warning, its
    # condition having held at every evaluation that could judge it since t=0.
    both_firing = {"error_rate_critical": "firing", "error_rate_warning": "firing"}
    assert emergency_step(s, 630, failing=True) == both_firing

    # Recovered from t=660: known false from 720 (the evaluation before its batch), resolved
    # at 780.
    bedrock_sim.set(outage=False)
    for t in (660, 690, 720, 750):
        assert emergency_step(s, t, failing=False) == both_firing, t
    assert quiet(775) == both_firing
    assert quiet(780) == {}

    s.wait_delivered({"webhook": 4, "slack": 4})
    critical = s.check_notices("error_rate_critical", ["firing", "resolved"])
    warning = s.check_notices("error_rate_warning", ["firing", "resolved"])
    assert timeline(critical) == (0, 120, 780)
    assert timeline(warning) == (0, 630, 780)
    s.figure("error_rate_critical", critical)
    s.figure("error_rate_warning", warning)


# -- Direct Bedrock connection failure (immediate), and a webhook that fails first -----------------


def test_bedrock_connection_failure_fires_at_once_and_a_failed_delivery_is_retried_once(
    stage: Callable[..., Stage], bedrock_sim: Simulator, hook: Hook
) -> None:
    # Default breaker: five failed attempts open it (open_s 5 s of fake time). An emergency
    # request fails twice (its one retry, no backoff here). Three requests stay below
    # slo.min_requests (20 here) so no traffic figure is judged. Alerts resolve after 30 s of
    # clear readings here (alerts.resolve_after_s).
    def change(data: dict[str, Any]) -> None:
        data["slo"] = {"min_requests": 20}
        data["alerts"]["resolve_after_s"] = 30

    s = stage(change)
    hook.fail["/hook"] = 1  # the webhook answers 500 to the first notice
    bedrock = {"route": "direct_bedrock"}

    bedrock_sim.set(outage=True)
    s.at(0)
    [first] = s.send("emergency", ["db-1 is down"])
    assert first.status_code == 503
    assert s.evaluate() == {}  # two failures: the breaker is still closed
    assert s.readings()["bedrock_unavailable"] == [(0.0, bedrock)]

    s.at(10)
    answers = s.send("emergency", ["db-2 is down", "db-3 is down"])
    assert [r.status_code for r in answers] == [503, 503]
    assert s.evaluate() == {"bedrock_connection_failure": "firing"}  # no pending step
    assert s.readings()["bedrock_unavailable"] == [(1.0, bedrock)]

    # The firing notice: the webhook's first attempt fails, Slack's goes through.
    deadline = time.monotonic() + WAIT_S
    while True:
        webhook = next(x for x in s.alerts()["notifications"] if x["name"] == "webhook")
        if webhook["failures"] == 1 and webhook["next_retry_in_s"] is not None:
            break
        assert time.monotonic() < deadline, webhook
        time.sleep(0.02)  # noqa: TID251 - polling from the test thread
    assert webhook["delivered"] == 0
    assert webhook["queued"] == 1
    assert webhook["last_error"] == "HTTP 500: no"
    assert 0.9 <= webhook["next_retry_in_s"] <= 1.1  # backoff_start 1 s, ±10 % jitter
    assert len(hook.on("/hook", ok_only=False)) == 1

    # The backoff sleeps on the runtime clock: two fake seconds let the retry happen.
    s.at(12)
    assert s.evaluate() == {"bedrock_connection_failure": "firing"}
    sinks = s.wait_delivered({"webhook": 1, "slack": 1})
    assert {x["name"]: x["failures"] for x in sinks} == {"webhook": 1, "slack": 0}

    # Recovered: the breaker stays open until t=15 (opened at t=10); half-open is not down.
    # Up from 15, so the alert resolves at 45 (30 s of clear readings), not at 44.
    bedrock_sim.set(outage=False)
    s.at(14)
    assert s.evaluate() == {"bedrock_connection_failure": "firing"}
    s.at(15)
    assert s.evaluate() == {"bedrock_connection_failure": "firing"}
    assert s.readings()["bedrock_unavailable"] == [(0.0, bedrock)]
    s.at(44)
    assert s.evaluate() == {"bedrock_connection_failure": "firing"}
    s.at(45)
    assert s.evaluate() == {}
    assert s.readings()["bedrock_unavailable"] == [(0.0, bedrock)]

    sinks = s.wait_delivered({"webhook": 2, "slack": 2})
    assert {x["name"]: (x["failures"], x["dropped"]) for x in sinks} == {
        "webhook": (1, 0),
        "slack": (0, 0),
    }
    episode = s.check_notices("bedrock_connection_failure", ["firing", "resolved"])
    assert timeline(episode) == (10, 10, 45)
    assert episode["labels"] == bedrock
    attempts = hook.on("/hook", ok_only=False)
    assert [(d.status, d.body["transition"]) for d in attempts] == [
        (500, "firing"),
        (200, "firing"),
        (200, "resolved"),
    ]
    assert attempts[0].key == attempts[1].key == f"{episode['id']}:firing"
    assert attempts[0].body == attempts[1].body  # the same notice, sent again
    s.figure("bedrock_connection_failure", episode)


# -- budget (95 % critical, 80 % info; immediate) --------------------------------------------------

BUDGET = Decimal("0.0036")  # about twenty emergency answers at list prices


def test_budget_alerts_fire_at_80_and_95_percent_and_resolve_at_the_new_day(
    stage: Callable[..., Stage],
) -> None:
    # Emergency (critical) requests are served whatever the budget; each answer's cost comes
    # back in x-hybridroute-cost, so the test knows the settled spend after every request.
    def change(data: dict[str, Any]) -> None:
        data["pricing"] = {"currency": "USD", "routes": copy.deepcopy(LIST_PRICES)}
        data["budgets"] = {"global": {"daily": str(BUDGET), "monthly": "1000"}}
        # Slack hears critical alerts only: budget_info goes to the webhook alone.
        data["alerts"]["sinks"][1]["severities"] = ["critical"]

    s = stage(change)
    daily = {"budget": "global", "period": "daily"}
    spent = Decimal(0)
    t = 0.0
    info_at = critical_at = None
    while critical_at is None:
        t += 5
        s.at(t)
        [answer] = s.send("emergency", [f"disk full on db-{int(t)}"])
        assert answer.status_code == 200, answer.text
        spent += Decimal(answer.headers["x-hybridroute-cost"])
        states = s.evaluate()
        share = spent / BUDGET
        expected = {}
        if share >= Decimal("0.80"):
            expected["budget_info"] = "firing"
            info_at = t if info_at is None else info_at
        if share >= Decimal("0.95"):
            expected["budget_critical"] = "firing"
            critical_at = t
        assert states == expected, (t, spent, share)
        budgets = s.readings()["budget_utilisation"]
        assert [v for v, labels in budgets if daily.items() <= labels.items()] == [float(share)], (
            budgets
        )
        assert t < 60 * 5, "the budget should be spent within 60 requests"
    assert info_at is not None
    assert info_at < critical_at

    # A new day (UTC midnight is 16 h after the start): the daily window is over, and with it
    # the instance both alerts are about, which resolves them at once (docs/observability.md,
    # Alerts: "An instance gone from the readings (a rule disabled, a budget's window over)
    # resolves at once"), not after resolve_after_s of readings at 0 %.
    midnight = 16 * 3600
    s.at(midnight - 1)
    assert s.evaluate() == {"budget_info": "firing", "budget_critical": "firing"}
    s.at(midnight)
    assert s.evaluate() == {}
    [new_day] = [
        value
        for value, labels in s.readings()["budget_utilisation"]
        if daily.items() <= labels.items()
    ]
    assert new_day == 0.0

    s.wait_delivered({"webhook": 4, "slack": 2})
    info = s.check_notices("budget_info", ["firing", "resolved"], slack=False)
    critical = s.check_notices("budget_critical", ["firing", "resolved"])
    assert {x["name"]: x["severities"] for x in s.alerts()["notifications"]} == {
        "webhook": ["critical", "info", "warning"],
        "slack": ["critical"],
    }
    assert timeline(info) == (info_at, info_at, midnight)
    assert timeline(critical) == (critical_at, critical_at, midnight)
    # about the daily budget (the monthly one is far from it) of the day that ended
    assert info["labels"] == critical["labels"]
    assert {k: v for k, v in info["labels"].items() if k != "window"} == daily
    assert len(info["labels"]["window"]) == len("2027-01-15")
    assert {d.body["rule"] for d in s.hook.on("/hook")} == {"budget_info", "budget_critical"}
    s.figure("budget_info", info)
    s.figure("budget_critical", critical)


# -- cache hit rate (15 min warning, 30 min info) --------------------------------------------------


@pytest.mark.slow
def test_cache_hit_rate_alerts_fire_after_15_and_30_minutes_and_resolve(
    stage: Callable[..., Stage],
) -> None:
    # Cache on, answers kept a day (fake time); temperature 0 makes a request cacheable.
    # Unique prompts miss; repeating one prompt hits. A batch every 50 s.
    def change(data: dict[str, Any]) -> None:
        data["cache"] = {"enabled": True, "ttl_s": {"standard": 86_400}}

    s = stage(change)
    hot = "the hot question everybody asks"

    def step(t: float, contents: list[str], cache: list[str]) -> dict[str, str]:
        s.at(t)
        answers = s.send("standard", contents, temperature=0)
        assert [(r.status_code, r.headers["x-hybridroute-cache"]) for r in answers] == [
            (200, result) for result in cache
        ], t
        return s.evaluate()

    def cold(t: float) -> dict[str, str]:
        return step(t, unique("cold", t), ["miss"] * PER_BATCH)

    def quiet(t: float) -> dict[str, str]:
        s.at(t)
        return s.evaluate()

    both_pending = {"cache_hit_rate_warning": "pending", "cache_hit_rate_info": "pending"}
    warning_firing = {"cache_hit_rate_warning": "firing", "cache_hit_rate_info": "pending"}
    both_firing = {"cache_hit_rate_warning": "firing", "cache_hit_rate_info": "firing"}
    for t in range(0, 900, 50):
        assert cold(t) == both_pending, t
    assert s.figure_now("cache_hit_rate") == 0.0
    assert quiet(895) == both_pending  # one evaluation before 15 min
    for t in range(900, 1800, 50):
        assert cold(t) == warning_firing, t
    assert quiet(1795) == warning_firing  # one evaluation before 30 min
    # The last cold batch asks the hot question first (a miss that fills the cache).
    hot_first = [hot, *unique("cold", 1800, PER_BATCH - 1)]
    assert step(1800, hot_first, ["miss"] * PER_BATCH) == both_firing

    # Three hits and a miss a batch from t=1850: 75 %, above the warning's 70 %, below the
    # info's 80 %. Known from 1900 (the batch of 1800 has left the window), so the warning
    # resolves at 1960 while the info alert keeps firing.
    mostly_hot = [hot, hot, hot]
    mostly = ["hit", "hit", "hit", "miss"]
    assert step(1850, [*mostly_hot, *unique("cold", 1850, 1)], mostly) == both_firing
    assert s.figure_now("cache_hit_rate") == 3 / 8
    assert step(1900, [*mostly_hot, *unique("cold", 1900, 1)], mostly) == both_firing
    assert s.figure_now("cache_hit_rate") == 0.75
    assert step(1950, [*mostly_hot, *unique("cold", 1950, 1)], mostly) == both_firing
    assert quiet(1955) == both_firing  # known above 70 % for 55 s: not yet
    info_only = {"cache_hit_rate_info": "firing"}
    assert quiet(1960) == info_only

    # Hits only from t=2000: 7 of 8 with the batch of 1950 (87.5 %: the info's condition is
    # false from this evaluation), then all: the info alert resolves at 2060.
    assert step(2000, [hot] * PER_BATCH, ["hit"] * PER_BATCH) == info_only
    assert s.figure_now("cache_hit_rate") == 7 / 8
    assert step(2050, [hot] * PER_BATCH, ["hit"] * PER_BATCH) == info_only
    assert s.figure_now("cache_hit_rate") == 1.0
    assert quiet(2055) == info_only
    assert quiet(2060) == {}

    s.wait_delivered({"webhook": 4, "slack": 4})
    warning = s.check_notices("cache_hit_rate_warning", ["firing", "resolved"])
    info = s.check_notices("cache_hit_rate_info", ["firing", "resolved"])
    assert timeline(warning) == (0, 900, 1960)
    assert timeline(info) == (0, 1800, 2060)
    assert {d.body["rule"] for d in s.hook.on("/hook")} == {
        "cache_hit_rate_warning",
        "cache_hit_rate_info",
    }
    s.figure("cache_hit_rate_warning", warning)
    s.figure("cache_hit_rate_info", info)


# -- fallback rate and routing efficiency (immediate) ----------------------------------------------


def fallback_stage(stage: Callable[..., Stage], **alerts: Any) -> Stage:
    """`infrastructure` is Bedrock-first with an MCP fallback. No hedging (performance
    optimisation off) and a breaker that never opens: while Bedrock is out, every request tries
    Bedrock, fails, and is served by MCP: a fallback, and not efficient."""

    def change(data: dict[str, Any]) -> None:
        data["breaker"] = BREAKER_NEVER_OPENS
        data["flags"] = {"ENABLE_PERFORMANCE_OPTIMIZATION": False}
        data["alerts"].update(alerts)

    return stage(change)


def infrastructure_step(
    s: Stage, bedrock_sim: Simulator, t: float, *, fallback: bool
) -> dict[str, str]:
    bedrock_sim.set(outage=fallback)
    s.at(t)
    answers = s.send("infrastructure", unique("infra", t))
    route = "mcp" if fallback else "direct_bedrock"
    assert [(r.status_code, r.headers["x-hybridroute-route"]) for r in answers] == [
        (200, route)
    ] * PER_BATCH
    return s.evaluate()


def test_fallback_rate_and_routing_efficiency_alerts_fire_at_once_and_resolve(
    stage: Callable[..., Stage], bedrock_sim: Simulator
) -> None:
    s = fallback_stage(stage)

    def step(t: float, *, fallback: bool) -> dict[str, str]:
        return infrastructure_step(s, bedrock_sim, t, fallback=fallback)

    def quiet(t: float) -> dict[str, str]:
        s.at(t)
        return s.evaluate()

    # A batch every 30 s: healthy, then one whose every request falls back.
    assert step(0, fallback=False) == {}  # healthy: nothing pending
    both = {"fallback_rate_warning": "firing", "routing_efficiency_info": "firing"}
    assert step(30, fallback=True) == both
    assert s.figure_now("fallback_rate") == 0.5
    assert s.figure_now("routing_efficiency") == 0.5

    # Healthy again: the bad batch of 30 leaves the window at 100, so both conditions are known
    # false from 120 (the evaluation before that step's batch) ...
    assert step(60, fallback=False) == both
    assert s.figure_now("fallback_rate") == 4 / 12
    assert step(90, fallback=False) == both
    assert step(120, fallback=False) == both
    assert s.figure_now("fallback_rate") == 0.0
    assert s.figure_now("routing_efficiency") == 1.0
    # ... but Bedrock fails again at 150, 30 s later: the conditions hold again, so the clear
    # time starts over (no resolution at 180), and no second alert is raised.
    assert step(150, fallback=True) == both
    assert s.figure_now("fallback_rate") == 4 / 12
    assert step(180, fallback=False) == both
    assert step(210, fallback=False) == both
    # Known false again from 240: resolved at 300, not at 295.
    assert step(240, fallback=False) == both
    assert s.figure_now("fallback_rate") == 0.0
    assert step(270, fallback=False) == both
    assert quiet(295) == both
    assert quiet(300) == {}

    s.wait_delivered({"webhook": 4, "slack": 4})
    fallback = s.check_notices("fallback_rate_warning", ["firing", "resolved"])
    efficiency = s.check_notices("routing_efficiency_info", ["firing", "resolved"])
    assert timeline(fallback) == (30, 30, 300)
    assert timeline(efficiency) == (30, 30, 300)
    assert {d.body["rule"] for d in s.hook.on("/hook")} == {
        "fallback_rate_warning",
        "routing_efficiency_info",
    }
    s.figure("fallback_rate_warning", fallback)
    s.figure("routing_efficiency_info", efficiency)


# -- thresholds at run time ---------------------------------------------------------------------


def test_slo_thresholds_change_at_run_time_and_invalid_changes_apply_nothing(
    stage: Callable[..., Stage],
) -> None:
    s = stage()
    s.at(0)
    s.send("standard", unique("steady", 0))  # the window holds it up to t=69
    assert s.evaluate() == {}
    assert s.readings()["routing_efficiency"] == [(1.0, {})]

    # A threshold the steady traffic breaks: the next evaluation fires the rule.
    status, body = s.admin(
        "PUT",
        "/admin/config/slo-thresholds",
        {"rules": {"routing_efficiency_info": {"threshold": 1.5}}},
    )
    assert status == 200, body
    assert body["rules"]["routing_efficiency_info"]["threshold"] == 1.5
    assert body["rules"]["routing_efficiency_info"]["severity"] == "info"  # merged
    assert body["slo"]["min_requests"] == MIN_REQUESTS
    assert s.alerts()["rules"]["routing_efficiency_info"]["threshold"] == 1.5
    s.at(5)
    assert s.evaluate() == {"routing_efficiency_info": "firing"}

    # Invalid: one bad rule among good ones; 400 naming it, nothing applied.
    before = s.alerts()["rules"]
    status, body = s.admin(
        "PUT",
        "/admin/config/slo-thresholds",
        {
            "rules": {
                "latency_p95_critical": {"threshold": 0.0001},
                "error_rate_warning": {"op": "!="},
            }
        },
    )
    assert status == 400, body
    assert body["error"]["param"] == "rules"
    assert body["error"]["message"].startswith("invalid alert rules: error_rate_warning: ")
    assert "latency_p95_critical" not in body["error"]["message"]
    status, body = s.admin(
        "PUT",
        "/admin/config/slo-thresholds",
        {"rules": {"p99_page": {"severity": "info", "metric": "p99", "op": ">", "threshold": 1}}},
    )
    assert status == 400, body
    assert body["error"]["message"].startswith("invalid alert rules: p99_page: ")
    assert "unknown metric 'p99'" in body["error"]["message"]
    status, body = s.admin(
        "PUT",
        "/admin/config/slo-thresholds",
        {"rules": {"latency_p95_critical": {"threshold": 0.0001}}, "slo": {"min_requests": 0}},
    )
    assert status == 400, body
    assert body["error"]["param"] == "slo"
    assert s.alerts()["rules"] == before
    s.at(10)
    assert s.evaluate() == {"routing_efficiency_info": "firing"}  # no latency alert pending

    # A valid latency threshold: pending at the next evaluation (its 5 min still apply).
    status, body = s.admin(
        "PUT",
        "/admin/config/slo-thresholds",
        {"rules": {"latency_p95_critical": {"threshold": 0.0001}}},
    )
    assert status == 200, body
    assert body["rules"]["latency_p95_critical"]["for_s"] == 300
    s.at(15)
    assert s.evaluate() == {"routing_efficiency_info": "firing", "latency_p95_critical": "pending"}
    listed = s.alerts()
    assert [a["rule"] for a in listed["pending"]] == ["latency_p95_critical"]
    assert [a["rule"] for a in listed["active"]] == ["routing_efficiency_info"]

    # An SLO change: with more requests needed than the window holds, every traffic figure is
    # unknown, and an unknown figure changes nothing: the pending alert stays pending (since
    # 15), the firing one keeps firing.
    status, body = s.admin("PUT", "/admin/config/slo-thresholds", {"slo": {"min_requests": 100}})
    assert status == 200, body
    assert body["slo"]["min_requests"] == 100
    s.at(20)
    assert s.figure_now("routing_efficiency") is None
    assert s.figure_now("generation_p95_s") is None
    assert s.evaluate() == {"routing_efficiency_info": "firing", "latency_p95_critical": "pending"}
    assert s.episodes()["latency_p95_critical"][0]["pending_t"] == 15

    # Back to the seed's efficiency threshold and four requests, in one change: the efficiency
    # condition is known false from 25, so its alert resolves at 85 (resolve_after_s, 60 s).
    status, body = s.admin(
        "PUT",
        "/admin/config/slo-thresholds",
        {
            "rules": {"routing_efficiency_info": {"threshold": 0.9}},
            "slo": {"min_requests": MIN_REQUESTS},
        },
    )
    assert status == 200, body
    assert (body["rules"]["routing_efficiency_info"]["threshold"], body["slo"]["min_requests"]) == (
        0.9,
        MIN_REQUESTS,
    )
    s.at(25)
    assert s.evaluate() == {"routing_efficiency_info": "firing", "latency_p95_critical": "pending"}
    # The seed's latency threshold: a pending alert is dropped at its first known-false reading
    # (it never fired: nobody hears of it).
    status, body = s.admin(
        "PUT",
        "/admin/config/slo-thresholds",
        {"rules": {"latency_p95_critical": {"threshold": 2.0}}},
    )
    assert status == 200, body
    s.at(30)
    assert s.evaluate() == {"routing_efficiency_info": "firing"}
    assert "latency_p95_critical" not in s.episodes()
    s.at(50)
    s.send("standard", unique("steady", 50))  # keeps the figures known up to t=119
    assert s.evaluate() == {"routing_efficiency_info": "firing"}
    s.at(80)
    assert s.evaluate() == {"routing_efficiency_info": "firing"}  # clear for 55 s: not yet
    s.at(85)
    assert s.evaluate() == {}
    listed = s.alerts()
    assert listed["pending"] == []
    assert listed["active"] == []
    assert [(a["rule"], a["threshold"]) for a in listed["resolved"]] == [
        ("routing_efficiency_info", 0.9)
    ]

    s.wait_delivered({"webhook": 2, "slack": 2})
    episode = s.check_notices("routing_efficiency_info", ["firing", "resolved"])
    assert timeline(episode) == (5, 5, 85)
    s.figure("routing_efficiency_info", episode)


# -- shutdown ------------------------------------------------------------------------------------


def test_stopping_the_gateway_resolves_its_active_alerts_and_says_so(
    stage: Callable[..., Stage], bedrock_sim: Simulator, hook: Hook
) -> None:
    # Bedrock out: the fallback and efficiency alerts fire at once. A latency threshold every
    # answer breaks keeps a third alert pending (its 5 min are far off).
    s = fallback_stage(stage, rules={"latency_p95_critical": {"threshold": 0.0001}})
    both = {"fallback_rate_warning": "firing", "routing_efficiency_info": "firing"}
    assert infrastructure_step(s, bedrock_sim, 0, fallback=True) == {
        **both,
        "latency_p95_critical": "pending",
    }
    s.at(5)
    efficiency_id = s.episodes()["routing_efficiency_info"][0]["id"]
    status, acked = s.admin("POST", f"/admin/alerts/{efficiency_id}/acknowledge", {"by": "alice"})
    assert status == 200, acked
    s.wait_delivered({"webhook": 3, "slack": 3})  # two firing, one acknowledged
    s.at(20)
    before = s.episodes()
    assert before["routing_efficiency_info"][0]["status"] == "acknowledged"
    assert before["latency_p95_critical"][0]["status"] == "pending"

    # The gateway stops (its runtime closes): every active alert is resolved, "the gateway
    # stopped" said in its summary, and notified before the dispatcher closes; the pending one
    # is dropped unheard.
    s.close()
    stopped_at = START_WALL + 20
    for rule, transitions in (
        ("fallback_rate_warning", ["firing", "resolved"]),
        ("routing_efficiency_info", ["firing", "acknowledged", "resolved"]),
    ):
        [episode] = before[rule]
        s.check_notices(rule, transitions, episode=episode)
        [resolved] = [
            d.body
            for d in hook.on("/hook")
            if d.body["rule"] == rule and d.body["transition"] == "resolved"
        ]
        assert resolved["summary"].endswith(STOPPED), resolved["summary"]
        assert resolved["summary"].count(STOPPED) == 1
        assert resolved["at"] == stopped_at
        [slacked] = [d.body for d in hook.on("/slack") if d.key == resolved["dedupe_key"]]
        assert STOPPED.strip() in slacked["text"]
        firing = next(d.body for d in hook.on("/hook") if d.body["rule"] == rule)
        assert not firing["summary"].endswith(STOPPED)
        s.figure(rule, {**episode, "resolved_t": resolved["at"] - START_WALL})
    assert {d.body["rule"] for d in hook.on("/hook")} == {
        "fallback_rate_warning",
        "routing_efficiency_info",
    }
    assert len(hook.on("/hook")) == len(hook.on("/slack")) == 5
    assert len(hook.on("/hook", ok_only=False)) == 5  # each delivered at the first attempt
