"""The observability loop: what is measured now, turned into gauges and alert evaluations.

Every second the loop sets the state gauges (breakers, in-flight attempts, queues, budgets,
firing alerts, the health score); every `alerts.evaluate_every_s` it builds the *readings* the
alert rules watch and hands them to the `AlertManager`:

- the traffic figures over the condition window (`alerts.condition_window_s`, 60 s;
  `TrafficWindow` → `SloSnapshot`): generation and cached p95, error rate, cache hit rate,
  fallback rate, routing efficiency — each unknown while its sample is below
  `slo.min_requests`. A rule's duration is then how long the condition held at every
  evaluation: "p95 > 2 s for 5 minutes" is five minutes of one-minute p95s above 2 s;
- `budget_utilisation`, per budget and period (the cost ledger);
- `bedrock_unavailable`, per Direct Bedrock route: 1 while support mode is on and the route is
  unavailable (not ready, its breaker open, or its probes failing), else 0.

`AlertNotifier` turns the manager's transitions into notices for the notification dispatcher.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from hybridroute._clock import Clock
from hybridroute.config.observability import SloConfig
from hybridroute.economics import CostLedger
from hybridroute.monitoring import HybridHealthMonitor
from hybridroute.notify import AlertNotice
from hybridroute.notify.fleet import Notices
from hybridroute.observability.alerts import AlertManager, Reading, Readings, Transition
from hybridroute.observability.metrics import GatewayMetrics
from hybridroute.observability.slo import TRAFFIC_METRICS, SloSnapshot, slo_snapshot
from hybridroute.observability.traffic import TrafficWindow
from hybridroute.resilience.admission import AdmissionControl
from hybridroute.resilience.health import HealthBoard
from hybridroute.signals import HealthStatus
from hybridroute.types import RouteId, RouteKind

__all__ = ["AlertNotifier", "ObservabilityLoop"]

log = logging.getLogger("hybridroute.observability")

_SAMPLE_EVERY_S = 1.0


class AlertNotifier:
    """Hands alert transitions to the notification dispatcher as notices."""

    def __init__(self, dispatcher: Notices, gateway: str = "hybridroute") -> None:
        self._dispatcher = dispatcher
        self._gateway = gateway

    def notify(self, transition: Transition) -> None:
        alert = transition.alert
        self._dispatcher.notify(
            AlertNotice(
                alert_id=alert.id,
                rule=alert.rule,
                severity=alert.severity,
                transition=transition.transition,
                summary=alert.summary,
                description=alert.description,
                labels=dict(alert.labels),
                value=alert.value,
                threshold=alert.threshold,
                started_at=alert.started_at or transition.at,
                at=transition.at,
                acknowledged_by=alert.acknowledged_by,
                gateway=self._gateway,
            )
        )


class ObservabilityLoop:
    """Samples gauges and evaluates alert rules on a schedule."""

    def __init__(  # noqa: PLR0913 - everything the loop reads, wired by the runtime
        self,
        *,
        clock: Clock,
        traffic: TrafficWindow,
        slo: SloConfig,
        metrics: GatewayMetrics,
        alerts: AlertManager,
        ledger: CostLedger,
        health: HealthBoard,
        monitor: HybridHealthMonitor,
        admission: Mapping[RouteId, AdmissionControl],
        route_kinds: Mapping[RouteId, RouteKind],
        support_mode: Callable[[], bool],
        evaluate_every_s: float,
        condition_window_s: float = 60.0,
        now: Callable[[], float] | None = None,
        alerting: bool = True,
    ) -> None:
        self._clock = clock
        self._traffic = traffic
        self.slo_config = slo  # replaceable while running (PUT /admin/config/slo-thresholds)
        self._metrics = metrics
        self._alerts = alerts
        self._ledger = ledger
        self._health = health
        self._monitor = monitor
        self._admission = dict(admission)
        self._bedrock = [r for r, kind in route_kinds.items() if kind is RouteKind.BEDROCK]
        self._support_mode = support_mode
        self._evaluate_every_s = evaluate_every_s
        self._condition_window_s = condition_window_s
        self._now = now or clock.now  # the time request events are stamped with
        self.alerting = alerting

    # -- what is measured now --------------------------------------------------------------------

    def slo(self, window_s: float | None = None) -> SloSnapshot:
        """The SLO figures over `window_s` (the configured SLO window by default), now."""
        config = self.slo_config
        totals = self._traffic.totals(window_s or config.window_s, self._now())
        return slo_snapshot(totals, config)

    def readings(self) -> Readings:
        """Every value an alert rule can watch, now: traffic figures over the condition
        window (a rule's duration then says how long the condition held)."""
        snapshot = self.slo(self._condition_window_s)
        readings: dict[str, list[Reading]] = {
            metric: [Reading(snapshot.value(metric))] for metric in TRAFFIC_METRICS
        }
        readings["budget_utilisation"] = [
            Reading(
                b.utilisation,
                (("budget", b.budget), ("period", b.period.value), ("window", b.window)),
            )
            for b in self._ledger.snapshot().budgets
        ]
        support = self._support_mode()
        readings["bedrock_unavailable"] = [
            Reading(
                1.0
                if support and self._health.availability(route).status is HealthStatus.UNHEALTHY
                else 0.0,
                (("route", route),),
            )
            for route in self._bedrock
        ]
        return readings

    def evaluate(self) -> None:
        """Evaluate the alert rules once (the loop does this on its schedule)."""
        self._alerts.evaluate(self.readings())

    def sample(self) -> None:
        """Set the state gauges once."""
        snapshots = self._health.snapshots()
        self._metrics.sample(
            breakers={route: str(s.state) for route, s in snapshots.items()},
            in_flight={route: a.in_flight for route, a in self._admission.items()},
            queued={route: a.queued for route, a in self._admission.items()},
            budgets=[
                (b.budget, b.period.value, b.utilisation) for b in self._ledger.snapshot().budgets
            ],
            alerts=self._alerts.firing_rules(),
            health_score=self._monitor.report().score,
        )

    # -- the schedule ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Sample every second and evaluate alerts on their schedule, until cancelled."""
        next_evaluation = self._clock.monotonic()
        while True:
            try:
                self.sample()
                if self.alerting and self._clock.monotonic() >= next_evaluation:
                    next_evaluation = self._clock.monotonic() + self._evaluate_every_s
                    self.evaluate()
            except Exception:  # one bad sample must not end metrics and alerting for good
                log.exception("observability loop failed; trying again in a second")
            await self._clock.sleep(_SAMPLE_EVERY_S)
