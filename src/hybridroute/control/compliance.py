"""GDPR in practice: what the compliance endpoints report, erasure, and retention purges.

Everything reported is measured, not asserted: redaction counts come from the redactor that
cleans every audit record and log line; residency figures from the requests themselves (how many
were held to each region set, how many were refused because no route qualified, and — the
figure that must stay 0 — how many were served by a route outside their set); retention from
the purges actually run.

- `erase(subject)`: forget the subject's pseudonym salt (see `compliance.subjects`), drop the
  cache entries made for the subject, and audit the erasure under the old pseudonym. The audit
  chain is untouched and still verifies; its records about the subject become unlinkable.
- `purge()`: delete ledger and report records older than `storage.retention_days` and audit
  records older than `audit.retention_days` (the chain then verifies from an anchor). Runs every
  six hours and on demand.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import orjson

from hybridroute._clock import Clock
from hybridroute.audit.chain import IntegrityReport
from hybridroute.audit.trail import AuditTrail
from hybridroute.compliance.redaction import Redactor
from hybridroute.compliance.subjects import SubjectRegistry
from hybridroute.config.schema import GatewayConfig
from hybridroute.errors import RequestError
from hybridroute.gateway.cache import ResponseCache
from hybridroute.observability.events import Outcome, RequestEvent
from hybridroute.routing.matrix import Topology
from hybridroute.storage import RecordStore, day_of

__all__ = ["LAST_PURGE_KEY", "ComplianceService"]

log = logging.getLogger("hybridroute.compliance")

LAST_PURGE_KEY = "compliance:last_purge"
_PURGE_EVERY_S = 6 * 3600.0
_DAY_S = 86_400.0
_VERIFY_EVERY_S = 60.0


class ComplianceService:
    """Residency accounting, erasure, retention and the compliance reports."""

    def __init__(  # noqa: PLR0913 - the parts GDPR compliance is made of
        self,
        *,
        config: GatewayConfig,
        topology: Topology,
        redactor: Redactor,
        subjects: SubjectRegistry,
        audit: AuditTrail,
        cache: ResponseCache,
        store: RecordStore,
        clock: Clock,
    ) -> None:
        self._config = config
        self._topology = topology
        self.redactor = redactor
        self.subjects = subjects
        self._audit = audit
        self._cache = cache
        self._store = store
        self._clock = clock
        self.constrained: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.served_by_region: Counter[str] = Counter()
        self.last_purge: dict[str, Any] | None = None
        self.last_erasure_at: float | None = None
        self._verified: tuple[IntegrityReport, float] | None = None

    # -- residency accounting (an observer of every finished request) --------------------------

    def observe(self, event: RequestEvent) -> None:
        region_set = event.residency
        if region_set is None:
            return
        self.constrained[region_set] += 1
        if event.error_code == "residency_unsatisfiable":
            self.refused[region_set] += 1
            return
        if event.outcome in (Outcome.SERVED, Outcome.CACHED) and event.route is not None:
            region = self._topology.regions.get(event.route)
            self.served_by_region[region or "none"] += 1
            if region not in self._topology.region_sets.get(region_set, frozenset()):
                # Cannot happen while the policy holds; counted so the report can prove it.
                self.violations[region_set] += 1
                log.error(
                    "residency violation: a %s request was served by %s (%s)",
                    region_set,
                    event.route,
                    region,
                )

    # -- erasure ---------------------------------------------------------------------------------

    async def erase(self, subject: str, *, actor: str, reason: str) -> dict[str, Any]:
        if not subject or len(subject) > 256:
            raise RequestError(
                "'subject' must be the data subject's identifier as the requests named it "
                "(the OpenAI 'user' field or X-Data-Subject), at most 256 characters",
                param="subject",
            )
        pseudonym = await self.subjects.erase(subject)
        dropped = 0
        if pseudonym is not None:
            dropped = await self._cache.invalidate_subject(pseudonym)
        self.last_erasure_at = self._clock.now()
        result = {
            "erased": pseudonym is not None,
            "pseudonym": pseudonym,
            "cache_entries_dropped": dropped,
            "audit_chain": "unchanged; records under this pseudonym can no longer be linked to "
            "the subject",
        }
        await self._audit.record(
            "erasure",
            actor,
            {"reason": reason, **{k: v for k, v in result.items() if k != "audit_chain"}},
            subject=pseudonym,
        )
        return result

    # -- retention -------------------------------------------------------------------------------

    async def purge(self, *, actor: str = "gateway") -> dict[str, Any]:
        """Delete what is past its retention; what was deleted."""
        now = self._clock.now()
        storage_days = self._config.storage.retention_days
        audit_days = self._config.audit.retention_days
        before_day = day_of(now - storage_days * _DAY_S)
        records = await self._store.purge(before_day)
        audit = await self._audit.purge(now - audit_days * _DAY_S)
        summary = {
            "at": now,
            "by": actor,
            "records_before_day": before_day,
            "records_removed": records,
            "audit_before": now - audit_days * _DAY_S,
            "audit_records_removed": audit,
        }
        self.last_purge = summary
        await self._store.put_state(LAST_PURGE_KEY, orjson.dumps(summary).decode())
        await self._audit.record("retention_purge", actor, summary)
        return summary

    async def load(self) -> None:
        raw = await self._store.get_state(LAST_PURGE_KEY)
        if raw is not None:
            self.last_purge = orjson.loads(raw)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(_PURGE_EVERY_S)
            try:
                await self.purge()
            except Exception:
                log.exception("the retention purge failed")

    # -- reports ---------------------------------------------------------------------------------

    async def _integrity(self) -> tuple[IntegrityReport, float]:
        """The chain's verification, redone at most once a minute (it reads every record)."""
        now = self._clock.monotonic()
        cached = self._verified
        if cached is None or now - cached[1] >= _VERIFY_EVERY_S:
            cached = (await self._audit.verify(), now)
            self._verified = cached
        return cached[0], self._clock.now() - (now - cached[1])

    async def gdpr_status(self) -> dict[str, Any]:
        integrity, verified_at = await self._integrity()
        return {
            "redaction": {
                "enabled": self.redactor.enabled,
                "applies_to": ["audit records", "logs"],
                "redacted": self.redactor.counts(),
                "redacted_total": self.redactor.redacted_total,
            },
            "pseudonymisation": {
                "data_subjects": "pseudonymised before any record is written",
                "erasures": self.subjects.erasures,
                "last_erasure_at": self.last_erasure_at,
            },
            "residency": self._residency_summary(),
            "retention": {
                "records_days": self._config.storage.retention_days,
                "audit_days": self._config.audit.retention_days,
                "last_purge": self.last_purge,
            },
            "audit_trail": {
                "ok": integrity.ok,
                "records": integrity.checked,
                "keyed": integrity.keyed,
                "problems": len(integrity.problems),
                "verified_at": verified_at,
            },
            "compliant": integrity.ok and not self.violations and self.redactor.enabled,
        }

    def _residency_summary(self) -> dict[str, Any]:
        return {
            "enforced": True,
            "constrained_requests": dict(self.constrained),
            "refused": dict(self.refused),
            "violations": sum(self.violations.values()),
        }

    def data_residency(self) -> dict[str, Any]:
        topology = self._topology
        sets = topology.region_sets
        routes = {
            route: {
                "region": region,
                "kind": topology.kinds[route].value,
                "region_sets": sorted(name for name, regions in sets.items() if region in regions),
            }
            for route, region in sorted(topology.regions.items())
        }
        return {
            "region_sets": {name: sorted(regions) for name, regions in sorted(sets.items())},
            "routes": routes,
            "qualifying_routes": {
                name: sorted(r for r, region in topology.regions.items() if region in regions)
                for name, regions in sorted(sets.items())
            },
            "tenant_policies": dict(self._config.compliance.tenant_residency),
            "requests": self._residency_summary(),
            "served_by_region": dict(self.served_by_region),
            "violations_by_set": dict(self.violations),
            "fail_closed": True,
        }
