"""Request events from follower worker processes to the leader (worker 0).

With `hybridroute serve --workers N`, worker 0 (the leader) keeps the one traffic window the
SLO figures, alert rules, admin metrics views and hourly rollups are computed from. Every other
worker (a follower) ships its finished requests' events there: `EventShipper.submit()` appends
to a bounded buffer (never blocking the request path), and its task posts what gathered to the
leader's internal port every half second. While the leader cannot be reached the buffer keeps
the newest `max_buffer` events (the oldest are dropped and counted) and the next post sends
them. Events travel without their attempts (the traffic window does not read them).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import httpx2 as httpx
import orjson

from hybridroute._clock import Clock
from hybridroute.observability.events import Outcome, RequestEvent

__all__ = ["INTERNAL_EVENTS_PATH", "TOKEN_HEADER", "EventShipper", "decode_events", "encode"]

log = logging.getLogger("hybridroute.observability")

INTERNAL_EVENTS_PATH = "/internal/events"
TOKEN_HEADER = "x-hybridroute-worker-token"
_SHIP_EVERY_S = 0.5
_BATCH = 2000

_PLAIN = (
    "at", "operation_type", "priority", "tenant", "status", "latency_s", "route", "primary",
    "first_route", "fallback", "efficient", "hedged", "stream", "ttft_s", "cache",
    "input_tokens", "output_tokens", "currency", "billed_input_tokens", "billed_output_tokens",
    "error_code", "model", "decision_id", "reason", "budget_level", "budget_utilisation",
    "subject", "residency",
)  # fmt: skip


def encode(event: RequestEvent) -> dict[str, Any]:
    """An event as plain JSON-ready values (attempts left out)."""
    data: dict[str, Any] = {name: getattr(event, name) for name in _PLAIN}
    data["outcome"] = event.outcome.value
    data["cost"] = str(event.cost)
    return data


def decode_events(items: Sequence[Mapping[str, Any]]) -> list[RequestEvent]:
    """Events back from `encode()`; an item that does not decode is skipped (and logged)."""
    events = []
    for item in items:
        try:
            values = {name: item[name] for name in _PLAIN if name in item}
            events.append(
                RequestEvent(outcome=Outcome(item["outcome"]), cost=Decimal(item["cost"]), **values)
            )
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            log.warning("a shipped request event did not decode (%s); skipped", exc)
    return events


class EventShipper:
    """A follower's events, posted to the leader in batches."""

    def __init__(
        self,
        leader_url: str,
        token: str,
        clock: Clock,
        client: httpx.AsyncClient,
        *,
        max_buffer: int = 20_000,
    ) -> None:
        self._url = leader_url.rstrip("/") + INTERNAL_EVENTS_PATH
        self._headers = {TOKEN_HEADER: token, "content-type": "application/json"}
        self._clock = clock
        self._client = client
        self._buffer: deque[dict[str, Any]] = deque(maxlen=max_buffer)
        self.shipped = 0
        self.dropped = 0
        self.failures = 0

    def submit(self, event: RequestEvent) -> None:
        """Queue an event for the leader (an observer: O(1), never raises)."""
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(encode(event))

    async def ship(self) -> None:
        """Post what is buffered now (in batches); keep it when the leader does not answer."""
        while self._buffer:
            batch = [self._buffer[i] for i in range(min(_BATCH, len(self._buffer)))]
            try:
                response = await self._client.post(
                    self._url, content=orjson.dumps(batch), headers=self._headers, timeout=5.0
                )
                response.raise_for_status()
            except httpx.HTTPError as exc:
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning(
                        "cannot ship %d request events to the leader worker (%s); keeping them",
                        len(self._buffer),
                        exc,
                    )
                return
            for _ in batch:
                self._buffer.popleft()
            self.shipped += len(batch)

    async def run(self) -> None:
        """Ship every half second until cancelled, then once more."""
        try:
            while True:
                await self._clock.sleep(_SHIP_EVERY_S)
                await self.ship()
        finally:
            try:
                await self.ship()
            except Exception:  # stopping: what could not be shipped is said, not hidden
                log.exception("%d request events were not shipped at shutdown", len(self._buffer))
