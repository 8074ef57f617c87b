"""Alerts: rules evaluated over the gateway's live figures, with a lifecycle and notifications.

Every `evaluate_every_s` the runtime hands `AlertManager.evaluate()` the current *readings*: for
each metric an alert rule can watch (`config.observability.ALERT_METRICS`), its value now, once
or per instance (a budget, a route). A rule's condition (`metric op threshold`) is checked for
every instance:

- true for the first time → the alert is **pending**; it **fires** once the condition has held
  at every evaluation for the rule's `for_s` (at once when `for_s` is 0);
- a false condition → a pending alert is dropped; a firing or acknowledged one is **resolved**
  once the condition has stayed false for `resolve_after_s` (so a figure hovering at its
  threshold does not flap); an instance gone from the readings (a rule disabled, a budget
  removed) resolves at once;
- an unknown value (too little traffic in the window) changes nothing: a pending alert stays
  pending, a firing one keeps firing — an outage that also silences traffic does not resolve;
- an operator may **acknowledge** a firing alert (who, when, a note); it stays active until its
  condition clears, and is not notified again.

One active alert per rule and instance (de-duplication): a condition that stays true never
raises a second one. Each transition to firing, acknowledged and resolved is handed to the
notifier exactly once (the notification dispatcher delivers it to every sink, retrying each
on its own) and to every listener (the event log). Durations are measured on the clock's
monotonic time; the times reported are wall-clock. `close()` resolves every active alert when
the evaluator stops, so no receiver keeps an alert that never resolves.
"""

from __future__ import annotations

import itertools
import logging
import operator
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from hybridroute._clock import Clock
from hybridroute.config.observability import ALERT_METRIC_NAMES, AlertRuleConfig
from hybridroute.errors import NotFound, RequestError

__all__ = [
    "Alert",
    "AlertManager",
    "Notifier",
    "Reading",
    "Readings",
    "Transition",
]

log = logging.getLogger("hybridroute.alerts")

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Reading:
    """One metric's value now, for one instance (labels empty when the metric has one)."""

    value: float | None
    labels: Labels = ()


Readings = Mapping[str, Sequence[Reading]]
"""Per metric name, its readings now."""


@dataclass(slots=True)
class Alert:
    """One alert instance: a rule, the labels of what it is about, and where it stands."""

    id: str
    rule: str
    severity: str
    labels: Labels
    status: str  # pending | firing | acknowledged | resolved
    summary: str
    description: str
    threshold: float
    value: float | None
    pending_since: float  # monotonic
    started_at: float | None = None  # wall: when it fired
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    acknowledge_note: str | None = None
    resolved_at: float | None = None
    history: list[tuple[str, float]] = field(default_factory=list)  # (transition, wall)
    clear_since: float | None = None  # monotonic: since when its condition has been false

    @property
    def active(self) -> bool:
        return self.status in ("firing", "acknowledged")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "severity": self.severity,
            "labels": dict(self.labels),
            "status": self.status,
            "summary": self.summary,
            "description": self.description,
            "threshold": self.threshold,
            "value": self.value,
            "started_at": self.started_at,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
            "acknowledge_note": self.acknowledge_note,
            "resolved_at": self.resolved_at,
            "transitions": [{"transition": t, "at": at} for t, at in self.history],
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert moved to firing, acknowledged or resolved (what notifiers hear)."""

    alert: Alert  # a copy, as it was at the transition
    transition: str
    at: float


class Notifier(Protocol):
    def notify(self, transition: Transition) -> None:
        """Hand a transition on; must not block or raise."""
        ...


def _label_text(labels: Labels) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels)


def _format(metric: str, value: float | None) -> str:
    if value is None:
        return "unknown"
    if metric.endswith("_s"):
        return f"{value:.2f} s"
    if metric in ("bedrock_unavailable",):
        return "down" if value >= 1 else "up"
    return f"{value * 100:.1f} %"


class AlertManager:
    """Evaluates alert rules and keeps every alert's lifecycle."""

    def __init__(
        self,
        rules: Mapping[str, AlertRuleConfig],
        clock: Clock,
        *,
        notifier: Notifier | None = None,
        keep_resolved: int = 500,
        resolve_after_s: float = 60.0,
    ) -> None:
        self._clock = clock
        self._rules = dict(rules)
        self._notifier = notifier
        self._resolve_after_s = resolve_after_s
        self._gauged: set[tuple[str, str]] = set()  # (rule, severity) the alerts gauge has shown
        self._listeners: list[Callable[[Transition], None]] = []
        self._active: dict[tuple[str, Labels], Alert] = {}
        self._resolved: deque[Alert] = deque(maxlen=keep_resolved)
        prefix = secrets.token_hex(3)  # this process's; the counter orders them within it
        self._ids = (f"alert-{prefix}-{n:06d}" for n in itertools.count(1))
        self.evaluations = 0
        self.last_evaluated_at: float | None = None

    # -- rules -----------------------------------------------------------------------------------

    @property
    def rules(self) -> dict[str, AlertRuleConfig]:
        return dict(self._rules)

    def update_rules(self, changes: Mapping[str, Mapping[str, Any]]) -> dict[str, AlertRuleConfig]:
        """Change rules while running: each entry merges over the rule of that id (a new id
        adds a rule). Validates everything before applying anything; returns the new rules."""
        updated = dict(self._rules)
        problems = []
        for rule_id, change in changes.items():
            base = updated[rule_id].model_dump() if rule_id in updated else {}
            try:
                updated[rule_id] = AlertRuleConfig.model_validate({**base, **dict(change)})
            except ValueError as exc:
                problems.append(f"{rule_id}: {exc}".replace("\n", " "))
        if problems:
            raise RequestError("invalid alert rules: " + "; ".join(problems), param="rules")
        self._rules = updated
        return dict(updated)

    def add_listener(self, listener: Callable[[Transition], None]) -> None:
        self._listeners.append(listener)

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, readings: Readings) -> list[Transition]:
        """Check every rule against the readings; returns the transitions it made."""
        now_mono, now = self._clock.monotonic(), self._clock.now()
        self.evaluations += 1
        self.last_evaluated_at = now
        transitions: list[Transition] = []
        present: set[tuple[str, Labels]] = set()
        for rule_id, rule in self._rules.items():
            if not rule.enabled:
                continue
            for reading in readings.get(rule.metric, ()):
                key = (rule_id, reading.labels)
                present.add(key)
                made = self._judge(key, rule, reading, now_mono, now)
                if made is not None:
                    transitions.append(made)
        # An instance gone from the readings (a rule disabled, a budget removed) ends at once.
        for key in [k for k in self._active if k not in present]:
            if self._active[key].status == "pending":
                del self._active[key]
            else:
                transitions.append(self._resolve(key, now))
        return transitions

    def _judge(
        self,
        key: tuple[str, Labels],
        rule: AlertRuleConfig,
        reading: Reading,
        now_mono: float,
        now: float,
    ) -> Transition | None:
        """One rule on one reading: open, fire, hold or resolve its alert."""
        alert = self._active.get(key)
        if reading.value is None:
            return None  # unknown (too little traffic): whatever stands, stands
        if _COMPARE[rule.op](reading.value, rule.threshold):
            if alert is None:
                alert = self._open(key[0], rule, reading, now_mono)
            self._refresh(alert, rule, reading)
            alert.clear_since = None
            if alert.status == "pending" and now_mono - alert.pending_since >= rule.for_s:
                alert.status = "firing"
                alert.started_at = now
                return self._transition(alert, "firing", now)
            return None
        if alert is None:
            return None
        # The rule may have changed while running; the summary keeps saying what broke it.
        alert.value = reading.value
        alert.threshold = rule.threshold
        alert.severity = rule.severity
        if alert.status == "pending":
            del self._active[key]  # never fired: nobody was told
            return None
        if alert.clear_since is None:
            alert.clear_since = now_mono
        if now_mono - alert.clear_since >= self._resolve_after_s:
            return self._resolve(key, now)
        return None

    def _refresh(self, alert: Alert, rule: AlertRuleConfig, reading: Reading) -> None:
        """The alert follows its reading and its rule (which may have changed while running)."""
        alert.value = reading.value
        alert.threshold = rule.threshold
        alert.severity = rule.severity
        alert.summary = self._summary(rule, reading.value, reading.labels)

    def _resolve(self, key: tuple[str, Labels], now: float, why: str | None = None) -> Transition:
        alert = self._active.pop(key)
        alert.status = "resolved"
        alert.resolved_at = now
        if why:
            alert.summary = f"{alert.summary} ({why})"
        elif alert.clear_since is not None:
            rule = self._rules.get(alert.rule)
            metric = rule.metric if rule is not None else ""
            alert.summary = f"{alert.summary}; back to {_format(metric, alert.value)}"
        self._resolved.append(alert)
        return self._transition(alert, "resolved", now)

    def close(self, why: str) -> list[Transition]:
        """Resolve every active alert because the evaluator stops (`why`, e.g. the gateway
        stopped), so no receiver is left with an alert that never resolves."""
        now = self._clock.now()
        transitions = []
        for key in list(self._active):
            if self._active[key].status == "pending":
                del self._active[key]
            else:
                transitions.append(self._resolve(key, now, why))
        return transitions

    def _open(self, rule_id: str, rule: AlertRuleConfig, reading: Reading, now: float) -> Alert:
        alert = Alert(
            id=next(self._ids),
            rule=rule_id,
            severity=rule.severity,
            labels=reading.labels,
            status="pending",
            summary="",
            description=rule.description,
            threshold=rule.threshold,
            value=reading.value,
            pending_since=now,
        )
        self._active[(rule_id, reading.labels)] = alert
        return alert

    def _summary(self, rule: AlertRuleConfig, value: float | None, labels: Labels) -> str:
        about = f" ({_label_text(labels)})" if labels else ""
        name = ALERT_METRIC_NAMES[rule.metric]
        if rule.metric == "bedrock_unavailable":
            state = "down" if value is not None and value >= 1 else "up"
            return f"{name} connection failure{about}: the route is {state}"
        threshold = _format(rule.metric, rule.threshold)
        held = f" for {rule.for_s / 60:g} min" if rule.for_s else ""
        return f"{name}{about}: {_format(rule.metric, value)} {rule.op} {threshold}{held}"

    def _transition(self, alert: Alert, transition: str, at: float) -> Transition:
        alert.history.append((transition, at))
        event = Transition(replace(alert, history=list(alert.history)), transition, at)
        level = {"critical": logging.ERROR, "warning": logging.WARNING}.get(
            alert.severity, logging.INFO
        )
        log.log(level, "alert %s %s: %s", alert.rule, transition, alert.summary)
        if self._notifier is not None:
            self._notifier.notify(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not stop alerting
                log.exception("alert listener failed")
        return event

    # -- operators -------------------------------------------------------------------------------

    def acknowledge(self, alert_id: str, who: str, note: str | None = None) -> Alert:
        """Acknowledge a firing alert (a RequestError, 400, if it is not firing; NotFound, 404,
        if there is no such alert)."""
        for alert in self._active.values():
            if alert.id == alert_id:
                if alert.status == "acknowledged":
                    raise RequestError(
                        f"alert {alert_id} was already acknowledged by {alert.acknowledged_by}",
                        param="id",
                    )
                if alert.status != "firing":
                    raise RequestError(
                        f"alert {alert_id} is {alert.status}, not firing: nothing to "
                        "acknowledge yet",
                        param="id",
                    )
                now = self._clock.now()
                alert.status = "acknowledged"
                alert.acknowledged_at = now
                alert.acknowledged_by = who
                alert.acknowledge_note = note
                self._transition(alert, "acknowledged", now)
                return alert
        if any(a.id == alert_id for a in self._resolved):
            raise RequestError(f"alert {alert_id} is already resolved", param="id")
        raise NotFound(f"no alert {alert_id}; GET /admin/alerts lists them")

    # -- reading ---------------------------------------------------------------------------------

    def active(self) -> list[Alert]:
        """Firing and acknowledged alerts, most severe and oldest first."""
        order = {"critical": 0, "warning": 1, "info": 2}
        alerts = [a for a in self._active.values() if a.active]
        return sorted(alerts, key=lambda a: (order.get(a.severity, 3), a.started_at or 0.0))

    def pending(self) -> list[Alert]:
        return [a for a in self._active.values() if a.status == "pending"]

    def resolved(self, limit: int = 100) -> list[Alert]:
        """The most recently resolved alerts, newest first."""
        return list(self._resolved)[::-1][:limit]

    def firing_rules(self) -> Iterable[tuple[str, str, bool]]:
        """(rule, severity, active) for every rule and severity the alerts gauge has ever
        shown, so a rule disabled or moved to another severity reads 0, not its last value."""
        active = {(a.rule, a.severity) for a in self.active()}
        for rule_id, rule in self._rules.items():
            if rule.enabled:
                self._gauged.add((rule_id, rule.severity))
        self._gauged.update(active)
        for rule_id, severity in sorted(self._gauged):
            yield rule_id, severity, (rule_id, severity) in active
