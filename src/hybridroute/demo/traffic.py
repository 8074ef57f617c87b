"""A light synthetic traffic generator for the demo: a mix of operation types at a steady rate.

It calls the gateway like any client (HTTP, OpenAI wire format) and keeps counts by route, by
outcome and of fallbacks, so the demo can print what the gateway is doing.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from hybridroute.types import BUILTIN_OPERATION_TYPES

__all__ = ["TrafficGenerator", "TrafficStats"]

_PROMPTS = (
    "Summarise the last deployment's error budget.",
    "Which route served most critical operations today?",
    "Draft a status update for the on-call channel.",
    "Explain why the cache hit rate dropped overnight.",
    "List the next safe step to reduce P95 latency.",
)
# Mostly everyday work, a little critical traffic, like a real mix.
_WEIGHTS = {
    "emergency": 1,
    "infrastructure": 2,
    "meta_monitor": 2,
    "implementation": 3,
    "kiro_communication": 3,
    "standard": 8,
    "background": 4,
}


@dataclass
class TrafficStats:
    sent: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    fallbacks: int = 0

    def line(self) -> str:
        routes = ", ".join(f"{route} {count}" for route, count in sorted(self.by_route.items()))
        errors = sum(count for status, count in self.by_status.items() if status >= 400)
        return (
            f"traffic: {self.sent} sent | served by {routes or '-'} | "
            f"{self.fallbacks} fallbacks | {errors} errors"
        )


class TrafficGenerator:
    """Sends `rate` requests per second of mixed operation types to a gateway."""

    def __init__(self, gateway_url: str, *, rate: float = 2.0, seed: int | None = None) -> None:
        self._url = f"{gateway_url.rstrip('/')}/v1/chat/completions"
        self._interval = 1.0 / rate
        self._rng = random.Random(seed)
        self.stats = TrafficStats()

    async def run(self, stop: asyncio.Event) -> None:
        ops = [op for op in BUILTIN_OPERATION_TYPES for _ in range(_WEIGHTS.get(op, 1))]
        timeout = aiohttp.ClientTimeout(total=90)
        async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.TaskGroup() as tasks:
            while not stop.is_set():
                tasks.create_task(self._one(session, self._rng.choice(ops)))
                try:
                    await asyncio.wait_for(stop.wait(), self._interval)
                except TimeoutError:
                    continue

    async def _one(self, session: aiohttp.ClientSession, operation_type: str) -> None:
        body = {
            "model": "default",
            "messages": [{"role": "user", "content": self._rng.choice(_PROMPTS)}],
            "max_tokens": 64,
        }
        self.stats.sent += 1
        try:
            async with session.post(
                self._url, json=body, headers={"x-operation-type": operation_type}
            ) as response:
                await response.read()
                self.stats.by_status[response.status] += 1
                if response.status == 200:
                    self.stats.by_route[response.headers.get("x-hybridroute-route", "?")] += 1
                    if response.headers.get("x-hybridroute-fallback") == "true":
                        self.stats.fallbacks += 1
        except (aiohttp.ClientError, TimeoutError):
            self.stats.by_status[0] += 1
