"""Flag, routing-configuration and rollback endpoints (the seed's Modules 3.3 and 6.3).

- `GET /admin/feature-flags/bedrock` — the five flags and the last change (viewer);
- `POST /admin/feature-flags/bedrock/update` `{"flag", "enabled", "reason"?}` (operator);
- `POST /admin/feature-flags/bedrock/disable-all` `{"reason"?}` (operator): MCP-only routing;
- `POST /admin/feature-flags/bedrock/enable-all` `{"reason"?}` (operator): all five back on;
- `GET /admin/config/routing-rules` — the version in force with its matrix (viewer);
- `PUT /admin/config/routing-rules` `{"matrix": {...}, "comment"?, "version"?}` (admin): a new
  version, hot-swapped; `?dry_run=true` validates and previews without applying (with
  `"samples": [{"operation_type", "residency"?}]` to preview particular requests);
- `GET /admin/config/routing-rules/versions` and `/versions/{n}` — the history (viewer);
- `GET /admin/config/validate-routing` — checks the configuration in force and shows how each
  matrix row decides now (viewer);
- `POST /admin/config/rollback` `{"version", "comment"?}` (operator): apply an old version again;
- `POST /admin/rollback` `{"level": 1|2|3, "version"?, "reason"?}` (operator): the rollback
  procedures, with the post-rollback validation and timings.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from hybridroute.api.auth import principal_of
from hybridroute.api.http import Receive, Scope, Send, query_params, read_json_object, send_json
from hybridroute.config.checks import check_matrix
from hybridroute.control.flags import parse_flag
from hybridroute.control.routing_config import matrix_diff, version_summary
from hybridroute.errors import GatewayError, RequestError
from hybridroute.routing.matrix import RoutingMatrix
from hybridroute.runtime import Runtime
from hybridroute.signals import FlagState

__all__ = [
    "VERSION_PATH",
    "config_rollback",
    "config_version",
    "config_versions",
    "disable_all_flags",
    "enable_all_flags",
    "get_flags",
    "get_routing_rules",
    "operator_text",
    "put_routing_rules",
    "rollback",
    "update_flag",
    "validate_routing",
]

VERSION_PATH = re.compile(r"^/admin/config/routing-rules/versions/(?P<n>\d{1,9})$")
_MAX_SAMPLES = 50


async def _reply(send: Send, body: Any, status: int = 200) -> None:
    await send_json(send, status, orjson.dumps(body))


def operator_text(runtime: Runtime, data: dict[str, Any], name: str, limit: int = 2000) -> str:
    """An operator's free text (a reason, a comment, a note), PII redacted: it is stored and
    shown back, not only audited."""
    value = data.get(name) or ""
    if not isinstance(value, str) or len(value) > limit:
        raise RequestError(f"'{name}' must be text of at most {limit} characters", param=name)
    return runtime.control.redactor.redact(value)


def _reason(runtime: Runtime, data: dict[str, Any]) -> str:
    return operator_text(runtime, data, "reason")


def _only(data: dict[str, Any], allowed: set[str], example: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise RequestError(
            f"unknown field(s) {', '.join(sorted(unknown))}; send {example}",
            param=sorted(unknown)[0],
        )


# -- flags -------------------------------------------------------------------------------------


def _flags_body(runtime: Runtime) -> dict[str, Any]:
    flags = runtime.control.flags
    state = flags.current().as_mapping()
    return {
        "flags": state,
        "mode": "hybrid" if state["ENABLE_BEDROCK_SUPPORT_MODE"] else "mcp_only",
        "last_change": flags.last_change,
    }


async def get_flags(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    await _reply(send, _flags_body(runtime))


async def update_flag(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    example = '{"flag": "ENABLE_DIRECT_BEDROCK_FALLBACK", "enabled": false, "reason": "..."}'
    data = await read_json_object(scope, receive, example)
    _only(data, {"flag", "enabled", "reason"}, example)
    if "flag" not in data or "enabled" not in data:
        raise RequestError(f"send 'flag' and 'enabled', like {example}")
    flag = parse_flag(data["flag"])
    enabled = data["enabled"]
    if not isinstance(enabled, bool):
        raise RequestError("'enabled' must be true or false", param="enabled")
    change = await runtime.control.flags.set(
        flag, enabled, actor=principal_of(scope).name, reason=_reason(runtime, data)
    )
    await runtime.control.commit()
    await _reply(send, {**_flags_body(runtime), **change.as_dict()})


async def disable_all_flags(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    data = await read_json_object(scope, receive, '{"reason": "..."}')
    _only(data, {"reason"}, '{"reason": "..."}')
    change = await runtime.control.flags.disable_all(
        actor=principal_of(scope).name, reason=_reason(runtime, data) or "disable-all"
    )
    await runtime.control.commit()
    await _reply(send, {**_flags_body(runtime), **change.as_dict()})


async def enable_all_flags(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    data = await read_json_object(scope, receive, '{"reason": "..."}')
    _only(data, {"reason"}, '{"reason": "..."}')
    change = await runtime.control.flags.restore(
        FlagState(), actor=principal_of(scope).name, reason=_reason(runtime, data) or "enable-all"
    )
    await runtime.control.commit()
    await _reply(send, {**_flags_body(runtime), **change.as_dict()})


# -- routing configuration ---------------------------------------------------------------------


def _version_body(runtime: Runtime) -> dict[str, Any]:
    current = runtime.control.routing.current
    if current is None:
        raise GatewayError("no routing configuration version is in force yet")
    return {**version_summary(current), **orjson.loads(current.document)}


async def get_routing_rules(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    await _reply(send, _version_body(runtime))


def _row_preview(runtime: Runtime, matrix: RoutingMatrix, op: str, residency: str | None) -> Any:
    try:
        decision = runtime.gateway.preview(matrix.rule_for(op), residency)
    except GatewayError as error:
        return {"refused": error.code, "message": error.message}
    return {
        "routes": list(decision.routes),
        "forced": decision.forced,
        "reason": decision.reason,
        "as_configured": decision.routes[0] == decision.primary,
    }


def _preview(
    runtime: Runtime, matrix: RoutingMatrix, samples: list[tuple[str, str | None]]
) -> dict[str, Any]:
    return {
        "rows": {op: _row_preview(runtime, matrix, op, None) for op in matrix.rules},
        "samples": [
            {"operation_type": op, "residency": res, **_row_preview(runtime, matrix, op, res)}
            for op, res in samples
        ],
    }


def _samples(data: dict[str, Any], runtime: Runtime) -> list[tuple[str, str | None]]:
    raw = data.get("samples", [])
    if not isinstance(raw, list) or len(raw) > _MAX_SAMPLES:
        raise RequestError(
            f"'samples' must be a list of at most {_MAX_SAMPLES} objects like "
            '{"operation_type": "standard", "residency": "eu"}',
            param="samples",
        )
    samples: list[tuple[str, str | None]] = []
    for item in raw:
        op = item.get("operation_type") if isinstance(item, dict) else None
        residency = item.get("residency") if isinstance(item, dict) else None
        if not isinstance(op, str) or op not in runtime.matrix.rules:
            raise RequestError(
                f"each sample needs an 'operation_type' of the matrix "
                f"({', '.join(runtime.matrix.rules)}); got {op!r}",
                param="samples",
            )
        if residency is not None and not isinstance(residency, str):
            raise RequestError("a sample's 'residency' must be a region-set name", param="samples")
        samples.append((op, residency))
    return samples


async def put_routing_rules(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    example = '{"matrix": {"standard": {"priority": "medium", ...}, ...}, "comment": "why"}'
    data = await read_json_object(scope, receive, example)
    service = runtime.control.routing
    document = service.parse(data)
    comment = operator_text(runtime, data, "comment")
    base = data.get("version")
    if base is not None and (isinstance(base, bool) or not isinstance(base, int)):
        raise RequestError("'version' must be the version number you edited", param="version")
    samples = _samples(data, runtime)
    current = runtime.control.routing.current
    old_matrix = orjson.loads(current.document)["matrix"] if current is not None else {}
    diff = matrix_diff(old_matrix, document.as_json()["matrix"])
    if query_params(scope).get("dry_run", "").lower() in ("1", "true", "yes"):
        proposed = RoutingMatrix.from_config(service.config_with(document))
        await _reply(
            send,
            {
                "dry_run": True,
                "valid": True,
                "base_version": current.version if current is not None else None,
                "diff": diff,
                "current": _preview(runtime, runtime.matrix, samples),
                "proposed": _preview(runtime, proposed, samples),
            },
        )
        return
    record = await service.apply(
        document, author=principal_of(scope).name, comment=comment, base_version=base
    )
    await runtime.control.commit()
    await _reply(send, {**version_summary(record), "applied": True})


async def config_versions(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    versions = await runtime.control.routing.versions()
    current = runtime.control.routing.current
    await _reply(
        send,
        {
            "current": current.version if current is not None else None,
            "versions": [version_summary(v) for v in reversed(versions)],
        },
    )


async def config_version(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    match = VERSION_PATH.match(scope["path"])
    assert match is not None
    record = await runtime.control.routing.version(int(match["n"]))
    await _reply(send, {**version_summary(record), **orjson.loads(record.document)})


async def validate_routing(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    config = runtime.config
    issues = [
        {"path": i.path, "problem": i.message, "fix": i.hint}
        for i in check_matrix(config.matrix, config.routes)
    ]
    preview = _preview(runtime, runtime.matrix, [])
    rows = preview["rows"]
    for op, row in rows.items():
        rule = runtime.matrix.rules[op]
        row.update({"primary": rule.primary, "fallback": rule.fallback})
    current = runtime.control.routing.current
    await _reply(
        send,
        {
            "valid": not issues,
            "version": current.version if current is not None else None,
            "issues": issues,
            "flags": runtime.control.flags.current().as_mapping(),
            "rows": rows,
            "deviating_rows": sorted(
                op for op, row in rows.items() if not row.get("as_configured", False)
            ),
        },
    )


async def config_rollback(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    example = '{"version": 3, "comment": "back to the morning config"}'
    data = await read_json_object(scope, receive, example)
    _only(data, {"version", "comment", "reason"}, example)
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise RequestError(f"send the version to restore, like {example}", param="version")
    comment = operator_text(runtime, data, "comment") or _reason(runtime, data)
    record = await runtime.control.routing.rollback(
        version, author=principal_of(scope).name, comment=comment
    )
    await runtime.control.commit()
    await _reply(send, {**version_summary(record), "restored_from": version})


async def rollback(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    example = '{"level": 2, "reason": "error rate above 50%"} or {"level": 3, "version": 4}'
    data = await read_json_object(scope, receive, example)
    _only(data, {"level", "version", "reason"}, example)
    level, version = data.get("level"), data.get("version")
    if isinstance(level, bool) or not isinstance(level, int):
        raise RequestError(f"send the rollback level, like {example}", param="level")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise RequestError("'version' must be a version number", param="version")
    report = await runtime.control.rollback.perform(
        level, version=version, actor=principal_of(scope).name, reason=_reason(runtime, data)
    )
    await runtime.control.commit()
    await _reply(send, report.as_dict())
