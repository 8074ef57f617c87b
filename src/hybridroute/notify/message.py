"""`AlertNotice`: one transition of one alert (firing, acknowledged, resolved) as sinks see it.

A notice is immutable and carries everything a receiver needs without calling back: the rule,
severity, the figure against its threshold, labels (route, budget, ...), when the alert started
and when this transition happened, and which gateway instance saw it. It renders itself two
ways: `as_dict()` for the generic JSON webhook and the log, `slack_payload()` for a Slack
incoming webhook. `dedupe_key` names the transition, so receivers can drop a repeat delivery.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

__all__ = ["SEVERITIES", "TRANSITIONS", "AlertNotice", "iso_utc"]

SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")
"""Alert severities, most urgent first."""

TRANSITIONS: tuple[str, ...] = ("firing", "acknowledged", "resolved")
"""What can happen to an alert, each announced once."""

# Slack limits: a header block's text and a section field's text.
_SLACK_HEADER_MAX = 150
_SLACK_FIELD_MAX = 2000
_SLACK_TEXT_MAX = 3000


def iso_utc(seconds: float) -> str:
    """Unix seconds as ISO-8601 in UTC with milliseconds, e.g. `2027-01-15T08:00:00.000Z`."""
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _finite(number: float | None) -> float | None:
    """JSON has no NaN or infinity: such a figure is reported as unknown (null)."""
    if number is None or not math.isfinite(number):
        return None
    return number


def _figure(number: float | None) -> str:
    finite = _finite(number)
    return "n/a" if finite is None else f"{finite:g}"


def _mrkdwn(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """One alert transition, ready to be sent.

    `alert_id` is unique per alert instance (one firing episode of one rule and label set);
    `started_at` and `at` are wall-clock Unix seconds (when the alert started firing, and when
    this transition happened). `value` is the figure that was judged, None when unknown.
    """

    alert_id: str
    rule: str
    severity: str
    transition: str
    summary: str
    description: str
    labels: Mapping[str, str]
    value: float | None
    threshold: float
    started_at: float
    at: float
    acknowledged_by: str | None = None
    gateway: str = "hybridroute"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"unknown severity {self.severity!r}; expected one of {', '.join(SEVERITIES)}"
            )
        if self.transition not in TRANSITIONS:
            raise ValueError(
                f"unknown transition {self.transition!r}; expected one of {', '.join(TRANSITIONS)}"
            )
        if not self.alert_id:
            raise ValueError("an alert notice needs a non-empty alert_id")
        # A private copy, read-only: the caller's dict may change after the notice is queued.
        copied = MappingProxyType({str(k): str(v) for k, v in self.labels.items()})
        object.__setattr__(self, "labels", copied)

    @property
    def dedupe_key(self) -> str:
        """Names this transition of this alert; the same key means the same notification."""
        return f"{self.alert_id}:{self.transition}"

    @property
    def headline(self) -> str:
        """One line: `[CRITICAL] firing: Error rate 7.3 % > 5 % for 2 min`."""
        return f"[{self.severity.upper()}] {self.transition}: {self.summary}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: plain types only, times both as Unix seconds and ISO-8601 UTC."""
        return {
            "dedupe_key": self.dedupe_key,
            "alert_id": self.alert_id,
            "rule": self.rule,
            "severity": self.severity,
            "transition": self.transition,
            "summary": self.summary,
            "description": self.description,
            "labels": dict(self.labels),
            "value": _finite(self.value),
            "threshold": _finite(self.threshold),
            "started_at": self.started_at,
            "started_at_iso": iso_utc(self.started_at),
            "at": self.at,
            "at_iso": iso_utc(self.at),
            "acknowledged_by": self.acknowledged_by,
            "gateway": self.gateway,
        }

    def labels_text(self) -> str:
        """Labels as `key=value`, sorted by key, comma separated (`-` when there are none)."""
        if not self.labels:
            return "-"
        return ", ".join(f"{k}={self.labels[k]}" for k in sorted(self.labels))

    def slack_payload(self) -> dict[str, Any]:
        """A Slack incoming-webhook body: fallback `text` plus Block Kit `blocks`."""
        fields = [
            ("Rule", self.rule),
            ("Value / threshold", f"{_figure(self.value)} vs {_figure(self.threshold)}"),
            ("Labels", self.labels_text()),
            ("Started", iso_utc(self.started_at)),
        ]
        if self.acknowledged_by:
            fields.append(("Acknowledged by", self.acknowledged_by))
        fields.append(("Gateway", self.gateway))
        blocks: list[dict[str, Any]] = [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": _clip(self.headline, _SLACK_HEADER_MAX),
                    "emoji": False,
                },
            },
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _clip(
                        f"*{_mrkdwn(self.headline)}*"
                        + (f"\n{_mrkdwn(self.description)}" if self.description else ""),
                        _SLACK_TEXT_MAX,
                    ),
                },
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": _clip(f"*{name}*\n{_mrkdwn(text)}", _SLACK_FIELD_MAX),
                    }
                    for name, text in fields
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": _mrkdwn(f"{iso_utc(self.at)} · dedupe key {self.dedupe_key}"),
                    }
                ],
            },
        ]
        return {"text": f"{self.headline} ({self.rule}, {self.gateway})", "blocks": blocks}
