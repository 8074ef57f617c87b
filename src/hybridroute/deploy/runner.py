"""Running a deployment check: build and start a runtime from the configuration (its routes
connect to the real upstreams; its records go to a scratch in-memory store, so a check writes
nothing into the deployment's database), run the smoke tests, the integration tests and the
environment's gates, each timed, and return the report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

from hybridroute.config.schema import GatewayConfig
from hybridroute.deploy import integration, smoke
from hybridroute.deploy.gates import gates_for
from hybridroute.deploy.report import CheckResult, DeploymentReport
from hybridroute.deploy.smoke import CheckFailed
from hybridroute.runtime import Runtime
from hybridroute.signals import HealthStatus
from hybridroute.storage import MemoryLedgerStore

__all__ = ["COMPONENTS", "run_deploy_check"]

COMPONENTS = [
    "BedrockSupportManager",
    "IntelligentRouter",
    "DirectBedrockClient",
    "MCPRouter",
    "HybridHealthMonitor",
]
_CONNECT_WAIT_S = 10.0
_SCRATCH_LOGGERS = ("hybridroute.alerts", "hybridroute.control", "hybridroute.audit")
_ROUND_TRIPS = ("DirectBedrockClient.direct_connection", "MCPRouter.mcp_connection")


async def _timed(kind: str, name: str, work: Callable[[], Awaitable[str]]) -> CheckResult:
    began = time.perf_counter()
    try:
        detail = await work()
    except CheckFailed as failed:
        return CheckResult(name, kind, False, (time.perf_counter() - began) * 1000, str(failed))
    except Exception as exc:  # noqa: BLE001 - a check that breaks is a failed check
        error = f"{name} raised {type(exc).__name__}: {exc}"
        return CheckResult(name, kind, False, (time.perf_counter() - began) * 1000, error)
    return CheckResult(name, kind, True, (time.perf_counter() - began) * 1000, None, detail)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The integration tests' scratch flag changes and alerts are not the deployment's: keep
    them out of the log."""
    loggers = [logging.getLogger(name) for name in _SCRATCH_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


async def _connected(runtime: Runtime) -> None:
    """Wait (a little) for the routes' connections, so a slow MCP handshake is not a failure."""
    deadline = time.monotonic() + _CONNECT_WAIT_S
    while time.monotonic() < deadline:
        if all(r.readiness().status is HealthStatus.HEALTHY for r in runtime.routes.values()):
            return
        await asyncio.sleep(0.05)


async def run_deploy_check(
    config: GatewayConfig, environment: str, *, source: str
) -> DeploymentReport:
    report = DeploymentReport(
        environment=environment,
        started_at=time.time(),
        components=list(COMPONENTS),
        flags=dict(config.flags.model_dump()),
        config_source=source,
    )
    began = time.perf_counter()
    runtime = Runtime(config, ledger_store=MemoryLedgerStore())
    try:
        await runtime.start()
    except Exception as exc:  # noqa: BLE001 - reported as the failed first check
        report.results.append(
            CheckResult("Runtime.start", "smoke", False, 0.0, f"the gateway did not start: {exc}")
        )
        report.duration_s = time.perf_counter() - began
        return report
    try:
        await _connected(runtime)
        flags = runtime.flags.current()

        async def routing() -> str:
            return smoke.routing_decisions(runtime, flags)

        async def support() -> str:
            return smoke.support_mode(runtime, flags)

        checks: list[tuple[str, str, Callable[[], Awaitable[str]]]] = [
            ("smoke", "IntelligentRouter.routing_decision_basic", routing),
            (
                "smoke",
                "DirectBedrockClient.direct_connection",
                lambda: smoke.bedrock_connection(runtime),
            ),
            ("smoke", "MCPRouter.mcp_connection", lambda: smoke.mcp_connection(runtime)),
            (
                "smoke",
                "HybridHealthMonitor.health_check_basic",
                lambda: smoke.health_check(runtime),
            ),
            ("smoke", "BedrockSupportManager.support_mode_basic", support),
            ("integration", "feature_flags_system", lambda: integration.feature_flags(runtime)),
            ("integration", "audit_trail_system", lambda: integration.audit_trail(runtime)),
            ("integration", "monitoring_system", lambda: integration.monitoring(runtime)),
            ("integration", "compliance_system", lambda: integration.compliance(runtime)),
            ("integration", "circuit_breaker_system", lambda: integration.circuit_breaker(runtime)),
        ]
        for kind, name, work in checks:
            with _quiet() if kind == "integration" else contextlib.nullcontext():
                report.results.append(await _timed(kind, name, work))
        round_trips = [r.duration_ms for r in report.results if r.passed and r.name in _ROUND_TRIPS]
        enforced, advised = gates_for(environment, config, max(round_trips, default=None))
        for gate in enforced:
            error = None if gate.passed else f"{gate.name}: {gate.problem}"
            report.results.append(CheckResult(gate.name, "gate", gate.passed, 0.0, error))
        report.warnings.extend(f"{g.name}: {g.problem}" for g in advised if not g.passed)
    finally:
        await runtime.aclose()
    report.duration_s = time.perf_counter() - began
    return report
