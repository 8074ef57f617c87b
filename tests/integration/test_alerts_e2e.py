"""Alerts end to end: a gateway on a FakeClock over the loopback simulators, real traffic with
fault knobs, alert evaluation driven by hand, and a loopback receiver standing in for a webhook
(`/hook`) and a Slack incoming webhook (`/slack`).

How time works here. The gateway's runtime clock is a `FakeClock`: requests are stamped (the
traffic window's `event.at`) with its time, while their latency is measured in real time. A
scenario is a schedule of fake instants `t` (seconds after the gateway started): at each, the
clock is moved to `t` on the gateway's own event loop (the observability loop, which sleeps on
that clock, wakes and runs one evaluation of its own), the step's requests are sent for real,
and then the alert rules are evaluated once more on the gateway's loop, so the evaluation sees
that minute's traffic. The SLO window is trailing (300 s, minute buckets: a request stamped at
`t` is in every window up to `t + 300` inclusive), so a condition that must hold for 10 minutes
needs failing or slow traffic at every fake minute. A step at `for_s - 5` (one default
evaluation interval early) proves an alert does not fire early.

Config used throughout: `slo.min_requests` 4 (four requests a minute are enough to judge a
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
PER_MINUTE = 4
WAIT_S = 15.0  # real seconds to wait for deliveries and recorded requests
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
        self.server.stop()

    @property
    def runtime(self) -> Any:
        return self.gateway.runtime

    # -- running things on the gateway's loop ---------------------------------------------------

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return asyncio.run_coroutine_threadsafe(fn(), self.server.loop).result(timeout=30)

    def now(self) -> float:
        return self.clock.monotonic() - START_MONO

    def at(self, t: float) -> None:
        """Move the fake clock to t; the sleepers it wakes (the observability loop among
        them) run their step before this returns."""
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
            totals = self.runtime.traffic.totals(86_400, self.clock.now())
            return int(totals.requests)

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
        self, rule: str, transitions: list[str], *, slack: bool = True
    ) -> dict[str, Any]:
        """The webhook and (unless `slack` is False: none there) the Slack sink each got exactly
        these transitions of `rule`'s one alert, once each, every body's dedupe key matching
        its header and the alert."""
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


def unique(prefix: str, t: float, n: int = PER_MINUTE) -> list[str]:
    return [f"{prefix} question {int(t)} number {i}" for i in range(n)]


def timeline(episode: dict[str, Any]) -> tuple[float, float | None, float | None]:
    return episode["pending_t"], episode["fired_t"], episode["resolved_t"]


# -- P95 latency (5 min critical, 10 min warning) --------------------------------------------------

# Lowered thresholds, the seed's durations: the MCP simulator answers in 400 ms (slow: above
# both) or at once (fast: a few ms, far below both), so eleven slow minutes take ~5 s of real
# time instead of the ~25 s that 2.1 s answers would. `standard` is MCP-first, never hedged.
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

    def slow(t: float) -> dict[str, str]:
        s.at(t)
        answers = s.send("standard", unique("slow", t))
        assert [r.status_code for r in answers] == [200] * PER_MINUTE
        assert {r.headers["x-hybridroute-route"] for r in answers} == {"mcp"}
        return s.evaluate()

    def quiet(t: float) -> dict[str, str]:
        s.at(t)
        return s.evaluate()

    mcp_sim.set(latency_ms=SLOW_MS)
    both_pending = {"latency_p95_critical": "pending", "latency_p95_warning": "pending"}
    assert slow(0) == both_pending
    listed = s.alerts()
    assert sorted(a["rule"] for a in listed["pending"]) == sorted(both_pending)
    assert listed["active"] == []
    assert listed["resolved"] == []
    for t in (60, 120, 180, 240):
        assert slow(t) == both_pending, t
    assert quiet(295) == both_pending  # one evaluation before 5 min: not yet
    assert slow(300) == {"latency_p95_critical": "firing", "latency_p95_warning": "pending"}
    listed = s.alerts()
    assert [(a["rule"], a["status"]) for a in listed["active"]] == [
        ("latency_p95_critical", "firing")
    ]
    assert [a["rule"] for a in listed["pending"]] == ["latency_p95_warning"]
    critical_id = listed["active"][0]["id"]
    warning_id = listed["pending"][0]["id"]

    # An operator acknowledges the critical alert: one notice, then silence until it resolves.
    assert slow(360) == {"latency_p95_critical": "firing", "latency_p95_warning": "pending"}
    status, acked = s.admin(
        "POST", f"/admin/alerts/{critical_id}/acknowledge", {"by": "alice", "note": "on it"}
    )
    assert status == 200, acked
    assert (acked["status"], acked["acknowledged_by"], acked["acknowledge_note"]) == (
        "acknowledged",
        "alice",
        "on it",
    )
    assert acked["acknowledged_at"] == START_WALL + 360
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
    for t in (420, 480, 540):
        assert slow(t) == critical_acked, t
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
    assert slow(600) == both_active
    listed = s.alerts()
    assert [a["rule"] for a in listed["active"]] == [
        "latency_p95_critical",  # critical first
        "latency_p95_warning",
    ]
    assert listed["pending"] == []

    # Fast answers from now on. The last slow minute (t=600) stays in the 300 s window up to
    # t=900 and in its oldest (whole) bucket until t=959, where it still holds 4 of 24 answers
    # (more than 5 %, so the p95 is slow); at t=960 the window holds fast answers only.
    mcp_sim.set(latency_ms=0)
    for t in (660, 720, 780, 840, 900):
        assert slow(t) == both_active, t
    assert quiet(955) == both_active
    assert slow(960) == {}
    listed = s.alerts()
    assert listed["active"] == []
    assert listed["pending"] == []
    # newest first: both cleared in one evaluation, which resolves in the order the alerts
    # were opened (the critical rule comes first in the rules)
    assert [(a["rule"], a["status"]) for a in listed["resolved"]] == [
        ("latency_p95_warning", "resolved"),
        ("latency_p95_critical", "resolved"),
    ]
    assert [a["resolved_at"] for a in listed["resolved"]] == [START_WALL + 960] * 2
    assert listed["evaluations"] >= len(s.states)
    assert listed["last_evaluated_at"] == START_WALL + 960

    s.wait_delivered({"webhook": 5, "slack": 5})
    critical = s.check_notices("latency_p95_critical", ["firing", "acknowledged", "resolved"])
    warning = s.check_notices("latency_p95_warning", ["firing", "resolved"])
    assert timeline(critical) == (0, 300, 960)
    assert timeline(warning) == (0, 600, 960)
    assert critical["acknowledged_by"] == "alice"
    resolved_notice = [
        d.body
        for d in s.hook.on("/hook")
        if d.body["rule"] == "latency_p95_critical" and d.body["transition"] == "resolved"
    ]
    assert resolved_notice[0]["acknowledged_by"] == "alice"
    assert resolved_notice[0]["at"] == START_WALL + 960
    assert {d.body["rule"] for d in s.hook.on("/hook")} == {
        "latency_p95_critical",
        "latency_p95_warning",
    }
    s.figure("latency_p95_critical", critical)
    s.figure("latency_p95_warning", warning)


# -- error rate (2 min critical, 5 min warning) ----------------------------------------------------


def test_error_rate_alerts_fire_after_2_and_5_minutes_and_resolve(
    stage: Callable[..., Stage], bedrock_sim: Simulator
) -> None:
    # `emergency` has no fallback: with the Bedrock simulator out, every emergency request
    # fails (5xx). The breaker is kept closed so no Direct Bedrock connection alert joins in,
    # and routing efficiency (a failed request is not efficient) is judged by its own test.
    def change(data: dict[str, Any]) -> None:
        data["breaker"] = BREAKER_NEVER_OPENS
        data["alerts"]["rules"] = {"routing_efficiency_info": {"enabled": False}}

    s = stage(change)

    def step(t: float, *, failing: bool) -> dict[str, str]:
        s.at(t)
        answers = s.send("emergency", unique("incident", t))
        expected = {503} if failing else {200}
        assert {r.status_code for r in answers} == expected, [r.text for r in answers]
        return s.evaluate()

    def quiet(t: float) -> dict[str, str]:
        s.at(t)
        return s.evaluate()

    bedrock_sim.set(outage=True)
    both_pending = {"error_rate_critical": "pending", "error_rate_warning": "pending"}
    assert step(0, failing=True) == both_pending
    assert s.readings()["error_rate"] == [(1.0, {})]
    assert step(60, failing=True) == both_pending
    assert quiet(115) == both_pending  # one evaluation before 2 min
    critical_firing = {"error_rate_critical": "firing", "error_rate_warning": "pending"}
    assert step(120, failing=True) == critical_firing
    assert step(180, failing=True) == critical_firing
    assert step(240, failing=True) == critical_firing
    assert quiet(295) == critical_firing  # one evaluation before 5 min
    both_firing = {"error_rate_critical": "firing", "error_rate_warning": "firing"}
    assert step(300, failing=True) == both_firing

    # Recovered: the failures of t=300 leave the window's oldest bucket at t=660.
    bedrock_sim.set(outage=False)
    for t in (360, 420, 480, 540, 600):
        assert step(t, failing=False) == both_firing, t
    assert s.readings()["error_rate"] == [(4 / 24, {})]
    assert quiet(655) == both_firing
    assert step(660, failing=False) == {}
    assert s.readings()["error_rate"] == [(0.0, {})]

    s.wait_delivered({"webhook": 4, "slack": 4})
    critical = s.check_notices("error_rate_critical", ["firing", "resolved"])
    warning = s.check_notices("error_rate_warning", ["firing", "resolved"])
    assert timeline(critical) == (0, 120, 660)
    assert timeline(warning) == (0, 300, 660)
    assert {d.body["rule"] for d in s.hook.on("/hook")} == {
        "error_rate_critical",
        "error_rate_warning",
    }
    s.figure("error_rate_critical", critical)
    s.figure("error_rate_warning", warning)


# -- Direct Bedrock connection failure (immediate), and a webhook that fails first -----------------


def test_bedrock_connection_failure_fires_at_once_and_a_failed_delivery_is_retried_once(
    stage: Callable[..., Stage], bedrock_sim: Simulator, hook: Hook
) -> None:
    # Default breaker: five failed attempts open it (open_s 5 s of fake time). An emergency
    # request fails twice (its one retry, no backoff here). Three requests stay below
    # slo.min_requests (20 here) so no traffic figure is judged.
    def change(data: dict[str, Any]) -> None:
        data["slo"] = {"min_requests": 20}

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
    bedrock_sim.set(outage=False)
    s.at(14)
    assert s.evaluate() == {"bedrock_connection_failure": "firing"}
    s.at(15)
    assert s.evaluate() == {}
    assert s.readings()["bedrock_unavailable"] == [(0.0, bedrock)]

    sinks = s.wait_delivered({"webhook": 2, "slack": 2})
    assert {x["name"]: (x["failures"], x["dropped"]) for x in sinks} == {
        "webhook": (1, 0),
        "slack": (0, 0),
    }
    episode = s.check_notices("bedrock_connection_failure", ["firing", "resolved"])
    assert timeline(episode) == (10, 10, 15)
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
        assert (float(share), daily) in budgets, budgets
        assert t < 60 * 5, "the budget should be spent within 60 requests"
    assert info_at is not None
    assert info_at < critical_at

    # A new day (UTC midnight is 16 h after the start): the daily window is empty again.
    midnight = 16 * 3600
    s.at(midnight - 1)
    assert s.evaluate() == {"budget_info": "firing", "budget_critical": "firing"}
    s.at(midnight)
    assert s.evaluate() == {}
    assert (0.0, daily) in s.readings()["budget_utilisation"]

    s.wait_delivered({"webhook": 4, "slack": 2})
    info = s.check_notices("budget_info", ["firing", "resolved"], slack=False)
    critical = s.check_notices("budget_critical", ["firing", "resolved"])
    assert {x["name"]: x["severities"] for x in s.alerts()["notifications"]} == {
        "webhook": ["critical", "info", "warning"],
        "slack": ["critical"],
    }
    assert timeline(info) == (info_at, info_at, midnight)
    assert timeline(critical) == (critical_at, critical_at, midnight)
    assert info["labels"] == critical["labels"] == daily  # the monthly budget is far from it
    assert {d.body["rule"] for d in s.hook.on("/hook")} == {"budget_info", "budget_critical"}
    s.figure("budget_info", info)
    s.figure("budget_critical", critical)


# -- cache hit rate (15 min warning, 30 min info) --------------------------------------------------


@pytest.mark.slow
def test_cache_hit_rate_alerts_fire_after_15_and_30_minutes_and_resolve(
    stage: Callable[..., Stage],
) -> None:
    # Cache on, answers kept a day (fake time); temperature 0 makes a request cacheable.
    # Unique prompts miss; repeating one prompt hits.
    def change(data: dict[str, Any]) -> None:
        data["cache"] = {"enabled": True, "ttl_s": {"standard": 86_400}}

    s = stage(change)
    hot = "the hot question everybody asks"
    misses, hits = ["miss"] * PER_MINUTE, ["hit"] * PER_MINUTE

    def step(t: float, contents: list[str], cache: list[str]) -> dict[str, str]:
        s.at(t)
        answers = s.send("standard", contents, temperature=0)
        assert [(r.status_code, r.headers["x-hybridroute-cache"]) for r in answers] == [
            (200, result) for result in cache
        ], t
        return s.evaluate()

    def quiet(t: float) -> dict[str, str]:
        s.at(t)
        return s.evaluate()

    both_pending = {"cache_hit_rate_warning": "pending", "cache_hit_rate_info": "pending"}
    warning_firing = {"cache_hit_rate_warning": "firing", "cache_hit_rate_info": "pending"}
    both_firing = {"cache_hit_rate_warning": "firing", "cache_hit_rate_info": "firing"}
    for minute in range(15):
        assert step(minute * 60, unique("cold", minute * 60), misses) == both_pending, minute
    assert quiet(895) == both_pending  # one evaluation before 15 min
    for minute in range(15, 30):
        assert step(minute * 60, unique("cold", minute * 60), misses) == warning_firing, minute
    assert quiet(1795) == warning_firing  # one evaluation before 30 min
    # The last cold minute asks the hot question first (a miss that fills the cache).
    assert step(1800, [hot, *unique("cold", 1800, PER_MINUTE - 1)], misses) == both_firing

    # Hits only from t=1860. The window (its oldest bucket whole) holds: at t=2040 the misses
    # of t=1740 and t=1800 against 16 hits (66.7 %); at t=2100 those of t=1800 against 20 hits
    # (83.3 %): both rules clear at once.
    for t in (1860, 1920, 1980, 2040):
        assert step(t, [hot] * PER_MINUTE, hits) == both_firing, t
    assert s.readings()["cache_hit_rate"] == [(16 / 24, {})]
    assert quiet(2095) == both_firing
    assert step(2100, [hot] * PER_MINUTE, hits) == {}
    assert s.readings()["cache_hit_rate"] == [(20 / 24, {})]

    s.wait_delivered({"webhook": 4, "slack": 4})
    warning = s.check_notices("cache_hit_rate_warning", ["firing", "resolved"])
    info = s.check_notices("cache_hit_rate_info", ["firing", "resolved"])
    assert timeline(warning) == (0, 900, 2100)
    assert timeline(info) == (0, 1800, 2100)
    assert {d.body["rule"] for d in s.hook.on("/hook")} == {
        "cache_hit_rate_warning",
        "cache_hit_rate_info",
    }
    s.figure("cache_hit_rate_warning", warning)
    s.figure("cache_hit_rate_info", info)


# -- fallback rate and routing efficiency (immediate) ----------------------------------------------


def test_fallback_rate_and_routing_efficiency_alerts_fire_at_once_and_resolve(
    stage: Callable[..., Stage], bedrock_sim: Simulator
) -> None:
    # `infrastructure` is Bedrock-first with an MCP fallback. No hedging (performance
    # optimisation off) and a breaker that never opens: while Bedrock is out, every request
    # tries Bedrock, fails, and is served by MCP: a fallback, and not efficient.
    def change(data: dict[str, Any]) -> None:
        data["breaker"] = BREAKER_NEVER_OPENS
        data["flags"] = {"ENABLE_PERFORMANCE_OPTIMIZATION": False}

    s = stage(change)

    def step(t: float, *, fallback: bool) -> dict[str, str]:
        s.at(t)
        answers = s.send("infrastructure", unique("infra", t))
        route = "mcp" if fallback else "direct_bedrock"
        assert [(r.status_code, r.headers["x-hybridroute-route"]) for r in answers] == [
            (200, route)
        ] * PER_MINUTE
        return s.evaluate()

    def quiet(t: float) -> dict[str, str]:
        s.at(t)
        return s.evaluate()

    assert step(0, fallback=False) == {}  # healthy minute: nothing pending
    bedrock_sim.set(outage=True)
    both = {"fallback_rate_warning": "firing", "routing_efficiency_info": "firing"}
    assert step(60, fallback=True) == both
    readings = s.readings()
    assert readings["fallback_rate"] == [(0.5, {})]
    assert readings["routing_efficiency"] == [(0.5, {})]

    # Healthy again. Fallbacks: 4 of 12 served at t=120, 4/16 at 180, 4/20 = 20 % at 240 (not
    # above 20 %: clear). Efficiency: 20/24 at t=360 (the bad minute's bucket is still in
    # the window), 24/24 at t=420.
    bedrock_sim.set(outage=False)
    assert step(120, fallback=False) == both
    assert step(180, fallback=False) == both
    assert quiet(235) == both
    efficiency_only = {"routing_efficiency_info": "firing"}
    assert step(240, fallback=False) == efficiency_only
    assert s.readings()["fallback_rate"] == [(0.2, {})]
    assert step(300, fallback=False) == efficiency_only
    assert step(360, fallback=False) == efficiency_only
    assert s.readings()["routing_efficiency"] == [(20 / 24, {})]
    assert quiet(415) == efficiency_only
    assert step(420, fallback=False) == {}

    s.wait_delivered({"webhook": 4, "slack": 4})
    fallback = s.check_notices("fallback_rate_warning", ["firing", "resolved"])
    efficiency = s.check_notices("routing_efficiency_info", ["firing", "resolved"])
    assert timeline(fallback) == (60, 60, 240)
    assert timeline(efficiency) == (60, 60, 420)
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
    s.send("standard", unique("steady", 0))
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
    # unknown at the next evaluation: the pending alert is dropped, the firing one resolved.
    status, body = s.admin("PUT", "/admin/config/slo-thresholds", {"slo": {"min_requests": 100}})
    assert status == 200, body
    assert body["slo"]["min_requests"] == 100
    s.at(20)
    assert s.evaluate() == {}
    listed = s.alerts()
    assert listed["pending"] == []
    assert listed["active"] == []
    assert [a["rule"] for a in listed["resolved"]] == ["routing_efficiency_info"]
    assert "latency_p95_critical" not in s.episodes()

    s.wait_delivered({"webhook": 2, "slack": 2})
    episode = s.check_notices("routing_efficiency_info", ["firing", "resolved"])
    assert timeline(episode) == (5, 5, 20)
    s.figure("routing_efficiency_info", episode)
