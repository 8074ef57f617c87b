"""The deployment report: what was checked, how long each check took, what failed and why —
written as Markdown in the original deployment report's layout, and as JSON.

Nothing in it is filled in by hand: every line of "Smoke Test Results" and "Integration Test
Results" is a check that ran, with its measured duration, and "Errors" holds each failed check's
precise error (a failed check's line names it, the error says what was expected and what was
found).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CheckResult", "DeploymentReport"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: its name (as the report lists it), its kind, whether it passed, how long it
    took, and the error when it failed."""

    name: str
    kind: str  # smoke | integration | gate
    passed: bool
    duration_ms: float
    error: str | None = None
    detail: str = ""

    def line(self) -> str:
        return f"- {self.name}: {'PASS' if self.passed else 'FAIL'} ({self.duration_ms:.0f}ms)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "passed": self.passed,
            "duration_ms": round(self.duration_ms, 1),
            "error": self.error,
            "detail": self.detail,
        }


@dataclass(slots=True)
class DeploymentReport:
    environment: str
    started_at: float
    components: list[str]
    flags: dict[str, bool]
    results: list[CheckResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    config_source: str = ""
    duration_s: float = 0.0

    @property
    def deployment_id(self) -> str:
        return f"hybrid-routing-{self.environment[:4]}-{int(self.started_at * 1000)}"

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def status(self) -> str:
        return "PASSED" if self.passed else "FAILED"

    @property
    def errors(self) -> list[str]:
        return [r.error or f"{r.name} failed" for r in self.results if not r.passed]

    def _timestamp(self) -> str:
        moment = dt.datetime.fromtimestamp(self.started_at, dt.UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _lines(self, kind: str) -> list[str]:
        return [r.line() for r in self.results if r.kind == kind] or ["None"]

    def markdown(self) -> str:
        errors = [f"- {e}" for e in self.errors] or ["None"]
        warnings = [f"- {w}" for w in self.warnings] or ["None"]
        flags = [f"- {name}={'true' if on else 'false'}" for name, on in self.flags.items()]
        env = self.environment
        next_env = {"development": "staging", "staging": "production"}.get(env)
        return "\n".join(
            [
                "# Hybrid Routing Deployment Documentation",
                "",
                "## Deployment Information",
                f"- **Deployment ID**: {self.deployment_id}",
                f"- **Environment**: {env}",
                f"- **Timestamp**: {self._timestamp()}",
                f"- **Status**: {self.status}",
                f"- **Configuration**: {self.config_source}",
                f"- **Duration**: {self.duration_s:.2f} s",
                "",
                "## Components Deployed",
                *[f"- {c}" for c in self.components],
                "",
                "## Feature Flags Enabled",
                *flags,
                "",
                "## Smoke Test Results",
                *self._lines("smoke"),
                "",
                "## Integration Test Results",
                *self._lines("integration"),
                "",
                f"## Environment Gates ({env})",
                *self._lines("gate"),
                "",
                "## Errors",
                *errors,
                "",
                "## Warnings",
                *warnings,
                "",
                "## Deployment Process",
                "",
                "### Rollback Procedure",
                "If deployment fails:",
                "1. Disable all hybrid routing feature flags: `hybridroute rollback --level 1`",
                "2. Revert to MCP-only routing and check it serves: "
                "`hybridroute rollback --level 2`",
                "3. Check component health and logs: `hybridroute health`, "
                "`GET /admin/health/circuit-breakers`",
                "4. Address the errors above and run `hybridroute deploy check` again",
                "",
                "### Monitoring",
                "- Watch the dashboard at /dashboard and `hybridroute health`",
                "- Check /health and /ready for both routing paths",
                "- Review the audit trail for routing decisions: `hybridroute audit verify`, "
                "`GET /admin/audit/export`",
                "",
                "### Next Steps",
                "1. Monitor the deployment: `hybridroute report daily`",
                f"2. Prepare the {next_env} deployment: `hybridroute deploy check --env {next_env}`"
                if next_env
                else "2. Keep the runbook at hand: docs/operations.md",
                "",
            ]
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "environment": self.environment,
            "timestamp": self._timestamp(),
            "status": self.status,
            "configuration": self.config_source,
            "duration_s": round(self.duration_s, 3),
            "components": self.components,
            "flags": self.flags,
            "results": [r.as_dict() for r in self.results],
            "errors": self.errors,
            "warnings": self.warnings,
        }
