"""Alert notifications: the notice's renderings, the sinks against loopback HTTP receivers, and
the dispatcher's queueing, backoff (driven by a FakeClock), isolation, bounds and shutdown."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from hybridroute._tasks import TaskSupervisor
from hybridroute.config.observability import AlertSinkConfig
from hybridroute.notify import (
    DEDUPE_HEADER,
    AlertNotice,
    DeliveryFailed,
    LogSink,
    NotificationDispatcher,
    SlackSink,
    WebhookSink,
    build_sinks,
)
from hybridroute.serving import EmbeddedServer
from hybridroute.testing import FakeClock

pytestmark = pytest.mark.anyio

STARTED = 1_800_000_000.0  # 2027-01-15T08:00:00Z
NOW = STARTED + 120.5


def notice(n: int = 1, **changes: Any) -> AlertNotice:
    values: dict[str, Any] = {
        "alert_id": f"a{n}",
        "rule": "error_rate_critical",
        "severity": "critical",
        "transition": "firing",
        "summary": "Error rate 7.3 % > 5 % for 2 min",
        "description": "Error rate > 5 % for 2+ minutes",
        "labels": {"route": "bedrock-direct", "budget": "team-a"},
        "value": 0.073,
        "threshold": 0.05,
        "started_at": STARTED,
        "at": NOW,
        "acknowledged_by": None,
        "gateway": "gw-1",
    }
    values.update(changes)
    return AlertNotice(**values)


# -- a loopback receiver --------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """Records every request. `fail_next` answers that many with `fail_status` (-1: every
    one), `hang_next` holds that many open until the test ends."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 500
    fail_body: bytes = b"receiver says no"
    fail_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    hang_next: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def keys(self) -> list[str]:
        return [r.headers[DEDUPE_HEADER.lower()] for r in self.requests]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Received(scope["path"], headers, body))
        if self.hang_next:
            self.hang_next -= 1
            await self.released.wait()
        status, answer, extra = 200, b"ok", []
        if self.fail_next:
            self.fail_next -= 1 if self.fail_next > 0 else 0
            status, answer, extra = self.fail_status, self.fail_body, self.fail_headers
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": answer})


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[[], Any]]:
    """A factory of started receivers; all are released and stopped at the end."""
    running: list[tuple[Receiver, EmbeddedServer]] = []

    async def start() -> Receiver:
        receiver = Receiver()
        server = EmbeddedServer(receiver, name="alert-receiver", lifespan="off")
        await server.start()
        receiver.url = server.url + "/hook"
        running.append((receiver, server))
        return receiver

    yield start
    for receiver, _ in running:
        receiver.released.set()
    await asyncio.gather(*(server.stop() for _, server in running))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


class RecordingClock(FakeClock):
    """A FakeClock that also records every sleep it was asked for."""

    def __init__(self) -> None:
        super().__init__(start=0.0, wall_start=NOW)
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


async def until(check: Callable[[], bool], limit_s: float = 5.0) -> None:
    """Let the loop run (loopback round trips) until `check` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


async def sleeps_reach(clock: RecordingClock, count: int) -> None:
    await until(lambda: len(clock.sleeps) == count)


def by_name(dispatcher: NotificationDispatcher) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in dispatcher.snapshot()}


# -- the notice ------------------------------------------------------------------------------


def test_the_dedupe_key_names_alert_and_transition():
    assert notice(7).dedupe_key == "a7:firing"
    assert notice(7, transition="resolved").dedupe_key == "a7:resolved"


def test_as_dict_is_json_ready_with_iso_times():
    assert notice(acknowledged_by="alice", transition="acknowledged").as_dict() == {
        "dedupe_key": "a1:acknowledged",
        "alert_id": "a1",
        "rule": "error_rate_critical",
        "severity": "critical",
        "transition": "acknowledged",
        "summary": "Error rate 7.3 % > 5 % for 2 min",
        "description": "Error rate > 5 % for 2+ minutes",
        "labels": {"route": "bedrock-direct", "budget": "team-a"},
        "value": 0.073,
        "threshold": 0.05,
        "started_at": STARTED,
        "started_at_iso": "2027-01-15T08:00:00.000Z",
        "at": NOW,
        "at_iso": "2027-01-15T08:02:00.500Z",
        "acknowledged_by": "alice",
        "gateway": "gw-1",
    }
    assert notice(value=math.nan).as_dict()["value"] is None
    assert notice(value=None).as_dict()["value"] is None


def test_a_notice_keeps_its_own_copy_of_the_labels():
    labels = {"route": "r1"}
    n = notice(labels=labels)
    labels["route"] = "changed"
    assert dict(n.labels) == {"route": "r1"}
    with pytest.raises(TypeError):
        n.labels["route"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"severity": "page"}, "unknown severity 'page'"),
        ({"transition": "flapping"}, "unknown transition 'flapping'"),
        ({"alert_id": ""}, "non-empty alert_id"),
    ],
)
def test_a_notice_refuses_unknown_values(change: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        notice(**change)


def test_slack_payload_has_fallback_text_header_and_fields():
    payload = notice(
        transition="acknowledged",
        acknowledged_by="alice",
        labels={"route": "<r1>"},
        description="see a & b",
    ).slack_payload()
    assert payload["text"] == (
        "[CRITICAL] acknowledged: Error rate 7.3 % > 5 % for 2 min (error_rate_critical, gw-1)"
    )
    header, section, context = payload["blocks"]
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": "[CRITICAL] acknowledged: Error rate 7.3 % > 5 % for 2 min",
            "emoji": False,
        },
    }
    assert section["type"] == "section"
    assert section["text"] == {
        "type": "mrkdwn",
        "text": "*[CRITICAL] acknowledged: Error rate 7.3 % &gt; 5 % for 2 min*\nsee a &amp; b",
    }
    assert [f["text"] for f in section["fields"]] == [
        "*Rule*\nerror_rate_critical",
        "*Value / threshold*\n0.073 vs 0.05",
        "*Labels*\nroute=&lt;r1&gt;",
        "*Started*\n2027-01-15T08:00:00.000Z",
        "*Acknowledged by*\nalice",
        "*Gateway*\ngw-1",
    ]
    assert all(f["type"] == "mrkdwn" for f in section["fields"])
    assert context["elements"][0]["text"] == (
        "2027-01-15T08:02:00.500Z · dedupe key a1:acknowledged"
    )


def test_slack_payload_leaves_out_acknowledged_by_when_nobody_did():
    fields = notice(value=None).slack_payload()["blocks"][1]["fields"]
    texts = [f["text"] for f in fields]
    assert not any(t.startswith("*Acknowledged by*") for t in texts)
    assert "*Value / threshold*\nn/a vs 0.05" in texts


def test_a_long_summary_is_clipped_to_slacks_header_limit():
    header = notice(summary="x" * 400).slack_payload()["blocks"][0]["text"]["text"]
    assert len(header) == 150
    assert header.endswith("…")


# -- the sinks -------------------------------------------------------------------------------


async def test_webhook_posts_the_notice_as_json_with_the_dedupe_header(receivers, client):
    rx = await receivers()
    sink = WebhookSink(rx.url, {"Authorization": "Bearer t0k"}, 2.0, client)
    await sink.send(notice())
    (request,) = rx.requests
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-hybridroute-dedupe-key"] == "a1:firing"
    assert request.headers["authorization"] == "Bearer t0k"
    assert request.body == orjson.dumps(notice().as_dict())
    assert request.json()["at_iso"] == "2027-01-15T08:02:00.500Z"


async def test_configured_headers_cannot_replace_the_content_type(receivers, client):
    rx = await receivers()
    await WebhookSink(rx.url, {"content-type": "text/plain"}, 2.0, client).send(notice())
    assert rx.requests[0].headers["content-type"] == "application/json"


async def test_slack_sink_posts_the_slack_payload(receivers, client):
    rx = await receivers()
    await SlackSink(rx.url, {}, 2.0, client).send(notice(severity="warning"))
    (request,) = rx.requests
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-hybridroute-dedupe-key"] == "a1:firing"
    assert request.json() == notice(severity="warning").slack_payload()
    assert request.json()["text"].startswith("[WARNING] firing: ")


async def test_a_non_2xx_answer_fails_with_status_and_a_short_excerpt(receivers, client):
    rx = await receivers()
    rx.fail_next, rx.fail_status, rx.fail_body = 1, 503, b"down   for\nmaintenance " + b"z" * 500
    rx.fail_headers = [(b"retry-after", b"7")]
    with pytest.raises(DeliveryFailed) as info:
        await WebhookSink(rx.url, {}, 2.0, client).send(notice())
    text = str(info.value)
    assert text.startswith("HTTP 503: down for maintenance zzz")
    assert len(text) == len("HTTP 503: ") + 200
    assert text.endswith("…")
    assert info.value.retry_after_s == 7.0
    assert rx.url not in text  # a webhook URL can be a secret


async def test_a_hung_receiver_is_a_timeout_failure(receivers, client):
    rx = await receivers()
    rx.hang_next = 1
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(DeliveryFailed, match=r"no answer within 0\.2s \(timed out\)"):
        await WebhookSink(rx.url, {}, 0.2, client).send(notice())
    assert 0.15 < loop.time() - began < 2.0


async def test_an_unreachable_receiver_is_a_failure(client):
    sink = WebhookSink("http://127.0.0.1:9/hook", {}, 2.0, client)  # discard port: refused
    with pytest.raises(DeliveryFailed, match="ConnectError"):
        await sink.send(notice())


async def test_log_sink_levels_and_text(caplog: pytest.LogCaptureFixture):
    sink = LogSink()
    with caplog.at_level(logging.DEBUG, logger="hybridroute.alerts"):
        await sink.send(notice(1, severity="critical"))
        await sink.send(notice(2, severity="warning", labels={}, value=None))
        await sink.send(notice(3, severity="info", transition="acknowledged", acknowledged_by="al"))
    records = [r for r in caplog.records if r.name == "hybridroute.alerts"]
    assert [r.levelno for r in records] == [logging.ERROR, logging.WARNING, logging.INFO]
    assert records[0].getMessage() == (
        "alert firing: rule=error_rate_critical severity=critical transition=firing "
        'summary="Error rate 7.3 % > 5 % for 2 min" budget=team-a route=bedrock-direct '
        "value=0.073 threshold=0.05 alert_id=a1 gateway=gw-1"
    )
    assert records[1].getMessage() == (
        "alert firing: rule=error_rate_critical severity=warning transition=firing "
        'summary="Error rate 7.3 % > 5 % for 2 min" value=n/a threshold=0.05 '
        "alert_id=a2 gateway=gw-1"
    )
    assert "transition=acknowledged" in records[2].getMessage()
    assert "acknowledged_by=al" in records[2].getMessage()
    assert records[0].alert == notice(1).as_dict()  # type: ignore[attr-defined]


async def test_build_sinks_names_each_sink_by_type_in_order(client):
    configs = [
        AlertSinkConfig(type="log"),
        AlertSinkConfig(type="webhook", url="http://127.0.0.1:1/a", severities=("critical",)),
        AlertSinkConfig(type="slack", url="https://hooks.example/T/B/x", timeout_s=3),
        AlertSinkConfig(type="webhook", url="http://127.0.0.1:1/b", headers={"k": "v"}),
    ]
    sinks = build_sinks(configs, client)
    assert [(s.name, s.kind) for s in sinks] == [
        ("log", "log"),
        ("webhook", "webhook"),
        ("slack", "slack"),
        ("webhook-2", "webhook"),
    ]
    assert [type(s) for s in sinks] == [LogSink, WebhookSink, SlackSink, WebhookSink]
    assert sinks[1].severities == frozenset({"critical"})
    assert sinks[2].severities == frozenset({"critical", "warning", "info"})
    assert "hooks.example" in repr(sinks[2])
    assert "/T/B/x" not in repr(sinks[2])


# -- the dispatcher --------------------------------------------------------------------------


@pytest.fixture
async def supervisor() -> AsyncIterator[TaskSupervisor]:
    tasks = TaskSupervisor("test")
    yield tasks
    await tasks.aclose(grace_s=5)


async def test_a_notice_is_retried_with_backoff_until_delivered_once(receivers, client, supervisor):
    rx = await receivers()
    rx.fail_next = 2
    clock = RecordingClock()
    dispatcher = NotificationDispatcher([WebhookSink(rx.url, {}, 2.0, client)], clock)
    dispatcher.start(supervisor)
    dispatcher.notify(notice())

    await until(lambda: len(clock.sleeps) == 1)
    assert 0.9 <= clock.sleeps[0] <= 1.1  # 1 s ± 10 % jitter
    assert len(rx.requests) == 1
    shot = dispatcher.snapshot()[0]
    assert shot["failures"] == 1
    assert shot["delivered"] == 0
    assert shot["queued"] == 1
    assert shot["last_error"] == "HTTP 500: receiver says no"
    assert shot["next_retry_in_s"] == pytest.approx(clock.sleeps[0], abs=1e-3)
    clock.advance(clock.sleeps[0] / 2)
    assert dispatcher.snapshot()[0]["next_retry_in_s"] == pytest.approx(
        clock.sleeps[0] / 2, abs=1e-3
    )
    clock.advance(clock.sleeps[0] / 2)

    await until(lambda: len(clock.sleeps) == 2)
    assert 1.8 <= clock.sleeps[1] <= 2.2  # 2 s ± 10 %
    assert len(rx.requests) == 2
    clock.advance(clock.sleeps[1])

    await until(lambda: dispatcher.snapshot()[0]["delivered"] == 1)
    assert rx.keys() == ["a1:firing"] * 3
    assert len(clock.sleeps) == 2
    assert dispatcher.snapshot() == [
        {
            "name": "webhook",
            "type": "webhook",
            "severities": ["critical", "info", "warning"],
            "queued": 0,
            "delivered": 1,
            "failures": 2,
            "dropped": 0,
            "rejected": 0,
            "last_error": "HTTP 500: receiver says no",
            "last_success_at": clock.now(),
            "next_retry_in_s": None,
        }
    ]
    orjson.dumps(dispatcher.snapshot())  # JSON-ready

    dispatcher.notify(notice())  # the same transition again: already delivered
    await asyncio.sleep(0.05)
    assert len(rx.requests) == 3
    await dispatcher.aclose()


async def test_backoff_doubles_up_to_the_cap_and_honours_retry_after(receivers, client, supervisor):
    rx = await receivers()
    rx.fail_next = -1
    clock = RecordingClock()
    dispatcher = NotificationDispatcher(
        [WebhookSink(rx.url, {}, 2.0, client)], clock, backoff_start_s=1.0, backoff_max_s=3.0
    )
    dispatcher.start(supervisor)
    dispatcher.notify(notice())
    for expected in range(1, 5):
        await sleeps_reach(clock, expected)
        clock.advance(clock.sleeps[-1])
    assert 0.9 <= clock.sleeps[0] <= 1.1
    assert 1.8 <= clock.sleeps[1] <= 2.2
    # From then on the base is the 3 s cap; jitter may shorten it by 10 %, never lengthen it.
    assert all(2.7 <= s <= 3.0 for s in clock.sleeps[2:])

    rx.fail_status, rx.fail_headers = 429, [(b"retry-after", b"10")]
    await sleeps_reach(clock, 5)
    assert clock.sleeps[4] == 3.0  # the hint lengthens the delay, but only up to the cap
    await dispatcher.aclose()


async def test_retry_after_lengthens_a_short_backoff(receivers, client, supervisor):
    rx = await receivers()
    rx.fail_next, rx.fail_status, rx.fail_headers = 1, 429, [(b"retry-after", b"30")]
    clock = RecordingClock()
    dispatcher = NotificationDispatcher([SlackSink(rx.url, {}, 2.0, client)], clock)
    dispatcher.start(supervisor)
    dispatcher.notify(notice())
    await until(lambda: len(clock.sleeps) == 1)
    assert clock.sleeps == [30.0]
    clock.advance(30)
    await until(lambda: dispatcher.snapshot()[0]["delivered"] == 1)
    await dispatcher.aclose()


async def test_a_hung_receiver_counts_as_a_failure(receivers, client, supervisor):
    rx = await receivers()
    rx.hang_next = 1
    clock = RecordingClock()
    dispatcher = NotificationDispatcher([WebhookSink(rx.url, {}, 0.2, client)], clock)
    dispatcher.start(supervisor)
    dispatcher.notify(notice())
    await until(lambda: len(clock.sleeps) == 1)
    shot = dispatcher.snapshot()[0]
    assert (shot["failures"], shot["delivered"]) == (1, 0)
    assert shot["last_error"] == "no answer within 0.2s (timed out)"
    clock.advance(clock.sleeps[0])
    await until(lambda: dispatcher.snapshot()[0]["delivered"] == 1)
    assert rx.keys() == ["a1:firing", "a1:firing"]
    await dispatcher.aclose()


@pytest.mark.parametrize("trouble", ["failing", "hung"])
async def test_a_failing_sink_does_not_delay_another(receivers, client, supervisor, trouble):
    down, up = await receivers(), await receivers()
    if trouble == "failing":
        down.fail_next = -1
    else:
        down.hang_next = 100
    clock = RecordingClock()
    dispatcher = NotificationDispatcher(
        [
            WebhookSink(down.url, {}, 30.0, client, name="down"),
            WebhookSink(up.url, {}, 2.0, client, name="up"),
        ],
        clock,
        flush_timeout_s=0.1,
    )
    dispatcher.start(supervisor)
    for n in (1, 2, 3):
        dispatcher.notify(notice(n))
    await until(lambda: by_name(dispatcher)["up"]["delivered"] == 3 and len(down.requests) == 1)
    if trouble == "failing":
        await sleeps_reach(clock, 1)
    assert up.keys() == ["a1:firing", "a2:firing", "a3:firing"]
    assert down.keys() == ["a1:firing"]  # still on its first notice
    shots = by_name(dispatcher)
    assert (shots["up"]["delivered"], shots["up"]["failures"], shots["up"]["queued"]) == (3, 0, 0)
    assert (shots["down"]["delivered"], shots["down"]["queued"]) == (0, 3)
    if trouble == "failing":
        assert shots["down"]["failures"] == 1
        assert shots["down"]["next_retry_in_s"] is not None
    else:
        assert shots["down"]["failures"] == 0  # its first attempt is still waiting
    await dispatcher.aclose()


async def test_sinks_hear_only_their_severities(receivers, client, supervisor):
    pager, chat = await receivers(), await receivers()
    dispatcher = NotificationDispatcher(
        [
            WebhookSink(pager.url, {}, 2.0, client, name="pager", severities=["critical"]),
            SlackSink(chat.url, {}, 2.0, client, name="chat", severities=["warning", "info"]),
        ],
        RecordingClock(),
    )
    dispatcher.start(supervisor)
    dispatcher.notify(notice(1, severity="critical"))
    dispatcher.notify(notice(2, severity="warning"))
    dispatcher.notify(notice(3, severity="info"))
    await until(lambda: len(chat.requests) == 2 and len(pager.requests) == 1)
    await asyncio.sleep(0.05)
    assert pager.keys() == ["a1:firing"]
    assert chat.keys() == ["a2:firing", "a3:firing"]
    await dispatcher.aclose()


async def test_a_full_queue_drops_the_oldest_waiting_notice(
    receivers, client, supervisor, caplog: pytest.LogCaptureFixture
):
    rx = await receivers()
    rx.fail_next = 1
    clock = RecordingClock()
    dispatcher = NotificationDispatcher(
        [WebhookSink(rx.url, {}, 2.0, client)], clock, max_queue_per_sink=2
    )
    dispatcher.start(supervisor)
    dispatcher.notify(notice(1))
    await until(lambda: len(clock.sleeps) == 1)  # a1 is being retried; it is never dropped
    with caplog.at_level(logging.WARNING, logger="hybridroute.notify"):
        for n in (2, 3, 4, 5):
            dispatcher.notify(notice(n))
    shot = dispatcher.snapshot()[0]
    assert (shot["queued"], shot["dropped"]) == (3, 2)
    dropped_logs = [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()]
    assert len(dropped_logs) == 2
    assert "dropped the oldest notice a2:firing" in dropped_logs[0]
    assert "dropped the oldest notice a3:firing" in dropped_logs[1]

    clock.advance(clock.sleeps[0])
    await until(lambda: dispatcher.snapshot()[0]["delivered"] == 3)
    assert rx.keys() == ["a1:firing", "a1:firing", "a4:firing", "a5:firing"]
    await dispatcher.aclose()


async def test_notify_returns_at_once_even_when_every_sink_is_failing(
    receivers, client, supervisor
):
    hung, failing = await receivers(), await receivers()
    hung.hang_next, failing.fail_next = 10_000, -1
    clock = RecordingClock()
    dispatcher = NotificationDispatcher(
        [
            WebhookSink(hung.url, {}, 30.0, client, name="hung"),
            WebhookSink(failing.url, {}, 2.0, client, name="failing"),
        ],
        clock,
        max_queue_per_sink=100,
        flush_timeout_s=0.1,
    )
    assert not inspect.iscoroutinefunction(dispatcher.notify)
    dispatcher.start(supervisor)
    dispatcher.notify(notice(0))
    await until(lambda: len(hung.requests) == 1 and len(clock.sleeps) == 1)

    loop = asyncio.get_running_loop()
    began = loop.time()
    for n in range(1, 1001):
        dispatcher.notify(notice(n))
    assert loop.time() - began < 1.0  # no I/O, no waiting: a thousand in well under a second
    shots = by_name(dispatcher)
    assert (shots["hung"]["queued"], shots["hung"]["dropped"]) == (101, 900)
    assert (shots["failing"]["queued"], shots["failing"]["dropped"]) == (101, 900)
    await dispatcher.aclose()


async def test_notify_never_raises(caplog: pytest.LogCaptureFixture):
    class Broken:
        name, kind = "broken", "log"
        severities = None  # `in None` raises TypeError

        async def send(self, notice: AlertNotice) -> None:
            raise AssertionError("never reached")

    dispatcher = NotificationDispatcher([Broken()], RecordingClock())  # type: ignore[list-item]
    with caplog.at_level(logging.ERROR, logger="hybridroute.notify"):
        dispatcher.notify(notice())
    assert "queueing alert notice a1:firing failed" in caplog.text


async def test_each_failed_attempt_is_logged_with_the_sink_name(
    receivers, client, supervisor, caplog: pytest.LogCaptureFixture
):
    rx = await receivers()
    rx.fail_next = 2
    clock = RecordingClock()
    dispatcher = NotificationDispatcher([SlackSink(rx.url, {}, 2.0, client, name="ops")], clock)
    dispatcher.start(supervisor)
    with caplog.at_level(logging.WARNING, logger="hybridroute.notify"):
        dispatcher.notify(notice())
        await until(lambda: len(clock.sleeps) == 1)
        clock.advance(clock.sleeps[0])
        await until(lambda: len(clock.sleeps) == 2)
        clock.advance(clock.sleeps[1])
        await until(lambda: dispatcher.snapshot()[0]["delivered"] == 1)
    failures = [r.getMessage() for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert len(failures) == 2
    assert failures[0].startswith(
        "alert sink ops: sending a1:firing failed (attempt 1): HTTP 500: receiver says no;"
    )
    assert "(attempt 2)" in failures[1]
    await dispatcher.aclose()


async def test_shutdown_flushes_what_is_queued(receivers, client, supervisor):
    rx = await receivers()
    rx.fail_next = 1
    clock = RecordingClock()
    dispatcher = NotificationDispatcher([WebhookSink(rx.url, {}, 2.0, client)], clock)
    dispatcher.start(supervisor)
    dispatcher.notify(notice(1))
    await until(lambda: len(clock.sleeps) == 1)  # a1 waits for its retry
    dispatcher.notify(notice(2))
    dispatcher.notify(notice(3))
    await dispatcher.aclose()  # the receiver is back: one try each gets them all through
    assert rx.keys() == ["a1:firing", "a1:firing", "a2:firing", "a3:firing"]
    shot = dispatcher.snapshot()[0]
    assert (shot["queued"], shot["delivered"], shot["failures"]) == (0, 3, 1)
    dispatcher.notify(notice(4))  # after close: refused, not queued
    assert dispatcher.snapshot()[0]["queued"] == 0


async def test_supervisor_shutdown_also_flushes(receivers, client):
    rx = await receivers()
    rx.fail_next = 1
    clock = RecordingClock()
    tasks = TaskSupervisor("test")
    dispatcher = NotificationDispatcher([WebhookSink(rx.url, {}, 2.0, client)], clock)
    dispatcher.start(tasks)
    dispatcher.notify(notice(1))
    await until(lambda: len(clock.sleeps) == 1)
    await tasks.aclose(grace_s=5)
    assert rx.keys() == ["a1:firing", "a1:firing"]
    assert dispatcher.snapshot()[0]["delivered"] == 1


async def test_a_dispatcher_that_never_started_flushes_on_close(receivers, client):
    rx = await receivers()
    dispatcher = NotificationDispatcher([WebhookSink(rx.url, {}, 2.0, client)], FakeClock())
    dispatcher.notify(notice(1))
    dispatcher.notify(notice(2))
    await dispatcher.aclose()
    assert rx.keys() == ["a1:firing", "a2:firing"]


async def test_shutdown_logs_what_it_could_not_deliver(
    receivers, client, supervisor, caplog: pytest.LogCaptureFixture
):
    rx = await receivers()
    rx.fail_next = -1
    clock = RecordingClock()
    dispatcher = NotificationDispatcher([WebhookSink(rx.url, {}, 2.0, client)], clock)
    dispatcher.start(supervisor)
    dispatcher.notify(notice(1))
    await until(lambda: len(clock.sleeps) == 1)
    dispatcher.notify(notice(2))
    with caplog.at_level(logging.ERROR, logger="hybridroute.notify"):
        await dispatcher.aclose()
    assert rx.keys() == ["a1:firing", "a1:firing", "a2:firing"]  # one more try each
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line == (
        "alert sink webhook: 2 notice(s) not delivered at shutdown "
        "(last error: HTTP 500: receiver says no): a1:firing, a2:firing"
    )
    assert dispatcher.snapshot()[0]["failures"] == 3


async def test_the_shutdown_flush_is_bounded_in_time(
    receivers, client, supervisor, caplog: pytest.LogCaptureFixture
):
    rx = await receivers()
    rx.fail_next = 1
    clock = RecordingClock()
    dispatcher = NotificationDispatcher(
        [WebhookSink(rx.url, {}, 30.0, client)], clock, flush_timeout_s=0.2
    )
    dispatcher.start(supervisor)
    dispatcher.notify(notice(1))
    await until(lambda: len(clock.sleeps) == 1)
    rx.hang_next = 10  # from now on the receiver takes requests and never answers
    dispatcher.notify(notice(2))
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.ERROR, logger="hybridroute.notify"):
        await dispatcher.aclose()
    assert loop.time() - began < 2.0
    assert rx.keys() == ["a1:firing", "a1:firing"]  # hung on a1; a2 never got its turn
    assert "2 notice(s) not delivered at shutdown (last error: shutdown flush ran out of time" in (
        caplog.text
    )


async def test_a_transition_queued_twice_is_sent_once(receivers, client, supervisor):
    rx = await receivers()
    dispatcher = NotificationDispatcher([WebhookSink(rx.url, {}, 2.0, client)], FakeClock())
    dispatcher.notify(notice(1))
    dispatcher.notify(notice(1))  # still waiting: not queued again
    dispatcher.notify(notice(1, transition="resolved"))  # another transition: its own notice
    assert dispatcher.snapshot()[0]["queued"] == 2
    dispatcher.start(supervisor)
    await until(lambda: dispatcher.snapshot()[0]["delivered"] == 2)
    dispatcher.notify(notice(1))  # delivered already
    await asyncio.sleep(0.05)
    assert rx.keys() == ["a1:firing", "a1:resolved"]
    await dispatcher.aclose()


def test_the_dispatcher_refuses_bad_settings():
    log_a, log_b = LogSink(name="same"), LogSink(name="same")
    with pytest.raises(ValueError, match="repeated: same"):
        NotificationDispatcher([log_a, log_b], FakeClock())
    with pytest.raises(ValueError, match="max_queue_per_sink"):
        NotificationDispatcher([], FakeClock(), max_queue_per_sink=0)
    with pytest.raises(ValueError, match="backoff"):
        NotificationDispatcher([], FakeClock(), backoff_start_s=5, backoff_max_s=1)


async def test_a_log_sink_through_the_dispatcher(supervisor, caplog: pytest.LogCaptureFixture):
    dispatcher = NotificationDispatcher([LogSink(severities=["info"])], FakeClock())
    dispatcher.start(supervisor)
    with caplog.at_level(logging.INFO, logger="hybridroute.alerts"):
        dispatcher.notify(notice(1, severity="critical"))
        dispatcher.notify(notice(2, severity="info", transition="resolved"))
        await until(lambda: dispatcher.snapshot()[0]["delivered"] == 1)
    (record,) = [r for r in caplog.records if r.name == "hybridroute.alerts"]
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("alert resolved: rule=error_rate_critical ")
    await dispatcher.aclose()


@pytest.mark.anyio
async def test_a_notice_the_receiver_refuses_for_good_is_dropped_not_retried_forever():
    """A 4xx other than 408/429 is permanent: retrying would block the sink's queue."""

    class Refusing:
        name, kind, severities = "webhook", "webhook", frozenset({"critical", "warning", "info"})

        def __init__(self) -> None:
            self.seen: list[str] = []

        async def send(self, notice: AlertNotice) -> None:
            self.seen.append(notice.dedupe_key)
            if len(self.seen) == 1:
                raise DeliveryFailed("HTTP 400: invalid_payload", permanent=True)

    sink = Refusing()
    clock = FakeClock()
    dispatcher = NotificationDispatcher([sink], clock)
    supervisor = TaskSupervisor("test")
    dispatcher.start(supervisor)
    first, second = notice(alert_id="a-1"), notice(alert_id="a-2")
    dispatcher.notify(first)
    dispatcher.notify(second)
    for _ in range(50):
        if len(sink.seen) == 2:
            break
        await asyncio.sleep(0)
    (lane,) = dispatcher.snapshot()
    assert sink.seen == [first.dedupe_key, second.dedupe_key]  # the second is not held up
    assert (lane["rejected"], lane["delivered"], lane["failures"]) == (1, 1, 1)
    await dispatcher.aclose()
    await supervisor.aclose()
