"""Alert sinks: where an `AlertNotice` is delivered (the log, a JSON webhook, a Slack webhook).

A sink makes one delivery attempt per `send()` and raises `DeliveryFailed` when it did not
get through; retrying, ordering and queueing are the dispatcher's business, not the sink's.
HTTP sinks share the caller's `httpx2.AsyncClient` and bound each attempt twice: httpx's own
per-phase timeout and an overall deadline of `timeout_s`, so a receiver that trickles bytes
cannot hold an attempt open either. Error messages never include a sink's URL (a Slack webhook
URL is a secret).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import httpx2 as httpx
import orjson

from hybridroute.config.observability import AlertSinkConfig
from hybridroute.notify.message import SEVERITIES, AlertNotice

__all__ = [
    "ALERT_LOGGER",
    "DEDUPE_HEADER",
    "DeliveryFailed",
    "LogSink",
    "Sink",
    "SlackSink",
    "WebhookSink",
    "build_sinks",
]

DEDUPE_HEADER = "X-Hybridroute-Dedupe-Key"
"""Header carrying `AlertNotice.dedupe_key` on every HTTP delivery."""

ALERT_LOGGER = "hybridroute.alerts"
"""The logger `LogSink` writes to."""

_LOG_LEVELS = {"critical": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}
_EXCERPT_CHARS = 200
_PLAIN_VALUE = re.compile(r"[^\s\"=]+")


class DeliveryFailed(Exception):
    """One delivery attempt did not get through. `retry_after_s` is the receiver's own hint
    (a Retry-After header on 429/503), when it gave one."""

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        # The receiver refused this notice for good (a 4xx other than 408 and 429): sending
        # it again would fail the same way and hold up every notice behind it.
        self.permanent = permanent


class Sink(Protocol):
    """A destination for alert notices."""

    name: str
    """Unique among the configured sinks; used in logs and the dispatcher's snapshot."""
    kind: str
    """`log`, `webhook` or `slack`."""
    severities: frozenset[str]
    """The severities this sink hears."""

    async def send(self, notice: AlertNotice) -> None:
        """Deliver `notice` once; raise (preferably `DeliveryFailed`) if it did not arrive."""
        ...


def _severities(values: Iterable[str] | None) -> frozenset[str]:
    chosen = frozenset(SEVERITIES if values is None else values)
    unknown = chosen - set(SEVERITIES)
    if unknown:
        raise ValueError(
            f"unknown severities {sorted(unknown)}; expected some of {', '.join(SEVERITIES)}"
        )
    return chosen


def _kv(key: str, value: str) -> str:
    """`key=value`, quoting the value when it has spaces, quotes or `=` (or is empty)."""
    if _PLAIN_VALUE.fullmatch(value):
        return f"{key}={value}"
    return f"{key}={orjson.dumps(value).decode()}"


class LogSink:
    """Writes each notice as one structured line to the `hybridroute.alerts` logger.

    Level by severity: critical → ERROR, warning → WARNING, info → INFO. The whole notice is
    also attached as `record.alert` (its `as_dict()`) for JSON log formatters.
    """

    kind = "log"

    def __init__(
        self,
        *,
        name: str = "log",
        severities: Iterable[str] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.severities = _severities(severities)
        self._log = logger or logging.getLogger(ALERT_LOGGER)

    @staticmethod
    def line(notice: AlertNotice) -> str:
        """The log line for `notice` (rule, transition, summary, then labels as key=value)."""
        parts = [
            f"alert {notice.transition}:",
            _kv("rule", notice.rule),
            _kv("severity", notice.severity),
            _kv("transition", notice.transition),
            _kv("summary", notice.summary),
        ]
        parts += [_kv(k, notice.labels[k]) for k in sorted(notice.labels)]
        value = "n/a" if notice.value is None else f"{notice.value:g}"
        parts += [
            _kv("value", value),
            _kv("threshold", f"{notice.threshold:g}"),
        ]
        if notice.acknowledged_by:
            parts.append(_kv("acknowledged_by", notice.acknowledged_by))
        parts += [_kv("alert_id", notice.alert_id), _kv("gateway", notice.gateway)]
        return " ".join(parts)

    async def send(self, notice: AlertNotice) -> None:
        self._log.log(
            _LOG_LEVELS[notice.severity], "%s", self.line(notice), extra={"alert": notice.as_dict()}
        )

    def __repr__(self) -> str:
        return f"<LogSink {self.name}>"


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT_CHARS else flat[: _EXCERPT_CHARS - 1] + "…"


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:  # the HTTP-date form: not worth parsing for a hint
        return None
    return seconds if seconds >= 0 else None


class _HttpSink:
    """POSTs a JSON body; any non-2xx answer, timeout or connection error is a failure."""

    kind = "http"

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None,
        timeout_s: float,
        client: httpx.AsyncClient,
        *,
        name: str | None = None,
        severities: Iterable[str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a {self.kind} sink needs an http(s) url")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.name = name or self.kind
        self.severities = _severities(severities)
        self._url = url
        self._headers = dict(headers or {})
        self._timeout_s = timeout_s
        self._client = client

    def body(self, notice: AlertNotice) -> bytes:
        raise NotImplementedError

    async def send(self, notice: AlertNotice) -> None:
        headers = httpx.Headers(self._headers)
        headers["Content-Type"] = "application/json"
        headers[DEDUPE_HEADER] = notice.dedupe_key
        content = self.body(notice)
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.post(
                    self._url, content=content, headers=headers, timeout=self._timeout_s
                )
        except (TimeoutError, httpx.TimeoutException):
            raise DeliveryFailed(f"no answer within {self._timeout_s:g}s (timed out)") from None
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            status = response.status_code
            raise DeliveryFailed(
                f"HTTP {status}: {_excerpt(response.text) or '(empty body)'}",
                retry_after_s=_retry_after(response),
                permanent=400 <= status < 500 and status not in (408, 429),
            )

    def __repr__(self) -> str:
        host = httpx.URL(self._url).host
        return f"<{type(self).__name__} {self.name} host={host}>"


class WebhookSink(_HttpSink):
    """A generic JSON webhook: the body is `notice.as_dict()`."""

    kind = "webhook"

    def body(self, notice: AlertNotice) -> bytes:
        return orjson.dumps(notice.as_dict())


class SlackSink(_HttpSink):
    """A Slack incoming webhook: the body is `notice.slack_payload()`."""

    kind = "slack"

    def body(self, notice: AlertNotice) -> bytes:
        return orjson.dumps(notice.slack_payload())


def build_sinks(configs: Sequence[AlertSinkConfig], client: httpx.AsyncClient) -> list[Sink]:
    """One sink per config entry, named by type: `log`, `webhook`, `slack`, then `webhook-2`,
    `webhook-3`, ... for further sinks of the same type, in configuration order."""
    sinks: list[Sink] = []
    seen: dict[str, int] = {}
    for config in configs:
        seen[config.type] = seen.get(config.type, 0) + 1
        name = config.type if seen[config.type] == 1 else f"{config.type}-{seen[config.type]}"
        if config.type == "log":
            sinks.append(LogSink(name=name, severities=config.severities))
            continue
        if config.url is None:  # AlertSinkConfig already refuses this; kept for the type checker
            raise ValueError(f"a {config.type} sink needs 'url'")
        http_type = WebhookSink if config.type == "webhook" else SlackSink
        sinks.append(
            http_type(
                config.url,
                config.headers,
                config.timeout_s,
                client,
                name=name,
                severities=config.severities,
            )
        )
    return sinks
