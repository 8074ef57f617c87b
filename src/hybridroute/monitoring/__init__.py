"""The Hybrid Health Monitor: what happened to requests and routes over a rolling window, how
healthy that is as one score, and what an operator should change."""

from hybridroute.monitoring.monitor import HybridHealthMonitor
from hybridroute.monitoring.records import RequestOutcome, RequestRecord
from hybridroute.monitoring.report import HealthReport, Recommendation, RouteReport

__all__ = [
    "HealthReport",
    "HybridHealthMonitor",
    "Recommendation",
    "RequestOutcome",
    "RequestRecord",
    "RouteReport",
]
