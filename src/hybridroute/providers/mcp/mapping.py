"""Request → tool arguments: the configured mapping of an MCP route.

Each tool argument is either a literal value or a reference to a request field written "$name"
(the sources are listed in `config.schema.ARGUMENT_SOURCES`); "$$text" is the literal "$text".
The mapping is compiled once, so building arguments per call is a short loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hybridroute.types import GenerationRequest

__all__ = ["ArgumentMapper", "flatten_prompt", "last_user_message"]

_Getter = Callable[[GenerationRequest, int], Any]


def last_user_message(request: GenerationRequest) -> str:
    """The text of the last user message ('' when there is none)."""
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content
    return ""


def flatten_prompt(request: GenerationRequest) -> str:
    """The conversation as one text: the lone message's text, or 'role: text' lines."""
    if len(request.messages) == 1:
        return request.messages[0].content
    return "\n".join(f"{m.role}: {m.content}" for m in request.messages)


_SOURCES: dict[str, _Getter] = {
    "messages": lambda r, _: [{"role": m.role, "content": m.content} for m in r.messages],
    "system": lambda r, _: "\n\n".join(r.system),
    "prompt": lambda r, _: flatten_prompt(r),
    "last_user_message": lambda r, _: last_user_message(r),
    "operation_type": lambda r, _: r.operation_type,
    "priority": lambda r, _: r.priority.value,
    "max_tokens": lambda r, _: r.max_tokens,
    "temperature": lambda r, _: r.temperature,
    "top_p": lambda r, _: r.top_p,
    "stop": lambda r, _: list(r.stop),
    "decision_id": lambda r, _: r.decision_id,
    "deadline_ms": lambda _, deadline_ms: deadline_ms,
    "model": lambda r, _: r.requested_model,
}


class ArgumentMapper:
    """Builds a tool's arguments from a request according to a route's `arguments` mapping."""

    __slots__ = ("_plan",)

    def __init__(self, spec: Mapping[str, Any]) -> None:
        plan: list[tuple[str, _Getter | None, Any]] = []
        for name, value in spec.items():
            if isinstance(value, str) and value.startswith("$$"):
                plan.append((name, None, value[1:]))
            elif isinstance(value, str) and value.startswith("$"):
                getter = _SOURCES.get(value[1:])
                if getter is None:
                    raise ValueError(f"argument {name!r}: unknown source {value!r}")
                plan.append((name, getter, None))
            else:
                plan.append((name, None, value))
        self._plan = tuple(plan)

    def build(self, request: GenerationRequest, *, deadline_ms: int) -> dict[str, Any]:
        """The arguments for one call."""
        return {
            name: getter(request, deadline_ms) if getter is not None else literal
            for name, getter, literal in self._plan
        }
