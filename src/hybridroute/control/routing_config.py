"""Versioned routing configuration: the matrix as operators change it while the gateway runs.

The routing-rules document is `{"matrix": {operation type: row}}` (the rows of the config
file's `matrix:` section, in JSON). Every applied document is a numbered version in the control
store, with its author, time, comment and the diff from the version before; rolling back applies
an old version's document again, as a new version. Applying is a hot swap: decisions already
made keep their rule, the next decision reads the new matrix, nothing in flight is dropped.

Validation is the same as at load (each row's fields, the routes it names exist, budgets fit
the routes); a document must keep the configured operation types (adding or removing one is a
configuration-file change and a restart, because prices, caching and metrics are built per
operation type).

At start: the first start stores the config file's matrix as version 1. Later starts apply the
newest stored version — unless the config file's matrix changed since the version it last
produced, in which case the file's matrix becomes a new version (the file is the newer intent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from hybridroute._clock import Clock
from hybridroute.audit.chain import canonical_json
from hybridroute.audit.trail import AuditTrail
from hybridroute.config.checks import check_matrix
from hybridroute.config.schema import GatewayConfig, RoutingRuleConfig
from hybridroute.errors import Conflict, NotFound, RequestError
from hybridroute.routing.matrix import RoutingMatrix
from hybridroute.storage.control import ConfigVersionRecord, ControlStore

__all__ = [
    "CONFIG_FILE_AUTHOR",
    "RoutingConfigService",
    "RoutingDocument",
    "matrix_diff",
    "version_summary",
]

log = logging.getLogger("hybridroute.control")

CONFIG_FILE_AUTHOR = "config-file"
_MAX_COMMENT = 2000


@dataclass(frozen=True, slots=True)
class RoutingDocument:
    """A validated routing-rules document."""

    matrix: dict[str, RoutingRuleConfig]

    def as_json(self) -> dict[str, Any]:
        return {
            "matrix": {
                op: row.model_dump(mode="json", exclude_none=False)
                for op, row in sorted(self.matrix.items())
            }
        }

    def canonical(self) -> str:
        return canonical_json(self.as_json()).decode()


def matrix_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Per operation type, the fields that changed (`{"field": [old, new]}`), plus rows added
    or removed."""
    changed: dict[str, dict[str, list[Any]]] = {}
    for op in sorted(set(old) & set(new)):
        fields = {
            name: [old[op].get(name), new[op].get(name)]
            for name in sorted(set(old[op]) | set(new[op]))
            if old[op].get(name) != new[op].get(name)
        }
        if fields:
            changed[op] = fields
    return {
        "changed": changed,
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
    }


class RoutingConfigService:
    """Validates, versions, applies and rolls back the routing matrix."""

    def __init__(
        self,
        config: GatewayConfig,
        store: ControlStore,
        audit: AuditTrail,
        clock: Clock,
        swap: Callable[[GatewayConfig, RoutingMatrix], None],
    ) -> None:
        self._base = config
        self._store = store
        self._audit = audit
        self._clock = clock
        self._swap = swap
        self.current: ConfigVersionRecord | None = None

    # -- validation ------------------------------------------------------------------------------

    def parse(self, body: object) -> RoutingDocument:
        """A routing-rules document from JSON, validated as at load; every problem listed."""
        example = '{"matrix": {"standard": {"priority": "medium", ...}, ...}}'
        if not isinstance(body, dict) or not isinstance(body.get("matrix"), dict):
            raise RequestError(f"send the routing rules as {example}", param="matrix")
        problems: list[str] = []
        rows: dict[str, RoutingRuleConfig] = {}
        for op, row in body["matrix"].items():
            try:
                rows[op] = RoutingRuleConfig.model_validate(row)
            except ValidationError as exc:
                problems += [
                    f"matrix.{op}.{'.'.join(str(p) for p in e['loc']) or '(row)'}: {e['msg']}"
                    for e in exc.errors()
                ]
        if not problems:
            problems += [
                f"{i.path}: {i.message}" + (f" ({i.hint})" if i.hint else "")
                for i in check_matrix(rows, self._base.routes)
            ]
            configured = set(self._base.matrix)
            if set(rows) != configured:
                missing = sorted(configured - set(rows))
                extra = sorted(set(rows) - configured)
                problems.append(
                    "matrix: the operation types must stay those configured "
                    f"({', '.join(sorted(configured))})"
                    + (f"; missing {', '.join(missing)}" if missing else "")
                    + (f"; not configured {', '.join(extra)}" if extra else "")
                    + " — adding or removing one is a config-file change and a restart"
                )
        if problems:
            raise RequestError(
                f"the routing rules are not valid ({len(problems)} problem"
                f"{'s' if len(problems) > 1 else ''}): " + "; ".join(problems),
                param="matrix",
            )
        return RoutingDocument(rows)

    def config_with(self, document: RoutingDocument) -> GatewayConfig:
        return self._base.model_copy(update={"matrix": document.matrix})

    # -- versions --------------------------------------------------------------------------------

    async def start(self) -> ConfigVersionRecord:
        """Pick the version to run at start (see the module docstring) and apply it."""
        versions = await self._store.config_versions()
        file_doc = RoutingDocument(dict(self._base.matrix))
        from_file = [v for v in versions if v.author == CONFIG_FILE_AUTHOR]
        if not versions or (from_file and from_file[-1].document != file_doc.canonical()):
            comment = "the configuration file" if not versions else "the configuration file changed"
            return await self._store_version(file_doc, CONFIG_FILE_AUTHOR, comment, versions)
        latest = versions[-1]
        self._apply(self.parse(orjson.loads(latest.document)), latest)
        return latest

    async def versions(self) -> list[ConfigVersionRecord]:
        return await self._store.config_versions()

    async def version(self, number: int) -> ConfigVersionRecord:
        for record in await self._store.config_versions():
            if record.version == number:
                return record
        raise NotFound(
            f"there is no routing configuration version {number}; "
            "GET /admin/config/routing-rules/versions lists them"
        )

    async def apply(
        self,
        document: RoutingDocument,
        *,
        author: str,
        comment: str,
        base_version: int | None = None,
    ) -> ConfigVersionRecord:
        """Store `document` as a new version and swap it in. `base_version`: the version the
        author edited; a different current version is a conflict (someone applied meanwhile)."""
        current = self.current
        if base_version is not None and current is not None and base_version != current.version:
            raise Conflict(
                f"the routing rules were edited from version {base_version}, but version "
                f"{current.version} is in force now (applied by {current.author}); fetch it, "
                "redo the edit and PUT again"
            )
        versions = await self._store.config_versions()
        return await self._store_version(document, author, comment[:_MAX_COMMENT], versions)

    async def rollback(self, number: int, *, author: str, comment: str) -> ConfigVersionRecord:
        """Apply an earlier version's document again (as a new version)."""
        old = await self.version(number)
        document = self.parse(orjson.loads(old.document))
        note = comment or f"rollback to version {number}"
        versions = await self._store.config_versions()
        record = await self._store_version(document, author, note, versions, rollback_of=number)
        return record

    async def _store_version(
        self,
        document: RoutingDocument,
        author: str,
        comment: str,
        versions: list[ConfigVersionRecord],
        rollback_of: int | None = None,
    ) -> ConfigVersionRecord:
        previous = versions[-1] if versions else None
        old_matrix = orjson.loads(previous.document)["matrix"] if previous else {}
        diff = matrix_diff(old_matrix, document.as_json()["matrix"])
        record = ConfigVersionRecord(
            version=(previous.version + 1) if previous else 1,
            at=self._clock.now(),
            author=author,
            comment=comment,
            document=document.canonical(),
            diff=canonical_json(diff).decode(),
        )
        await self._store.append_config_version(record)
        self._apply(document, record)
        await self._audit.record(
            "config_applied",
            author,
            {
                "version": record.version,
                "previous_version": previous.version if previous else None,
                "comment": comment,
                "diff": diff,
                "rollback_of": rollback_of,
            },
        )
        # An operator's change is worth a warning in the log; the file's own matrix is not.
        level = logging.INFO if author == CONFIG_FILE_AUTHOR else logging.WARNING
        log.log(level, "routing configuration version %d applied by %s", record.version, author)
        return record

    def _apply(self, document: RoutingDocument, record: ConfigVersionRecord) -> None:
        config = self.config_with(document)
        self._swap(config, RoutingMatrix.from_config(config))
        self.current = record

    async def reload(self) -> bool:
        """Apply the newest stored version when another worker stored it; whether it did."""
        versions = await self._store.config_versions()
        if not versions or (
            self.current is not None and versions[-1].version == self.current.version
        ):
            return False
        latest = versions[-1]
        self._apply(self.parse(orjson.loads(latest.document)), latest)
        return True


def version_summary(record: ConfigVersionRecord) -> dict[str, Any]:
    """A version without its document (for listings)."""
    return {
        "version": record.version,
        "applied_at": record.at,
        "author": record.author,
        "comment": record.comment,
        "diff": orjson.loads(record.diff),
    }
