"""Reading a configuration: YAML text → validated `GatewayConfig`, or a `ConfigError` that lists
every problem with its path and a hint on how to fix it."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from hybridroute.config.checks import check_config
from hybridroute.config.schema import GatewayConfig
from hybridroute.errors import ConfigError, ConfigIssue

__all__ = ["load_config", "parse_config", "parse_config_text"]


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML configuration file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [ConfigIssue("", f"file {str(file)!r} does not exist", "check the path")],
            source=str(file),
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [ConfigIssue("", f"cannot read {str(file)!r}: {exc}")], source=str(file)
        ) from exc
    return parse_config_text(text, source=str(file))


def parse_config_text(text: str, *, source: str = "configuration") -> GatewayConfig:
    """Validate YAML (or JSON, which is YAML) configuration text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            [ConfigIssue("", f"not valid YAML{where}: {problem}", "fix the syntax")],
            source=source,
        ) from exc
    return parse_config(data, source=source)


def parse_config(data: Any, *, source: str = "configuration") -> GatewayConfig:
    """Validate an already-parsed configuration mapping."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigIssue("", f"the top level must be a mapping, not {type(data).__name__}")],
            source=source,
        )
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_issue(err) for err in exc.errors()], source=source) from None
    issues = check_config(config)
    if issues:
        raise ConfigError(issues, source=source)
    return config


def _issue(error: ErrorDetails) -> ConfigIssue:
    loc, parent, node = _walk(list(error["loc"]))
    path = ".".join(str(part) for part in loc)
    kind = error["type"]
    if kind == "missing":
        return ConfigIssue(path, "required key is missing", "add it")
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else ""
        model = _as_model(parent)
        allowed = list(model.model_fields) if model is not None else []
        hint = f"allowed keys here: {', '.join(allowed)}" if allowed else "remove it"
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigIssue(path, f"unknown key {name!r}{suggestion}", hint)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        ctx = error.get("ctx") or {}
        field = str(ctx.get("discriminator", "type")).strip("'")
        tags = ", ".join(_union_tags(node)) or "see docs/configuration.md"
        where = f"{path}.{field}" if path else field
        if kind == "union_tag_not_found":
            return ConfigIssue(where, f"'{field}' is missing", f"set it to one of: {tags}")
        return ConfigIssue(where, f"unknown {field} {ctx.get('tag')!r}", f"use one of: {tags}")
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    value = error.get("input")
    if kind not in ("value_error", "assertion_error") and _is_scalar(value):
        message = f"{message} (got {value!r})"
    return ConfigIssue(path, message)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _walk(loc: list[int | str]) -> tuple[list[int | str], Any, Any]:
    """Follow an error location through the schema.

    Returns the location without the tags pydantic inserts for tagged unions (it reports
    `routes.mcp.mcp.transport` where the file says `routes.mcp.transport`), the schema node
    that holds the last part (for listing the keys allowed there) and the node of the last part.
    """
    node: Any = GatewayConfig
    parent: Any = None
    clean: list[int | str] = []
    for part in loc:
        tagged = _union_member(node, part)
        if tagged is not None:
            node = tagged
            continue
        clean.append(part)
        parent = node
        node = _step(node, part) if node is not None else None
    return clean, parent, node


def _union_members(node: Any) -> list[type[BaseModel]]:
    if typing.get_origin(node) is typing.Annotated:
        node = typing.get_args(node)[0]
    if typing.get_origin(node) in (typing.Union, types.UnionType):
        args = typing.get_args(node)
        return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    return []


def _tag_of(model: type[BaseModel]) -> str | None:
    for name in ("type", "source"):
        field = model.model_fields.get(name)
        if field is not None and typing.get_origin(field.annotation) is typing.Literal:
            return str(typing.get_args(field.annotation)[0])
    return None


def _union_tags(node: Any) -> list[str]:
    return [tag for m in _union_members(node) if (tag := _tag_of(m)) is not None]


def _union_member(node: Any, part: int | str) -> type[BaseModel] | None:
    for model in _union_members(node):
        if _tag_of(model) == part:
            return model
    return None


def _step(node: Any, part: int | str) -> Any:
    model = _as_model(node)
    if model is not None:
        field = model.model_fields.get(str(part))
        return field.annotation if field is not None else None
    origin = typing.get_origin(node)
    args = typing.get_args(node)
    if origin is typing.Annotated:
        return _step(args[0], part)
    if origin in (dict, typing.Mapping) and len(args) == 2:
        return args[1]
    if origin in (list, tuple) and args:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _step(non_none[0], part)
    return None


def _as_model(node: Any) -> type[BaseModel] | None:
    if typing.get_origin(node) is typing.Annotated:
        node = typing.get_args(node)[0]
    if isinstance(node, type) and issubclass(node, BaseModel):
        return node
    if typing.get_origin(node) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(node) if a is not type(None)]
        if len(models) == 1 and isinstance(models[0], type) and issubclass(models[0], BaseModel):
            return models[0]
    return None
