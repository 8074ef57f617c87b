"""The alert manager on a FakeClock with hand-made readings: every DESIGN.md §5 rule's timing
(pending → firing after exactly its `for_s`, never one evaluation early), de-duplication, unknown
values, per-instance alerts, acknowledgement, what the notifier hears, rule updates at run time,
disabled rules, the alerts gauge and the summary text.

Evaluations run every 5 s of fake time (`alerts.evaluate_every_s`' default), as the
observability loop would run them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest

from hybridroute.config.observability import (
    DEFAULT_ALERT_RULES,
    AlertRuleConfig,
    AlertsConfig,
)
from hybridroute.errors import NotFound, RequestError
from hybridroute.observability.alerts import Alert, AlertManager, Reading, Transition
from hybridroute.testing import FakeClock

STEP_S = 5.0  # the default evaluate_every_s
START_MONO = 1000.0
START_WALL = 1_800_000_000.0  # 2027-01-15T08:00:00Z

GLOBAL_DAILY = (("budget", "global"), ("period", "daily"))
GLOBAL_MONTHLY = (("budget", "global"), ("period", "monthly"))
TEAM_DAILY = (("budget", "team-a"), ("period", "daily"))
BEDROCK = (("route", "direct_bedrock"),)
BEDROCK_EU = (("route", "direct_bedrock_eu"),)

# The seed's table, as DESIGN.md §5 writes it: (severity, metric, op, threshold, for_s).
SEED_TABLE: dict[str, tuple[str, str, str, float, float]] = {
    "latency_p95_critical": ("critical", "generation_p95_s", ">", 2.0, 300),
    "error_rate_critical": ("critical", "error_rate", ">", 0.05, 120),
    "bedrock_connection_failure": ("critical", "bedrock_unavailable", ">=", 1, 0),
    "budget_critical": ("critical", "budget_utilisation", ">=", 0.95, 0),
    "latency_p95_warning": ("warning", "generation_p95_s", ">", 1.5, 600),
    "error_rate_warning": ("warning", "error_rate", ">", 0.02, 300),
    "cache_hit_rate_warning": ("warning", "cache_hit_rate", "<", 0.70, 900),
    "fallback_rate_warning": ("warning", "fallback_rate", ">", 0.20, 0),
    "cache_hit_rate_info": ("info", "cache_hit_rate", "<", 0.80, 1800),
    "budget_info": ("info", "budget_utilisation", ">=", 0.80, 0),
    "routing_efficiency_info": ("info", "routing_efficiency", "<", 0.90, 0),
}

# Per rule: a value that breaks it, and one that does not.
BAD_GOOD: dict[str, tuple[float, float]] = {
    "latency_p95_critical": (2.5, 1.0),
    "error_rate_critical": (0.07, 0.01),
    "bedrock_connection_failure": (1.0, 0.0),
    "budget_critical": (0.95, 0.5),  # >=: the threshold itself breaks it
    "latency_p95_warning": (1.6, 1.0),
    "error_rate_warning": (0.03, 0.01),
    "cache_hit_rate_warning": (0.6, 0.9),
    "fallback_rate_warning": (0.3, 0.1),
    "cache_hit_rate_info": (0.75, 0.9),
    "budget_info": (0.8, 0.5),
    "routing_efficiency_info": (0.85, 0.95),
}


def default_rules() -> dict[str, AlertRuleConfig]:
    """The rules a gateway with no `alerts.rules` in its config runs."""
    return dict(AlertsConfig().rules)


def labels_for(metric: str) -> tuple[tuple[str, str], ...]:
    if metric == "budget_utilisation":
        return GLOBAL_DAILY
    if metric == "bedrock_unavailable":
        return BEDROCK
    return ()


class Recorder:
    """A notifier (and listener) that keeps every transition it hears."""

    def __init__(self) -> None:
        self.heard: list[Transition] = []

    def notify(self, transition: Transition) -> None:
        self.heard.append(transition)

    def kinds(self) -> list[tuple[str, str]]:
        return [(t.alert.rule, t.transition) for t in self.heard]


class Harness:
    """A manager, its FakeClock and a notifier; `at(t, ...)` evaluates t seconds after start."""

    def __init__(
        self, rules: Mapping[str, AlertRuleConfig] | None = None, resolve_after_s: float = 0.0
    ) -> None:
        self.clock = FakeClock(start=START_MONO, wall_start=START_WALL)
        self.notifier = Recorder()
        self.manager = AlertManager(
            default_rules() if rules is None else rules,
            self.clock,
            notifier=self.notifier,
            resolve_after_s=resolve_after_s,
        )
        self.t = 0.0

    def at(self, t: float, readings: Mapping[str, list[Reading]]) -> list[Transition]:
        assert t >= self.t
        self.clock.advance(t - self.t)
        self.t = t
        return self.manager.evaluate(readings)

    def one(self, metric: str, value: float | None, labels: Any = None) -> dict[str, Any]:
        return {metric: [Reading(value, labels_for(metric) if labels is None else labels)]}


def only(rule_id: str) -> dict[str, AlertRuleConfig]:
    return {rule_id: default_rules()[rule_id]}


def statuses(manager: AlertManager) -> dict[str, str]:
    alerts: list[Alert] = [*manager.pending(), *manager.active()]
    return {a.rule: a.status for a in alerts}


# -- the defaults are the seed's table -------------------------------------------------------------


def test_default_rules_are_the_seed_table() -> None:
    rules = default_rules()
    assert set(rules) == set(SEED_TABLE) == set(DEFAULT_ALERT_RULES)
    for rule_id, (severity, metric, op, threshold, for_s) in SEED_TABLE.items():
        rule = rules[rule_id]
        assert (rule.severity, rule.metric, rule.op, rule.threshold, rule.for_s) == (
            severity,
            metric,
            op,
            threshold,
            for_s,
        ), rule_id
        assert rule.enabled is True


def test_config_rules_merge_over_the_defaults_key_by_key() -> None:
    config = AlertsConfig.model_validate(
        {"rules": {"latency_p95_critical": {"threshold": 3}, "fallback_rate_warning": {}}}
    )
    assert config.rules["latency_p95_critical"].threshold == 3.0
    assert config.rules["latency_p95_critical"].for_s == 300.0  # the rest of the rule is kept
    assert config.rules["latency_p95_critical"].severity == "critical"
    assert set(config.rules) == set(SEED_TABLE)


# -- every rule's timing ---------------------------------------------------------------------------


@pytest.mark.parametrize("rule_id", sorted(SEED_TABLE))
def test_each_default_rule_fires_after_exactly_its_for_s_once_and_resolves(rule_id: str) -> None:
    rule = default_rules()[rule_id]
    bad, good = BAD_GOOD[rule_id]
    h = Harness(only(rule_id))
    bad_readings = h.one(rule.metric, bad)

    first = h.at(0, bad_readings)
    alerts = [*h.manager.pending(), *h.manager.active()]
    assert len(alerts) == 1
    alert_id = alerts[0].id
    assert alerts[0].labels == labels_for(rule.metric)
    if rule.for_s == 0:
        assert [t.transition for t in first] == ["firing"]  # immediate: no pending step
        fired_at = 0.0
    else:
        assert first == []
        assert alerts[0].status == "pending"
        # every evaluation up to one step before for_s: still pending, nothing said
        t = STEP_S
        while t < rule.for_s:
            assert h.at(t, bad_readings) == [], (rule_id, t)
            assert [a.status for a in h.manager.pending()] == ["pending"], (rule_id, t)
            assert h.manager.active() == []
            t += STEP_S
        assert t == rule.for_s
        fired = h.at(rule.for_s, bad_readings)
        assert [(x.transition, x.alert.id) for x in fired] == [("firing", alert_id)]
        fired_at = rule.for_s

    # the condition stays true: no second alert, no second notice
    for k in range(1, 13):
        assert h.at(fired_at + k * STEP_S, bad_readings) == []
    active = h.manager.active()
    assert [(a.id, a.status) for a in active] == [(alert_id, "firing")]
    assert h.manager.pending() == []
    assert active[0].started_at == START_WALL + fired_at

    resolved_t = fired_at + 13 * STEP_S
    resolved = h.at(resolved_t, h.one(rule.metric, good))
    assert [(x.transition, x.alert.id) for x in resolved] == [("resolved", alert_id)]
    assert h.manager.active() == []
    assert [(a.id, a.resolved_at) for a in h.manager.resolved()] == [
        (alert_id, START_WALL + resolved_t)
    ]
    assert h.at(resolved_t + STEP_S, h.one(rule.metric, good)) == []
    assert h.notifier.kinds() == [(rule_id, "firing"), (rule_id, "resolved")]


@pytest.mark.parametrize("rule_id", sorted(SEED_TABLE))
def test_the_threshold_itself_breaks_only_inclusive_rules(rule_id: str) -> None:
    rule = default_rules()[rule_id]
    h = Harness(only(rule_id))
    h.at(0, h.one(rule.metric, rule.threshold))
    held = bool(h.manager.pending() or h.manager.active())
    assert held is (rule.op in (">=", "<=")), rule_id


@pytest.mark.parametrize("rule_id", sorted(SEED_TABLE))
def test_unknown_values_never_fire(rule_id: str) -> None:
    rule = default_rules()[rule_id]
    h = Harness(only(rule_id))
    t = 0.0
    while t <= max(rule.for_s, STEP_S) * 2:
        assert h.at(t, h.one(rule.metric, None)) == []
        t += 60
    assert h.manager.pending() == []
    assert h.manager.active() == []
    assert h.notifier.heard == []


def test_an_unknown_value_holds_a_pending_alert() -> None:
    """Too little traffic to judge changes nothing: the pending alert keeps its start."""
    h = Harness(only("latency_p95_critical"))
    slow = h.one("generation_p95_s", 2.5)
    h.at(0, slow)
    first = h.manager.pending()[0].id
    assert h.at(150, h.one("generation_p95_s", None)) == []
    assert [a.id for a in h.manager.pending()] == [first]
    assert h.at(295, slow) == []
    assert [x.transition for x in h.at(300, slow)] == ["firing"]
    assert h.manager.active()[0].id == first
    assert h.notifier.kinds() == [("latency_p95_critical", "firing")]


def test_a_false_value_resets_a_pending_alert() -> None:
    h = Harness(only("error_rate_critical"))
    h.at(0, h.one("error_rate", 0.5))
    h.at(115, h.one("error_rate", 0.5))
    assert h.at(118, h.one("error_rate", 0.0)) == []  # never fired: nobody is told
    assert h.manager.pending() == []
    h.at(120, h.one("error_rate", 0.5))
    assert h.at(235, h.one("error_rate", 0.5)) == []
    assert [x.transition for x in h.at(240, h.one("error_rate", 0.5))] == ["firing"]
    assert h.manager.resolved() == []  # the dropped pending alert was never resolved


def test_an_unknown_value_keeps_a_firing_alert_firing() -> None:
    """An outage that also silences traffic must not resolve its own alert."""
    h = Harness(only("error_rate_critical"))
    h.at(0, h.one("error_rate", 1.0))
    assert [x.transition for x in h.at(120, h.one("error_rate", 1.0))] == ["firing"]
    for t in range(125, 600, 5):
        assert h.at(t, h.one("error_rate", None)) == []
    assert [a.status for a in h.manager.active()] == ["firing"]
    resolved = h.at(600, h.one("error_rate", 0.0))
    assert [x.transition for x in resolved] == ["resolved"]
    assert resolved[0].alert.value == 0.0  # the summary says what cleared it
    assert "0.0 %" in resolved[0].alert.summary


def test_a_firing_alert_resolves_only_once_its_condition_stayed_false_for_resolve_after_s():
    """A figure hovering at its threshold does not flap: one alert, one resolution."""
    h = Harness(only("fallback_rate_warning"), resolve_after_s=60)
    assert [x.transition for x in h.at(0, h.one("fallback_rate", 0.21))] == ["firing"]
    alert_id = h.manager.active()[0].id
    t = 5
    for value in [0.19, 0.21] * 30:  # ten minutes of 19 % / 21 %
        assert h.at(t, h.one("fallback_rate", value)) == []
        t += 5
    assert [a.id for a in h.manager.active()] == [alert_id]
    for step in range(12):  # false for 55 s: not yet
        assert h.at(t + 5 * step, h.one("fallback_rate", 0.1)) == []
    assert [x.transition for x in h.at(t + 60, h.one("fallback_rate", 0.1))] == ["resolved"]
    assert h.notifier.kinds() == [
        ("fallback_rate_warning", "firing"),
        ("fallback_rate_warning", "resolved"),
    ]


def test_close_resolves_every_active_alert_with_the_reason():
    h = Harness(only("fallback_rate_warning"))
    h.at(0, h.one("fallback_rate", 0.5))
    (closed,) = h.manager.close("the gateway stopped")
    assert closed.transition == "resolved"
    assert closed.alert.summary.endswith("(the gateway stopped)")
    assert h.manager.active() == []


def test_a_missing_metric_resolves_like_an_unknown_one() -> None:
    h = Harness(only("budget_critical"))
    h.at(0, h.one("budget_utilisation", 0.99))
    assert [x.transition for x in h.at(5, {})] == ["resolved"]


# -- per instance ----------------------------------------------------------------------------------


def test_budget_alerts_are_per_budget_and_period() -> None:
    h = Harness({r: default_rules()[r] for r in ("budget_critical", "budget_info")})

    def budgets(global_daily: float, global_monthly: float, team: float) -> dict[str, Any]:
        return {
            "budget_utilisation": [
                Reading(global_daily, GLOBAL_DAILY),
                Reading(global_monthly, GLOBAL_MONTHLY),
                Reading(team, TEAM_DAILY),
            ]
        }

    fired = h.at(0, budgets(0.96, 0.85, 0.5))
    assert sorted((x.alert.rule, x.alert.labels, x.transition) for x in fired) == [
        ("budget_critical", GLOBAL_DAILY, "firing"),
        ("budget_info", GLOBAL_DAILY, "firing"),
        ("budget_info", GLOBAL_MONTHLY, "firing"),
    ]
    assert len({x.alert.id for x in fired}) == 3
    # the team budget crosses 80 %: a fourth alert; the others are not raised again
    more = h.at(5, budgets(0.96, 0.85, 0.81))
    assert [(x.alert.rule, x.alert.labels, x.transition) for x in more] == [
        ("budget_info", TEAM_DAILY, "firing")
    ]
    # the monthly window drops: only its alert resolves
    less = h.at(10, budgets(0.96, 0.5, 0.81))
    assert [(x.alert.rule, x.alert.labels, x.transition) for x in less] == [
        ("budget_info", GLOBAL_MONTHLY, "resolved")
    ]
    assert sorted((a.rule, a.labels) for a in h.manager.active()) == [
        ("budget_critical", GLOBAL_DAILY),
        ("budget_info", GLOBAL_DAILY),
        ("budget_info", TEAM_DAILY),
    ]


def test_bedrock_alerts_are_per_route() -> None:
    h = Harness(only("bedrock_connection_failure"))

    def routes(a: float, b: float) -> dict[str, Any]:
        return {"bedrock_unavailable": [Reading(a, BEDROCK), Reading(b, BEDROCK_EU)]}

    assert [(x.alert.labels, x.transition) for x in h.at(0, routes(1, 0))] == [(BEDROCK, "firing")]
    assert [(x.alert.labels, x.transition) for x in h.at(5, routes(1, 1))] == [
        (BEDROCK_EU, "firing")
    ]
    assert [(x.alert.labels, x.transition) for x in h.at(10, routes(0, 1))] == [
        (BEDROCK, "resolved")
    ]
    assert [a.labels for a in h.manager.active()] == [BEDROCK_EU]


def test_pending_durations_are_per_instance() -> None:
    h = Harness(only("error_rate_critical"))
    a, b = (("route", "a"),), (("route", "b"),)
    h.at(0, {"error_rate": [Reading(0.5, a)]})
    h.at(60, {"error_rate": [Reading(0.5, a), Reading(0.5, b)]})
    fired = h.at(120, {"error_rate": [Reading(0.5, a), Reading(0.5, b)]})
    assert [x.alert.labels for x in fired] == [a]
    fired = h.at(180, {"error_rate": [Reading(0.5, a), Reading(0.5, b)]})
    assert [x.alert.labels for x in fired] == [b]


# -- de-duplication --------------------------------------------------------------------------------


def test_a_condition_that_stays_true_raises_one_alert() -> None:
    h = Harness()
    broken = {
        "error_rate": [Reading(0.5)],
        "fallback_rate": [Reading(0.9)],
    }
    for k in range(200):  # 1000 s
        h.at(k * STEP_S, broken)
    assert sorted(h.notifier.kinds()) == [
        ("error_rate_critical", "firing"),
        ("error_rate_warning", "firing"),
        ("fallback_rate_warning", "firing"),
    ]
    assert sorted(a.rule for a in h.manager.active()) == [
        "error_rate_critical",
        "error_rate_warning",
        "fallback_rate_warning",
    ]
    assert h.manager.evaluations == 200
    assert h.manager.last_evaluated_at == START_WALL + 199 * STEP_S


def test_a_condition_that_returns_after_resolving_is_a_new_alert() -> None:
    h = Harness(only("fallback_rate_warning"))
    first = h.at(0, h.one("fallback_rate", 0.5))[0].alert.id
    h.at(5, h.one("fallback_rate", 0.0))
    second = h.at(10, h.one("fallback_rate", 0.5))[0].alert.id
    assert second != first
    assert h.notifier.kinds() == [
        ("fallback_rate_warning", "firing"),
        ("fallback_rate_warning", "resolved"),
        ("fallback_rate_warning", "firing"),
    ]


# -- acknowledgement -------------------------------------------------------------------------------


def test_acknowledge_only_a_firing_alert_once() -> None:
    h = Harness(only("error_rate_critical"))
    broken = h.one("error_rate", 0.5)
    h.at(0, broken)
    pending = h.manager.pending()[0]
    with pytest.raises(RequestError) as refused:
        h.manager.acknowledge(pending.id, "alice")
    assert refused.type is RequestError
    assert str(refused.value) == (
        f"alert {pending.id} is pending, not firing: nothing to acknowledge yet"
    )
    assert pending.status == "pending"

    h.at(120, broken)
    h.clock.advance(7)
    acked = h.manager.acknowledge(pending.id, "alice", "looking into it")
    assert acked.id == pending.id
    assert (acked.status, acked.acknowledged_by, acked.acknowledge_note) == (
        "acknowledged",
        "alice",
        "looking into it",
    )
    assert acked.acknowledged_at == START_WALL + 127
    assert h.manager.active()[0].status == "acknowledged"

    with pytest.raises(RequestError) as twice:
        h.manager.acknowledge(pending.id, "bob")
    assert str(twice.value) == f"alert {pending.id} was already acknowledged by alice"
    assert h.manager.active()[0].acknowledged_by == "alice"

    with pytest.raises(NotFound) as unknown:
        h.manager.acknowledge("alert-000000-999999", "bob")
    assert str(unknown.value) == "no alert alert-000000-999999; GET /admin/alerts lists them"

    # acknowledged stays active while the condition holds, and is not notified again
    h.t = 127
    for t in range(130, 400, 5):
        assert h.at(t, broken) == []
    assert [a.status for a in h.manager.active()] == ["acknowledged"]
    resolved = h.at(400, h.one("error_rate", 0.0))
    assert [(x.transition, x.alert.acknowledged_by) for x in resolved] == [("resolved", "alice")]

    with pytest.raises(RequestError) as gone:
        h.manager.acknowledge(pending.id, "bob")
    assert gone.type is RequestError
    assert str(gone.value) == f"alert {pending.id} is already resolved"
    assert h.notifier.kinds() == [
        ("error_rate_critical", "firing"),
        ("error_rate_critical", "acknowledged"),
        ("error_rate_critical", "resolved"),
    ]


def test_the_notifier_and_listeners_hear_each_transition_once_as_a_snapshot() -> None:
    h = Harness(only("budget_critical"))
    listened = Recorder()
    h.manager.add_listener(listened.notify)

    def broken_listener(transition: Transition) -> None:
        raise RuntimeError("a listener's bug")

    h.manager.add_listener(broken_listener)  # must not stop alerting
    h.at(0, h.one("budget_utilisation", 0.97))
    alert_id = h.manager.active()[0].id
    h.at(5, h.one("budget_utilisation", 0.98))
    h.manager.acknowledge(alert_id, "carol")
    h.at(10, h.one("budget_utilisation", 0.99))
    h.at(15, h.one("budget_utilisation", 0.10))
    h.at(20, h.one("budget_utilisation", 0.10))

    for heard in (h.notifier.heard, listened.heard):
        assert [(t.alert.id, t.transition, t.alert.status) for t in heard] == [
            (alert_id, "firing", "firing"),
            (alert_id, "acknowledged", "acknowledged"),
            (alert_id, "resolved", "resolved"),
        ]
        assert [t.at for t in heard] == [START_WALL, START_WALL + 5, START_WALL + 15]
        # each is a copy as it was then: the firing one knows nothing of what came later
        assert heard[0].alert.acknowledged_by is None
        assert heard[0].alert.resolved_at is None
        assert [x for x, _ in heard[0].alert.history] == ["firing"]
        assert [x for x, _ in heard[2].alert.history] == ["firing", "acknowledged", "resolved"]
        assert heard[0].alert.value == 0.97
        assert heard[2].alert.value == 0.1  # the value that cleared it


# -- rules at run time -----------------------------------------------------------------------------


def test_update_rules_refuses_an_unknown_metric_naming_the_rule_and_applies_nothing() -> None:
    h = Harness()
    before = h.manager.rules
    with pytest.raises(RequestError) as refused:
        h.manager.update_rules(
            {
                "latency_p95_critical": {"threshold": 2.5},
                "my_rule": {"severity": "info", "metric": "p99", "op": ">", "threshold": 1},
            }
        )
    message = str(refused.value)
    assert message.startswith("invalid alert rules: my_rule: ")
    assert "unknown metric 'p99'" in message
    assert "latency_p95_critical" not in message
    assert refused.value.param == "rules"
    assert h.manager.rules == before
    assert h.manager.rules["latency_p95_critical"].threshold == 2.0
    assert "my_rule" not in h.manager.rules


def test_update_rules_refuses_a_bad_op_and_names_every_bad_rule() -> None:
    h = Harness()
    before = h.manager.rules
    with pytest.raises(RequestError) as refused:
        h.manager.update_rules(
            {
                "error_rate_warning": {"op": "!="},
                "budget_info": {"threshold": 0.7},
                "fallback_rate_warning": {"treshold": 0.3},
            }
        )
    message = str(refused.value)
    assert message.startswith("invalid alert rules: error_rate_warning: ")
    assert "; fallback_rate_warning: " in message
    assert "budget_info" not in message
    assert "\n" not in message
    assert h.manager.rules == before


def test_a_non_finite_threshold_is_refused() -> None:
    """A NaN threshold would make a rule that can never fire (every comparison with NaN is
    false), silently switching the alert off: it is refused, like infinity."""
    h = Harness()
    with pytest.raises(RequestError):
        h.manager.update_rules({"latency_p95_critical": {"threshold": math.nan}})
    assert h.manager.rules["latency_p95_critical"].threshold == 2.0


def test_a_threshold_change_takes_effect_at_the_next_evaluation() -> None:
    h = Harness(only("fallback_rate_warning"))
    assert h.at(0, h.one("fallback_rate", 0.15)) == []
    new = h.manager.update_rules({"fallback_rate_warning": {"threshold": 0.10}})
    assert new["fallback_rate_warning"].threshold == 0.10
    assert new["fallback_rate_warning"].severity == "warning"  # merged over the rule
    fired = h.at(5, h.one("fallback_rate", 0.15))
    assert [x.transition for x in fired] == ["firing"]
    h.manager.update_rules({"fallback_rate_warning": {"threshold": 0.20}})
    assert [x.transition for x in h.at(10, h.one("fallback_rate", 0.15))] == ["resolved"]


def test_a_threshold_change_updates_the_active_alerts_threshold() -> None:
    """An active alert takes a rule's new threshold at the next evaluation, in its summary and
    its threshold alike (so GET /admin/alerts and the notices agree)."""
    h = Harness(only("latency_p95_critical"))
    h.at(0, h.one("generation_p95_s", 3.0))
    h.at(300, h.one("generation_p95_s", 3.0))
    h.manager.update_rules({"latency_p95_critical": {"threshold": 2.5}})
    h.at(305, h.one("generation_p95_s", 3.0))
    alert = h.manager.active()[0]
    assert alert.summary == "generation p95: 3.00 s > 2.50 s for 5 min"
    assert alert.threshold == 2.5


def test_a_new_rule_can_be_added_and_needs_every_field() -> None:
    h = Harness(only("fallback_rate_warning"))
    with pytest.raises(RequestError) as refused:
        h.manager.update_rules({"p95_page": {"threshold": 1.0}})
    assert str(refused.value).startswith("invalid alert rules: p95_page: ")
    h.manager.update_rules(
        {
            "p95_page": {
                "severity": "critical",
                "metric": "cached_p95_s",
                "op": ">",
                "threshold": 0.3,
                "for_s": 60,
            }
        }
    )
    h.at(0, h.one("cached_p95_s", 0.5))
    assert h.at(55, h.one("cached_p95_s", 0.5)) == []
    assert [x.alert.rule for x in h.at(60, h.one("cached_p95_s", 0.5))] == ["p95_page"]


def test_a_disabled_rule_resolves_its_active_alert_and_drops_its_pending_one() -> None:
    h = Harness({r: default_rules()[r] for r in ("error_rate_critical", "error_rate_warning")})
    broken = h.one("error_rate", 0.5)
    h.at(0, broken)
    h.at(120, broken)
    assert statuses(h.manager) == {"error_rate_critical": "firing", "error_rate_warning": "pending"}
    h.manager.update_rules(
        {"error_rate_critical": {"enabled": False}, "error_rate_warning": {"enabled": False}}
    )
    out = h.at(125, broken)
    assert [(x.alert.rule, x.transition) for x in out] == [("error_rate_critical", "resolved")]
    assert statuses(h.manager) == {}
    assert list(h.manager.firing_rules()) == []
    for t in range(130, 700, 5):
        assert h.at(t, broken) == []
    h.manager.update_rules({"error_rate_critical": {"enabled": True}})
    h.at(700, broken)
    assert statuses(h.manager) == {"error_rate_critical": "pending"}  # counts from now


def test_firing_rules_is_the_alerts_gauge() -> None:
    h = Harness()
    assert sorted(h.manager.firing_rules()) == sorted(
        (rid, row[0], False) for rid, row in SEED_TABLE.items()
    )
    h.at(0, {"fallback_rate": [Reading(0.5)], "error_rate": [Reading(0.5)]})
    h.manager.acknowledge(h.manager.active()[0].id, "dave")  # acknowledged is still active
    gauge = {rid: (severity, active) for rid, severity, active in h.manager.firing_rules()}
    assert gauge["fallback_rate_warning"] == ("warning", True)
    assert gauge["error_rate_critical"] == ("critical", False)  # pending only
    assert sum(active for _, active in gauge.values()) == 1
    h.manager.update_rules({"budget_info": {"enabled": False}})
    # a disabled rule still reads 0 (its series must not keep its last value)
    assert ("budget_info", "info", False) in set(h.manager.firing_rules())
    # so does a rule's old severity once it moves to another
    h.manager.update_rules({"fallback_rate_warning": {"severity": "critical"}})
    h.at(5, {"fallback_rate": [Reading(0.5)], "error_rate": [Reading(0.5)]})
    series = set(h.manager.firing_rules())
    assert ("fallback_rate_warning", "critical", True) in series
    assert ("fallback_rate_warning", "warning", False) in series


def test_active_lists_most_severe_then_oldest_first() -> None:
    h = Harness()
    h.at(0, {"routing_efficiency": [Reading(0.5)]})
    h.at(5, {"routing_efficiency": [Reading(0.5)], "fallback_rate": [Reading(0.5)]})
    h.at(
        10,
        {
            "routing_efficiency": [Reading(0.5)],
            "fallback_rate": [Reading(0.5)],
            "bedrock_unavailable": [Reading(1.0, BEDROCK)],
        },
    )
    assert [a.rule for a in h.manager.active()] == [
        "bedrock_connection_failure",
        "fallback_rate_warning",
        "routing_efficiency_info",
    ]


def test_resolved_lists_newest_first_and_is_bounded() -> None:
    clock = FakeClock(start=START_MONO, wall_start=START_WALL)
    manager = AlertManager(only("fallback_rate_warning"), clock, keep_resolved=3, resolve_after_s=0)
    ids = []
    for _ in range(5):
        manager.evaluate({"fallback_rate": [Reading(0.5)]})
        ids.append(manager.active()[0].id)
        clock.advance(5)
        manager.evaluate({"fallback_rate": [Reading(0.0)]})
        clock.advance(5)
    assert [a.id for a in manager.resolved()] == ids[::-1][:3]
    assert [a.id for a in manager.resolved(limit=2)] == ids[::-1][:2]
    assert len(set(ids)) == 5


# -- what an alert says ----------------------------------------------------------------------------


def test_summary_of_a_latency_alert() -> None:
    h = Harness(only("latency_p95_critical"))
    h.at(0, h.one("generation_p95_s", 2.5))
    alert = h.manager.pending()[0]
    assert alert.summary == "generation p95: 2.50 s > 2.00 s for 5 min"
    assert alert.description == "P95 latency > 2.0 s for 5+ minutes"
    assert (alert.severity, alert.threshold, alert.value) == ("critical", 2.0, 2.5)


def test_summary_of_a_budget_alert_names_the_budget() -> None:
    h = Harness(only("budget_critical"))
    h.at(0, h.one("budget_utilisation", 0.9612))
    alert = h.manager.active()[0]
    assert alert.summary == ("budget (budget=global, period=daily): 96.1 % >= 95.0 %")
    assert alert.as_dict()["labels"] == {"budget": "global", "period": "daily"}


def test_summary_of_a_cache_alert_follows_the_value() -> None:
    h = Harness(only("cache_hit_rate_info"))
    h.at(0, h.one("cache_hit_rate", 0.5))
    h.at(60, h.one("cache_hit_rate", 0.625))
    assert h.manager.pending()[0].summary == ("cache hit rate: 62.5 % < 80.0 % for 30 min")


@pytest.mark.parametrize("rule_id", sorted(SEED_TABLE))
def test_every_summary_names_its_metric_readably(rule_id: str) -> None:
    """Every summary names its metric whole (its parentheses balanced) and says a Direct
    Bedrock failure in words, not as a comparison of 'down' with 'down'."""
    rule = default_rules()[rule_id]
    h = Harness(only(rule_id))
    h.at(0, h.one(rule.metric, BAD_GOOD[rule_id][0]))
    alert = [*h.manager.pending(), *h.manager.active()][0]
    depth = 0
    for char in alert.summary:
        depth += {"(": 1, ")": -1}.get(char, 0)
        assert depth >= 0, alert.summary
    assert depth == 0, alert.summary
    assert "down >= down" not in alert.summary
