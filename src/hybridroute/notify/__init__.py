"""Alert notifications: what an alert transition says (`AlertNotice`), where it goes (sinks:
the log, a JSON webhook, Slack) and how it gets there without holding anybody up
(`NotificationDispatcher`: one queue and worker per sink, retries with backoff, bounded).
"""

from __future__ import annotations

from hybridroute.notify.dispatcher import JITTER, REMEMBERED_KEYS, NotificationDispatcher
from hybridroute.notify.message import SEVERITIES, TRANSITIONS, AlertNotice, iso_utc
from hybridroute.notify.sinks import (
    ALERT_LOGGER,
    DEDUPE_HEADER,
    DeliveryFailed,
    LogSink,
    Sink,
    SlackSink,
    WebhookSink,
    build_sinks,
)

__all__ = [
    "ALERT_LOGGER",
    "DEDUPE_HEADER",
    "JITTER",
    "REMEMBERED_KEYS",
    "SEVERITIES",
    "TRANSITIONS",
    "AlertNotice",
    "DeliveryFailed",
    "LogSink",
    "NotificationDispatcher",
    "Sink",
    "SlackSink",
    "WebhookSink",
    "build_sinks",
    "iso_utc",
]
