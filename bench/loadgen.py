"""Load tools for the overhead benchmark: wrk (closed loop) and lean asyncio clients.

Owns how benchmark requests are sent and timed:

- `run_wrk` — closed-loop throughput with /usr/bin/wrk and `bench/wrk/post.lua`;
- `sequential` — one keep-alive connection, one request at a time, latency per request;
- `ttft` — the same for streams: time to the first chunk carrying content, and to the end;
- `open_loop` — requests at a fixed rate whatever the responses, latency from the *scheduled*
  send time (so queueing counts: no coordinated omission);
- `summarise` — percentiles in milliseconds.

The Python clients sit on a raw `asyncio.Protocol` with `httptools.HttpResponseParser` and
keep-alive connections (Content-Length, chunked and close-delimited responses); generic HTTP
clients cost too much per request to measure a gateway's sub-millisecond overhead. Each request
is a byte string built once. Any non-2xx status, connection failure, malformed response or
timeout is counted as an error, never raised. Latency lists hold successful requests only.

Run the coroutines on uvloop (`run_async`), and see `python -m bench.loadgen --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import httptools
import orjson
import uvloop

from bench.payloads import openai_body

__all__ = [
    "OVERHEAD_HEADER",
    "WRK_PATH",
    "WRK_SCRIPT",
    "LatencyResult",
    "OpenLoopResult",
    "WrkError",
    "WrkResult",
    "open_loop",
    "run_async",
    "run_wrk",
    "sequential",
    "summarise",
    "ttft",
]

OVERHEAD_HEADER = "x-hybridroute-overhead-ms"
WRK_PATH = "/usr/bin/wrk"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "post.lua"
TASKSET_PATH = "/usr/bin/taskset"

_OVERHEAD_HEADER_BYTES = OVERHEAD_HEADER.encode()
_NS = 1_000_000_000
_SWEEP_INTERVAL_S = 0.05
_T = TypeVar("_T")


# ---- results -------------------------------------------------------------------------------


@dataclass
class WrkResult:
    """wrk's closed-loop figures, as printed by post.lua's BENCHJSON line (latency in µs)."""

    requests: int
    duration_s: float
    errors: int
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    mean_us: float
    error_detail: dict[str, int] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)


@dataclass
class LatencyResult:
    """Figures of a `sequential` or `ttft` run (warm-up requests excluded).

    `latencies_s`: per successful request, send → complete response (`sequential`) or send →
    first chunk with content (`ttft`). `totals_s`: send → complete response, both modes.
    `overhead_ms`: the `x-hybridroute-overhead-ms` value of every measured response carrying it.
    `last_headers`: the last measured response's headers, names lower-cased.
    """

    latencies_s: list[float] = field(default_factory=list)
    totals_s: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    overhead_ms: list[float] = field(default_factory=list)
    last_headers: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def requests(self) -> int:
        return self.ok + self.errors


@dataclass
class OpenLoopResult:
    """Figures of an `open_loop` run.

    `latencies_s`: per successful request, *scheduled* send time → complete response (queueing
    for a connection and the generator's own lateness included). `service_s`: actual write →
    complete response. `schedule_lag_s`: how late the generator dispatched each request
    (timer granularity is about 1 ms on uvloop, so expect up to ~1 ms). `achieved_rate`:
    successful responses per second of the scheduled window; `send_rate`: requests written per
    second of that window. `dropped`: scheduled requests still waiting for a connection when
    the window closed (never sent).
    """

    target_rate: float
    duration_s: float
    scheduled: int = 0
    sent: int = 0
    ok: int = 0
    errors: int = 0
    dropped: int = 0
    achieved_rate: float = 0.0
    send_rate: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    service_s: list[float] = field(default_factory=list)
    schedule_lag_s: list[float] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    overhead_ms: list[float] = field(default_factory=list)
    connections_opened: int = 0
    elapsed_s: float = 0.0


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no BENCHJSON line."""


def summarise(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p999/max/mean in milliseconds (linear interpolation), plus `count`.

    An empty sequence gives NaN figures and a count of 0.
    """
    count = len(latencies_s)
    if count == 0:
        nan = math.nan
        return {
            "p50": nan,
            "p90": nan,
            "p99": nan,
            "p999": nan,
            "max": nan,
            "mean": nan,
            "count": 0,
        }
    ordered = sorted(latencies_s)

    def percentile(p: float) -> float:
        rank = (count - 1) * p / 100.0
        low = math.floor(rank)
        high = min(low + 1, count - 1)
        return (ordered[low] + (ordered[high] - ordered[low]) * (rank - low)) * 1000.0

    return {
        "p50": percentile(50),
        "p90": percentile(90),
        "p99": percentile(99),
        "p999": percentile(99.9),
        "max": ordered[-1] * 1000.0,
        "mean": math.fsum(ordered) / count * 1000.0,
        "count": float(count),
    }


def _count(kinds: dict[Any, int], kind: Any) -> None:
    kinds[kind] = kinds.get(kind, 0) + 1


# ---- requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    request: bytes


def _target(url: str, body: bytes, headers: Mapping[str, str]) -> _Target:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only plain http:// URLs are supported, got {url!r}")
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    lines = [f"POST {path} HTTP/1.1", f"host: {host_header}:{port}"]
    names = {name.lower() for name in headers}
    if "content-type" not in names:
        lines.append("content-type: application/json")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append(f"content-length: {len(body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return _Target(host, port, head.encode("latin-1") + body)


# ---- one client connection -----------------------------------------------------------------

_MODE_NONE, _MODE_SSE, _MODE_EVENTSTREAM = 0, 1, 2


class _Connection(asyncio.Protocol):
    """One keep-alive client connection carrying one request at a time.

    `send` writes a prebuilt request; when the response completes (or fails) `on_done(self,
    error)` is called once, with `error` None or a short kind such as `"connection lost"`.
    Non-2xx statuses are not errors here: the caller judges `status`.
    """

    def __init__(self, *, collect_headers: bool = False, first_content: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.status = 0
        self.keep_alive = True
        self.sent_ns = 0
        self.scheduled_ns = 0
        self.done_ns = 0
        self.first_content_ns = 0
        self.overhead: bytes | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self._collect_headers = collect_headers
        self._first_content = first_content
        self._mode = _MODE_NONE
        self._scan = bytearray()
        self._headers_done = False
        self._framed = False
        self._on_done: Callable[[_Connection, str | None], None] | None = None
        self._parser = httptools.HttpResponseParser(self)

    def send(
        self, request: bytes, on_done: Callable[[_Connection, str | None], None], scheduled_ns: int
    ) -> None:
        transport = self.transport
        self.status = 0
        self.keep_alive = True
        self.overhead = None
        self.first_content_ns = 0
        self.headers = []
        self._mode = _MODE_NONE
        self._scan = bytearray()
        self._headers_done = False
        self._framed = False
        self._on_done = on_done
        self.scheduled_ns = scheduled_ns
        self.sent_ns = time.perf_counter_ns()
        if transport is None or self.closed:
            self._finish("connection closed")
            return
        transport.write(request)

    def abort(self) -> None:
        """Drop the connection without reporting the request in flight."""
        self._on_done = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, error: str | None) -> None:
        self.done_ns = time.perf_counter_ns()
        on_done = self._on_done
        self._on_done = None
        if on_done is not None:
            on_done(self, error)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._on_done is None:  # nothing asked for: the peer is out of step
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.closed = True
            self._finish("malformed response")
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._on_done is None:
            return
        if self._headers_done and not self._framed and self.status:
            self.keep_alive = False
            self._finish(None)  # a close-delimited body ends with the connection
        else:
            self._finish("connection lost")

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._collect_headers:
            self.headers.append((name, value))
        lowered = name.lower()
        if lowered == _OVERHEAD_HEADER_BYTES:
            self.overhead = value
        elif lowered in (b"content-length", b"transfer-encoding"):
            self._framed = True
        elif self._first_content and lowered == b"content-type":
            if value.startswith(b"text/event-stream"):
                self._mode = _MODE_SSE
            elif value.startswith(b"application/vnd.amazon.eventstream"):
                self._mode = _MODE_EVENTSTREAM

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self._mode == _MODE_NONE or self.first_content_ns:
            return
        self._scan += body
        sse = self._mode == _MODE_SSE
        if self._scan_sse() if sse else b"contentBlockDelta" in self._scan:
            self.first_content_ns = time.perf_counter_ns()
            self._scan = bytearray()

    def _scan_sse(self) -> bool:
        """True once a complete `data:` event with non-empty choices[0].delta.content arrived."""
        buffer = bytes(self._scan).replace(b"\r\n", b"\n")
        *events, rest = buffer.split(b"\n\n")
        self._scan = bytearray(rest)
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:") and _has_content(line[5:].strip()):
                    return True
        return False

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        self._finish(None)


def _has_content(data: bytes) -> bool:
    if not data or data == b"[DONE]":
        return False
    try:
        chunk = orjson.loads(data)
        content = chunk["choices"][0]["delta"].get("content")
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return False
    return isinstance(content, str) and content != ""


async def _connect(target: _Target, connection: _Connection) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_connection(lambda: connection, target.host, target.port)


def _error_kind(error: BaseException) -> str:
    return f"connect: {type(error).__name__}"


# ---- sequential and ttft -------------------------------------------------------------------


async def _exchange(
    target: _Target, connection: _Connection | None, timeout_s: float, first_content: bool
) -> tuple[_Connection | None, _Connection | None, str | None]:
    """One request on `connection` (or a new one): (connection to reuse, finished, error)."""
    if connection is None or connection.closed:
        connection = _Connection(collect_headers=True, first_content=first_content)
        try:
            await asyncio.wait_for(_connect(target, connection), timeout_s)
        except OSError as error:  # TimeoutError from wait_for is an OSError too
            return None, None, _error_kind(error)
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[str | None] = loop.create_future()

    def on_done(_: _Connection, failure: str | None) -> None:
        if not finished.done():
            finished.set_result(failure)

    connection.send(target.request, on_done, 0)
    try:
        failure = await asyncio.wait_for(finished, timeout_s)
    except TimeoutError:
        connection.abort()
        return None, None, "timeout"
    reusable = connection if failure is None and connection.keep_alive else None
    if reusable is None and connection.transport is not None:
        connection.transport.close()
    return reusable, connection, failure


async def _closed_loop(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    counts: tuple[int, int],
    timeout_s: float,
    first_content: bool,
) -> LatencyResult:
    n, warmup = counts
    if n < 0 or warmup < 0:
        raise ValueError("n and warmup must not be negative")
    target = _target(url, body, headers)
    result = LatencyResult()
    connection: _Connection | None = None
    started = 0
    try:
        for index in range(warmup + n):
            if index == warmup:
                started = time.perf_counter_ns()
            connection, finished, error = await _exchange(
                target, connection, timeout_s, first_content
            )
            if index >= warmup:
                _record_closed(result, finished, error, first_content)
    finally:
        if connection is not None and connection.transport is not None:
            connection.transport.close()
    result.elapsed_s = (time.perf_counter_ns() - started) / _NS if n else 0.0
    return result


def _record_closed(
    result: LatencyResult, finished: _Connection | None, error: str | None, first_content: bool
) -> None:
    if finished is None or error is not None:
        result.errors += 1
        _count(result.error_kinds, error or "unknown")
        return
    _count(result.statuses, finished.status)
    result.last_headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in finished.headers
    }
    _record_overhead(result.overhead_ms, finished.overhead)
    if not 200 <= finished.status < 300:
        result.errors += 1
        _count(result.error_kinds, f"status {finished.status}")
        return
    if first_content and not finished.first_content_ns:
        result.errors += 1
        _count(result.error_kinds, "no streamed content")
        return
    result.ok += 1
    total = (finished.done_ns - finished.sent_ns) / _NS
    first = (finished.first_content_ns - finished.sent_ns) / _NS if first_content else total
    result.latencies_s.append(first)
    result.totals_s.append(total)


def _record_overhead(values: list[float], raw: bytes | None) -> None:
    if raw is None:
        return
    with contextlib.suppress(ValueError):
        values.append(float(raw))


async def sequential(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    n: int,
    warmup: int,
    *,
    timeout_s: float = 30.0,
) -> LatencyResult:
    """`warmup` then `n` requests, one at a time on one keep-alive connection.

    Latency per request is `time.perf_counter_ns()` from the write to the complete response.
    A connection the server closes (or that fails) is replaced for the next request.
    """
    return await _closed_loop(url, body, headers, (n, warmup), timeout_s, first_content=False)


async def ttft(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    n: int,
    warmup: int,
    *,
    timeout_s: float = 30.0,
) -> LatencyResult:
    """Like `sequential`, for streams: `latencies_s` is the time to the first content chunk.

    For server-sent events that is the first `data:` event whose JSON has a non-empty
    `choices[0].delta.content`; for AWS event streams the first `contentBlockDelta` frame.
    `totals_s` is the time to the end of the response. A 2xx response without streamed
    content counts as an error (`"no streamed content"`).
    """
    return await _closed_loop(url, body, headers, (n, warmup), timeout_s, first_content=True)


# ---- open loop -----------------------------------------------------------------------------


class _OpenLoop:
    """Connection pool and bookkeeping of one open-loop run (callback-driven, no task per
    request)."""

    def __init__(self, target: _Target, result: OpenLoopResult, max_connections: int) -> None:
        self._target = target
        self._result = result
        self._max = max_connections
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._pending: deque[int] = deque()
        self._opening = 0
        self._open = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_done = self._done  # bound once

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    def dispatch(self, scheduled_ns: int) -> None:
        while self._idle:
            connection = self._idle.pop()
            if connection.closed:  # the server closed it while idle: not this request's fault
                self._open -= 1
                continue
            self._send(connection, scheduled_ns)
            return
        self._pending.append(scheduled_ns)
        if self._open + self._opening < self._max:
            self._open_connection()

    def drop_pending(self) -> int:
        dropped = len(self._pending)
        self._pending.clear()
        return dropped

    def _send(self, connection: _Connection, scheduled_ns: int) -> None:
        self._busy.add(connection)
        self._result.sent += 1
        connection.send(self._target.request, self._on_done, scheduled_ns)

    def _open_connection(self) -> None:
        self._opening += 1
        task = asyncio.get_running_loop().create_task(self._connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self) -> None:
        connection = _Connection()
        try:
            await _connect(self._target, connection)
        except OSError as error:
            self._opening -= 1
            self._connect_failed(_error_kind(error))
            return
        self._opening -= 1
        self._open += 1
        self._result.connections_opened += 1
        self._take_next(connection)

    def _connect_failed(self, kind: str) -> None:
        if self._pending:  # the request that was waiting for this connection fails
            self._pending.popleft()
            self._fail(kind)
        if self._pending and self._open + self._opening < self._max:
            self._open_connection()

    def _fail(self, kind: str) -> None:
        self._result.errors += 1
        _count(self._result.error_kinds, kind)

    def _take_next(self, connection: _Connection) -> None:
        if self._pending:
            self._send(connection, self._pending.popleft())
        else:
            self._idle.append(connection)

    def _done(self, connection: _Connection, error: str | None) -> None:
        self._busy.discard(connection)
        result = self._result
        if error is None:
            status = connection.status
            _count(result.statuses, status)
            _record_overhead(result.overhead_ms, connection.overhead)
            if 200 <= status < 300:
                result.ok += 1
                result.latencies_s.append((connection.done_ns - connection.scheduled_ns) / _NS)
                result.service_s.append((connection.done_ns - connection.sent_ns) / _NS)
            else:
                self._fail(f"status {status}")
        else:
            self._fail(error)
        if error is None and connection.keep_alive and not connection.closed:
            self._take_next(connection)
            return
        self._retire(connection)

    def _retire(self, connection: _Connection) -> None:
        self._open -= 1
        if connection.transport is not None and not connection.closed:
            connection.transport.close()
        connection.closed = True
        if self._pending and self._open + self._opening < self._max:
            self._open_connection()

    def sweep(self, timeout_ns: int) -> None:
        """Fail requests older than the timeout (their connections are dropped)."""
        now = time.perf_counter_ns()
        for connection in [c for c in self._busy if now - c.sent_ns > timeout_ns]:
            self._busy.discard(connection)
            connection.abort()
            self._fail("timeout")
            self._retire(connection)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for connection in [*self._idle, *self._busy]:
            connection.abort()
        self._idle.clear()
        self._busy.clear()


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class _Ticker:
    """Calls `callback` on the event loop at given `time.perf_counter_ns()` instants.

    uvloop's timers (libuv) have millisecond resolution, and a timer due in under half a
    millisecond fires on the next loop pass, so waiting with them either wakes up to ~1 ms late
    or spins the loop. On Linux a `timerfd` on CLOCK_MONOTONIC (the clock behind
    `perf_counter_ns` there) wakes the loop's epoll within microseconds, without spinning;
    elsewhere this falls back to `loop.call_later`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._fd = -1
        self._settime: Callable[..., int] | None = None
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self._value: Any = self._spec.it_value
        clock = time.get_clock_info("perf_counter").implementation
        if sys.platform == "linux" and "CLOCK_MONOTONIC" in clock and "RAW" not in clock:
            with contextlib.suppress(OSError, AttributeError):
                self._open_timerfd()

    @property
    def precise(self) -> bool:
        return self._fd >= 0

    def _open_timerfd(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        create = libc.timerfd_create
        create.argtypes = (ctypes.c_int, ctypes.c_int)
        create.restype = ctypes.c_int
        settime = libc.timerfd_settime
        settime.argtypes = (
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.POINTER(_Itimerspec),
        )
        settime.restype = ctypes.c_int
        fd = int(create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd = fd
        self._settime = settime
        self._loop.add_reader(fd, self._fired)

    def at(self, deadline_ns: int) -> None:
        """Call back at `deadline_ns` (at once if it has passed); replaces any earlier call."""
        if self._settime is not None:
            value = self._value  # one preallocated itimerspec, updated in place
            value.tv_sec, value.tv_nsec = divmod(max(deadline_ns, 1), _NS)  # all-zero disarms
            if self._settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
                raise OSError(ctypes.get_errno(), "timerfd_settime failed")
            return
        if self._handle is not None:
            self._handle.cancel()
        delay = max(0.0, (deadline_ns - time.perf_counter_ns()) / _NS)
        self._handle = self._loop.call_later(delay, self._callback)

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return  # re-armed after it expired: nothing due yet
        self._callback()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._settime = None


class _Schedule:
    """Dispatches request i at start + i / rate, from ticker callbacks (no task per request)."""

    def __init__(
        self, pool: _OpenLoop, result: OpenLoopResult, start_ns: int, timeout_ns: int
    ) -> None:
        loop = asyncio.get_running_loop()
        self._pool = pool
        self._total = result.scheduled
        self._interval_ns = _NS / result.target_rate
        self._start_ns = start_ns
        self._end_ns = start_ns + int(result.duration_s * _NS)
        self._timeout_ns = timeout_ns
        self._next_sweep = start_ns
        self._index = 0
        self._lag = result.schedule_lag_s
        self.finished: asyncio.Future[None] = loop.create_future()
        self.ticker = _Ticker(loop, self._tick)

    def start(self) -> None:
        self.ticker.at(self._start_ns)

    def _tick(self) -> None:
        now = time.perf_counter_ns()
        index, total = self._index, self._total
        while index < total:
            due = self._start_ns + int(index * self._interval_ns)
            if due > now:
                break
            self._lag.append((now - due) / _NS)
            self._pool.dispatch(due)
            index += 1
        self._index = index
        if now >= self._next_sweep:
            self._pool.sweep(self._timeout_ns)
            self._next_sweep = now + int(_SWEEP_INTERVAL_S * _NS)
        if index >= total and now >= self._end_ns:
            if not self.finished.done():
                self.finished.set_result(None)
            return
        wake = self._start_ns + int(index * self._interval_ns) if index < total else self._end_ns
        self.ticker.at(min(wake, self._next_sweep))


async def open_loop(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    rate_per_s: float,
    duration_s: float,
    max_connections: int = 256,
    *,
    timeout_s: float = 30.0,
) -> OpenLoopResult:
    """Send requests at `rate_per_s` for `duration_s`, whatever the responses.

    Request i is scheduled at start + i / rate. When due it takes an idle keep-alive
    connection, or opens a new one (at most `max_connections`, connecting ones included), or
    waits in a queue; latency counts from the scheduled time. Requests still queued when the
    window closes are `dropped`; requests in flight then get up to `timeout_s` to finish.
    """
    if rate_per_s <= 0 or duration_s <= 0 or max_connections < 1:
        raise ValueError("rate, duration and max_connections must be positive")
    target = _target(url, body, headers)
    total = int(rate_per_s * duration_s)
    result = OpenLoopResult(target_rate=rate_per_s, duration_s=duration_s, scheduled=total)
    pool = _OpenLoop(target, result, max_connections)
    timeout_ns = int(timeout_s * _NS)
    start_ns = time.perf_counter_ns() + 5_000_000  # a little lead to settle the first timer
    schedule = _Schedule(pool, result, start_ns, timeout_ns)
    try:
        schedule.start()
        await schedule.finished
        result.dropped = pool.drop_pending()
        drain_deadline = time.perf_counter_ns() + timeout_ns
        while pool.in_flight and time.perf_counter_ns() < drain_deadline:
            pool.sweep(timeout_ns)
            await asyncio.sleep(0.002)
        pool.sweep(0)  # anything still in flight has now timed out
    finally:
        schedule.ticker.close()
        await pool.close()
    result.elapsed_s = (time.perf_counter_ns() - start_ns) / _NS
    result.achieved_rate = result.ok / duration_s
    result.send_rate = result.sent / duration_s
    return result


# ---- wrk -----------------------------------------------------------------------------------


def _wrk_binary() -> str:
    if os.access(WRK_PATH, os.X_OK):
        return WRK_PATH
    found = shutil.which("wrk")
    if found is None:
        raise WrkError(f"wrk not found at {WRK_PATH} or on PATH; install it: apt-get install wrk")
    return found


def run_wrk(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    connections: int,
    duration_s: float,
    threads: int = 1,
    cpu: int | None = None,
) -> WrkResult:
    """Closed-loop load with wrk and post.lua (`taskset -c cpu` when `cpu` is given).

    wrk only takes whole seconds, so `duration_s` must be a whole number ≥ 1. wrk's own
    request timeout is set to 10 s (timeouts count as errors).
    """
    seconds = round(duration_s)
    if seconds < 1 or not math.isclose(seconds, duration_s):
        raise ValueError(f"wrk runs for whole seconds (≥ 1), got {duration_s}")
    if connections < threads or threads < 1:
        raise ValueError("need threads ≥ 1 and connections ≥ threads")
    command = [
        _wrk_binary(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        f"--script={WRK_SCRIPT}",
        url,
    ]
    if cpu is not None:
        if not os.access(TASKSET_PATH, os.X_OK):
            raise WrkError(f"{TASKSET_PATH} not found; install util-linux to pin wrk to a core")
        command = [TASKSET_PATH, "-c", str(cpu), *command]
    with tempfile.NamedTemporaryFile(prefix="bench-body-", suffix=".json") as body_file:
        body_file.write(body)
        body_file.flush()
        env = {
            **os.environ,
            "BENCH_BODY_FILE": body_file.name,
            "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in headers.items()),
        }
        completed = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
        )
    return _parse_wrk(completed, command)


def _parse_wrk(completed: subprocess.CompletedProcess[str], command: list[str]) -> WrkResult:
    line = next(
        (line for line in completed.stdout.splitlines() if line.startswith("BENCHJSON ")), None
    )
    if completed.returncode != 0 or line is None:
        raise WrkError(
            f"wrk exited with {completed.returncode} and no BENCHJSON line;"
            f" stdout: {completed.stdout.strip()!r}; stderr: {completed.stderr.strip()!r}"
        )
    data = orjson.loads(line.removeprefix("BENCHJSON "))
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=float(data["duration_s"]),
        errors=int(data["errors"]),
        rps=float(data["rps"]),
        p50_us=float(data["p50"]),
        p90_us=float(data["p90"]),
        p99_us=float(data["p99"]),
        p999_us=float(data["p999"]),
        max_us=float(data["max"]),
        mean_us=float(data["mean"]),
        error_detail={str(k): int(v) for k, v in data.get("error_detail", {}).items()},
        command=command,
    )


# ---- running ---------------------------------------------------------------------------------


def run_async(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run one of the async tools to completion on a fresh uvloop event loop."""
    return uvloop.run(coroutine)


def _header_args(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep:
            raise SystemExit(f"--header takes 'name: value', got {value!r}")
        headers[name.strip()] = rest.strip()
    return headers


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description="Run one load tool and print its figures."
    )
    parser.add_argument("tool", choices=["sequential", "ttft", "open-loop", "wrk"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", action="store_true", help="send a streaming request body")
    parser.add_argument("--header", action="append", default=[], help="'name: value'")
    parser.add_argument("-n", type=int, default=1000, help="requests (sequential, ttft)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s (open-loop)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds (open-loop, wrk)")
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--cpu", type=int, default=None, help="pin wrk with taskset")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: prints one JSON object of figures."""
    args = _parse_args(argv)
    body = openai_body(stream=args.stream or args.tool == "ttft")
    headers = _header_args(args.header)
    report: dict[str, object]
    if args.tool == "wrk":
        report = asdict(
            run_wrk(args.url, body, headers, args.connections, args.duration, 1, args.cpu)
        )
    else:
        report = _report(run_async(_run_tool(args, body, headers)))
    sys.stdout.write(
        orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
    )


async def _run_tool(
    args: argparse.Namespace, body: bytes, headers: Mapping[str, str]
) -> LatencyResult | OpenLoopResult:
    if args.tool == "sequential":
        return await sequential(args.url, body, headers, args.n, args.warmup)
    if args.tool == "ttft":
        return await ttft(args.url, body, headers, args.n, args.warmup)
    return await open_loop(args.url, body, headers, args.rate, args.duration, args.max_connections)


def _report(outcome: LatencyResult | OpenLoopResult) -> dict[str, object]:
    """The result with every list of seconds (or overhead milliseconds) summarised."""
    report: dict[str, object] = {}
    for name, value in asdict(outcome).items():
        report[name] = summarise(value) if isinstance(value, list) else value
    if isinstance(report.get("overhead_ms"), dict):  # already in ms: undo summarise's scaling
        report["overhead_ms"] = summarise([v / 1000.0 for v in outcome.overhead_ms])
    return report


if __name__ == "__main__":
    main()
