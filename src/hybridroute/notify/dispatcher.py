"""`NotificationDispatcher`: alert notices from the alert evaluator to every sink, in the
background, without ever holding up the caller or letting one sink hold up another.

Each sink has its own lane: a bounded queue and one worker task. `notify()` only appends to the
queues of the sinks that hear the notice's severity and wakes their workers; it never waits
and never raises.

Delivery, per sink:
- In order. A failed attempt is retried (the same notice, again and again, while the gateway
  runs) after an exponential backoff: `backoff_start_s`, doubled each time, capped at
  `backoff_max_s`, each delay multiplied by a random factor in [1 - JITTER, 1 + JITTER]
  (JITTER = 0.1, so the first two retries wait 0.9-1.1 s and 1.8-2.2 s by default) and never
  above `backoff_max_s`. A receiver's Retry-After hint lengthens a delay, never shortens it.
  Notices queue up behind the one being retried. A notice the receiver refuses for good (an
  HTTP 4xx other than 408 and 429: a malformed payload, a revoked webhook) is not retried: it
  is dropped, counted (`rejected`) and logged as an error, so it cannot hold up every notice
  behind it.
- Bounded. A lane holds at most `max_queue_per_sink` waiting notices (plus the one being
  tried). When a new notice arrives at a full lane the OLDEST waiting one is dropped, counted
  (`dropped`) and logged: a sink that is down for hours must not grow memory without limit,
  and the newest notices (the current state of alerts) are the ones worth sending when it
  comes back.
- At least once on the wire, once per sink from the dispatcher's side: a notice is retried
  until one attempt succeeds, so a receiver can see a repeat (an attempt that arrived but whose
  answer was lost); the `dedupe_key` (body field and `X-Hybridroute-Dedupe-Key` header) lets
  it drop that. The dispatcher itself remembers the keys each sink has accepted (the last
  `REMEMBERED_KEYS`) and never sends one of them to that sink again.
- Shutdown. When its worker is cancelled, a lane tries everything still queued once, within
  `flush_timeout_s` in all (real time: this bounds network I/O during shutdown), and logs what
  it could not deliver. `aclose()` does this for every lane, including lanes whose worker never
  got to run.

Backoff waits use the injected `Clock`, so tests drive retries with `FakeClock`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

from hybridroute._clock import Clock
from hybridroute._tasks import TaskSupervisor
from hybridroute.notify.message import AlertNotice
from hybridroute.notify.sinks import DeliveryFailed, Sink

__all__ = ["JITTER", "REMEMBERED_KEYS", "NotificationDispatcher"]

log = logging.getLogger("hybridroute.notify")

JITTER = 0.1
"""Each backoff delay is multiplied by a random factor in [1 - JITTER, 1 + JITTER]."""

REMEMBERED_KEYS = 4096
"""Dedupe keys remembered per sink after a successful delivery."""

_UNDELIVERED_LISTED = 20  # dedupe keys named in the shutdown log line, at most


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DeliveryFailed):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Lane:
    """One sink's queue, worker state and figures."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.queue: deque[AlertNotice] = deque()
        self.wake = asyncio.Event()
        self.current: AlertNotice | None = None
        self.task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failures = 0
        self.dropped = 0
        self.rejected = 0  # refused for good by the receiver (a 4xx): dropped, not retried
        self.last_error: str | None = None
        self.last_success_at: float | None = None
        self.retry_at: float | None = None
        self.remembered: dict[str, None] = {}  # insertion-ordered, oldest first

    def knows(self, key: str) -> bool:
        """Delivered already, being tried, or waiting."""
        if key in self.remembered:
            return True
        if self.current is not None and self.current.dedupe_key == key:
            return True
        return any(n.dedupe_key == key for n in self.queue)

    def remember(self, key: str) -> None:
        self.remembered[key] = None
        if len(self.remembered) > REMEMBERED_KEYS:
            del self.remembered[next(iter(self.remembered))]


class NotificationDispatcher:
    """Fans alert notices out to sinks, one background worker per sink."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        clock: Clock,
        *,
        max_queue_per_sink: int = 1000,
        backoff_start_s: float = 1.0,
        backoff_max_s: float = 300.0,
        flush_timeout_s: float = 2.0,
    ) -> None:
        names = [s.name for s in sinks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"alert sink names must be unique; repeated: {', '.join(duplicates)}")
        if max_queue_per_sink < 1:
            raise ValueError("max_queue_per_sink must be at least 1")
        if not 0 < backoff_start_s <= backoff_max_s:
            raise ValueError("backoff needs 0 < backoff_start_s <= backoff_max_s")
        if flush_timeout_s < 0:
            raise ValueError("flush_timeout_s cannot be negative")
        self._lanes = [_Lane(s) for s in sinks]
        self._clock = clock
        self._max_queue = max_queue_per_sink
        self._backoff_start = backoff_start_s
        self._backoff_max = backoff_max_s
        self._flush_timeout = flush_timeout_s
        self._random = random.Random()
        self._closed = False

    @property
    def sinks(self) -> list[Sink]:
        return [lane.sink for lane in self._lanes]

    # -- the caller's side ------------------------------------------------------------------

    def notify(self, notice: AlertNotice) -> None:
        """Queue `notice` for every sink that hears its severity. Never blocks, never raises.

        Call it from the event loop's thread (the lanes' wake-ups are asyncio events)."""
        try:
            if self._closed:
                log.warning(
                    "alert notice %s arrived after the dispatcher closed; not sent",
                    notice.dedupe_key,
                )
                return
            for lane in self._lanes:
                if notice.severity in lane.sink.severities:
                    self._enqueue(lane, notice)
        except Exception:  # a notification problem must never reach the alert evaluator
            log.exception("queueing alert notice %s failed", getattr(notice, "dedupe_key", "?"))

    def _enqueue(self, lane: _Lane, notice: AlertNotice) -> None:
        key = notice.dedupe_key
        if lane.knows(key):
            log.debug("alert sink %s already has %s; not queued again", lane.sink.name, key)
            return
        if len(lane.queue) >= self._max_queue:
            oldest = lane.queue.popleft()
            lane.dropped += 1
            log.warning(
                "alert sink %s: queue full (%d waiting); dropped the oldest notice %s "
                "(%d dropped so far; last error: %s)",
                lane.sink.name,
                len(lane.queue) + 1,
                oldest.dedupe_key,
                lane.dropped,
                lane.last_error or "none",
            )
        lane.queue.append(notice)
        lane.wake.set()

    # -- the workers -------------------------------------------------------------------------

    def start(self, supervisor: TaskSupervisor) -> None:
        """Start one worker per sink under `supervisor` (once)."""
        if self._closed:
            raise RuntimeError("the notification dispatcher is closed; it cannot start again")
        for lane in self._lanes:
            if lane.task is None:
                lane.task = supervisor.spawn(self._run(lane), name=f"alert-sink-{lane.sink.name}")

    async def _run(self, lane: _Lane) -> None:
        try:
            while True:
                if not lane.queue:
                    lane.wake.clear()
                    await lane.wake.wait()
                    continue
                notice = lane.queue.popleft()
                if notice.dedupe_key in lane.remembered:
                    continue
                lane.current = notice
                await self._deliver(lane, notice)
                lane.current = None
        except asyncio.CancelledError:
            await self._flush(lane)
            raise

    async def _deliver(self, lane: _Lane, notice: AlertNotice) -> None:
        """Send `notice` until one attempt succeeds, backing off between attempts."""
        base = self._backoff_start
        attempt = 0
        while True:
            attempt += 1
            try:
                await lane.sink.send(notice)
            except Exception as exc:  # noqa: BLE001 - whatever a sink raises is retried
                self._failed(lane, exc)
                if isinstance(exc, DeliveryFailed) and exc.permanent:
                    lane.rejected += 1
                    log.error(
                        "alert sink %s refused %s for good (%s); it is dropped, not retried",
                        lane.sink.name,
                        notice.dedupe_key,
                        lane.last_error,
                    )
                    return
                delay = self._delay(base, exc)
                log.warning(
                    "alert sink %s: sending %s failed (attempt %d): %s; retrying in %.1fs, "
                    "%d more waiting",
                    lane.sink.name,
                    notice.dedupe_key,
                    attempt,
                    lane.last_error,
                    delay,
                    len(lane.queue),
                )
                lane.retry_at = self._clock.monotonic() + delay
                try:
                    await self._clock.sleep(delay)
                finally:
                    lane.retry_at = None
                base = min(base * 2, self._backoff_max)
            else:
                self._succeeded(lane, notice)
                return

    def _delay(self, base: float, exc: Exception) -> float:
        delay = base * self._random.uniform(1 - JITTER, 1 + JITTER)
        hint = exc.retry_after_s if isinstance(exc, DeliveryFailed) else None
        if hint is not None:
            delay = max(delay, hint)
        return min(delay, self._backoff_max)

    def _failed(self, lane: _Lane, exc: BaseException) -> None:
        lane.failures += 1
        lane.last_error = _describe(exc)

    def _succeeded(self, lane: _Lane, notice: AlertNotice) -> None:
        lane.delivered += 1
        lane.last_success_at = self._clock.now()
        lane.remember(notice.dedupe_key)

    async def _flush(self, lane: _Lane) -> None:
        """Try everything the lane still holds once, within `flush_timeout_s` in all."""
        pending = ([lane.current] if lane.current is not None else []) + list(lane.queue)
        lane.current = None
        lane.queue.clear()
        pending = [n for n in pending if n.dedupe_key not in lane.remembered]
        if not pending:
            return
        undelivered: list[AlertNotice] = []
        try:
            async with asyncio.timeout(self._flush_timeout):
                while pending:
                    notice = pending[0]  # stays pending if the deadline cuts this send short
                    try:
                        await lane.sink.send(notice)
                    except Exception as exc:  # noqa: BLE001 - one try each; logged below
                        self._failed(lane, exc)
                        undelivered.append(notice)
                    else:
                        self._succeeded(lane, notice)
                    pending.pop(0)
        except TimeoutError:
            lane.failures += 1
            lane.last_error = f"shutdown flush ran out of time ({self._flush_timeout:g}s)"
        undelivered += pending
        if undelivered:
            keys = [n.dedupe_key for n in undelivered]
            listed = ", ".join(keys[:_UNDELIVERED_LISTED])
            more = len(keys) - _UNDELIVERED_LISTED
            log.error(
                "alert sink %s: %d notice(s) not delivered at shutdown (last error: %s): %s%s",
                lane.sink.name,
                len(keys),
                lane.last_error or "none",
                listed,
                f" and {more} more" if more > 0 else "",
            )

    async def aclose(self) -> None:
        """Stop every worker, flushing what each still holds; later notices are refused."""
        self._closed = True
        tasks = [lane.task for lane in self._lanes if lane.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # Each worker's flush is bounded by flush_timeout_s; the margin covers the rest.
            await asyncio.wait(tasks, timeout=self._flush_timeout + 5.0)
        # Lanes whose worker never ran (or never started) still hold their notices.
        for lane in self._lanes:
            lane.task = None
            if lane.queue or lane.current is not None:
                await self._flush(lane)

    # -- reporting ---------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Per sink, JSON-ready. `queued` counts waiting notices plus the one being tried;
        `next_retry_in_s` is set while a failed notice waits for its next attempt."""
        now = self._clock.monotonic()
        return [
            {
                "name": lane.sink.name,
                "type": lane.sink.kind,
                "severities": sorted(lane.sink.severities),
                "queued": len(lane.queue) + (1 if lane.current is not None else 0),
                "delivered": lane.delivered,
                "failures": lane.failures,
                "dropped": lane.dropped,
                "rejected": lane.rejected,
                "last_error": lane.last_error,
                "last_success_at": lane.last_success_at,
                "next_retry_in_s": (
                    None if lane.retry_at is None else round(max(0.0, lane.retry_at - now), 3)
                ),
            }
            for lane in self._lanes
        ]

    def __repr__(self) -> str:
        queued = sum(len(lane.queue) for lane in self._lanes)
        return f"<NotificationDispatcher sinks={len(self._lanes)} queued={queued}>"
