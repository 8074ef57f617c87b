"""Requests for the fault scenarios: one call, what the client saw, and summaries of many."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx2 as httpx

__all__ = ["Outcome", "ask", "ask_async", "p95", "summary"]

_BODY = {"model": "default", "messages": [{"role": "user", "content": "status?"}]}


@dataclass(frozen=True, slots=True)
class Outcome:
    operation_type: str
    status: int
    route: str
    attempts: str
    hedged: bool
    latency_s: float
    retry_after: str | None

    @property
    def ok(self) -> bool:
        return self.status == 200


def _outcome(operation_type: str, response: httpx.Response, started: float) -> Outcome:
    headers = response.headers
    return Outcome(
        operation_type=operation_type,
        status=response.status_code,
        route=headers.get("x-hybridroute-route", "none"),
        attempts=headers.get("x-hybridroute-attempts", ""),
        hedged=headers.get("x-hybridroute-hedged") == "true",
        latency_s=time.monotonic() - started,
        retry_after=headers.get("retry-after"),
    )


def ask(client: httpx.Client, operation_type: str) -> Outcome:
    started = time.monotonic()
    response = client.post(
        "/v1/chat/completions", json=_BODY, headers={"x-operation-type": operation_type}
    )
    return _outcome(operation_type, response, started)


async def ask_async(client: httpx.AsyncClient, operation_type: str) -> Outcome:
    started = time.monotonic()
    response = await client.post(
        "/v1/chat/completions", json=_BODY, headers={"x-operation-type": operation_type}
    )
    return _outcome(operation_type, response, started)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def summary(outcomes: Sequence[Outcome]) -> str:
    ok = sum(o.ok for o in outcomes)
    shed = sum(o.status == 429 for o in outcomes)
    other = len(outcomes) - ok - shed
    text = (
        f"{len(outcomes)} sent, {ok} ok ({ok / len(outcomes) * 100:.1f} %), {shed} shed (429), "
        f"{other} other errors"
    )
    if ok:
        text += f", p95 of successes {p95([o.latency_s for o in outcomes if o.ok]) * 1000:.0f} ms"
    return text
