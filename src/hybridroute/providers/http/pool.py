"""A lean HTTP/1.1 client for upstream calls: one keep-alive connection pool per origin.

Built on an asyncio protocol with the httptools parser because the request path cannot afford a
general-purpose client: aiohttp spends about 130 µs of CPU per call, this about 40 µs (see
docs/performance.md). It does what the routes need and no more:

- keep-alive connections, at most `max_connections` per origin, idle ones reused (newest first)
  and closed after `idle_timeout_s`; callers wait in order for a free connection;
- TLS for https origins (system trust store, SNI);
- responses with Content-Length, chunked or close-delimited bodies, read whole or as a stream,
  with back-pressure (reading pauses while unread data piles up);
- a connection whose response was not read to the end, or whose request was cancelled, is
  closed rather than reused.

Failures raise `HttpError` subclasses; routes map them to the gateway's typed errors.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = [
    "ConnectFailed",
    "ConnectTimeout",
    "ConnectionLost",
    "HttpError",
    "HttpPool",
    "InvalidResponse",
    "Response",
    "ResponseCutOff",
]

_PAUSE_AT = 256 * 1024  # unread bytes at which reading from the socket pauses


class HttpError(Exception):
    """Base of the client's transport failures."""


class ConnectFailed(HttpError):
    """The connection could not be made (refused, unreachable, TLS handshake failed)."""


class ConnectTimeout(HttpError):
    """The connection was not made within the connect timeout."""


class ConnectionLost(HttpError):
    """The connection closed before the response was complete."""


class ResponseCutOff(HttpError):
    """The connection closed after the response headers, before the body's end."""


class InvalidResponse(HttpError):
    """The peer sent something that is not HTTP/1.1."""


class Response:
    """A response whose headers have arrived; the body is read with `read()` or `chunks()`."""

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: _Connection, status: int, headers: dict[str, str]) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers

    async def read(self) -> bytes:
        """The whole body."""
        parts = [chunk async for chunk in self.chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        conn = self._conn
        while True:
            chunk = await conn.next_chunk()
            if chunk is None:
                return
            yield chunk


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: writes a request, parses the response it gets back."""

    def __init__(self) -> None:
        # Built by the loop in its own context: look it up once, use it for every future.
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: dict[str, str] = {}
        self._header_name = b""
        self._head: asyncio.Future[Response] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._keep_alive = False
        self._error: HttpError | None = None
        self.closed = False
        self.idle_since = 0.0
        self.gone: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP or TLS transport (uvloop's do not subclass asyncio.Transport, hence no check).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(InvalidResponse("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(InvalidResponse(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.gone.done():
            self.gone.set_result(None)
        if self._complete:
            return
        reason = f": {exc}" if exc else ""
        head = self._head
        if head is not None and head.done():
            if exc is None and not (
                "content-length" in self._headers or "transfer-encoding" in self._headers
            ):
                self._complete = True  # a close-delimited body ends with the connection
                self._wake()
                return
            self._fail(ResponseCutOff(f"the connection closed in the middle of the body{reason}"))
        else:
            self._fail(ConnectionLost(f"the connection closed before a response{reason}"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if name:
            self._header_name = name
            self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        else:  # a header value split across reads
            key = self._header_name.decode("latin-1").lower()
            self._headers[key] += value.decode("latin-1")

    def on_headers_complete(self) -> None:
        head = self._head
        if head is not None and not head.done():
            head.set_result(Response(self, self._parser.get_status_code(), self._headers))

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered >= _PAUSE_AT and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        # should_keep_alive() is only meaningful inside this callback: the parser resets after.
        self._keep_alive = self._parser.should_keep_alive()
        self._complete = True
        self._wake()

    # -- used by the pool and the response -------------------------------------------------

    def send(self, data: bytes) -> asyncio.Future[Response]:
        """Write a whole request; the future resolves when the response headers arrive."""
        self._head = self._loop.create_future()
        self._headers = {}
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._keep_alive = False
        if self._transport is None:
            raise ConnectionLost("the connection is not open")
        self._transport.write(data)
        return self._head

    async def next_chunk(self) -> bytes | None:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered < _PAUSE_AT // 2 and self._transport:
                    self._paused = False
                    self._transport.resume_reading()
                return chunk
            if self._complete:
                return None
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            await self._waiter

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: HttpError) -> None:
        self._error = error
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        self._wake()
        self.close()


class _Exchange:
    """One request on a pooled connection, as an async context manager (a plain class: this
    runs for every upstream call, and a generator-based context manager costs more)."""

    __slots__ = ("_conn", "_data", "_pool")

    def __init__(self, pool: HttpPool, data: bytes) -> None:
        self._pool = pool
        self._data = data
        self._conn: _Connection | None = None

    async def __aenter__(self) -> Response:
        self._conn = conn = await self._pool._acquire()
        try:
            return await conn.send(self._data)
        except BaseException:
            self._pool._release(conn)
            raise

    async def __aexit__(self, *exc: object) -> None:
        # Reused only if the response was read to its end; otherwise (cancelled, abandoned,
        # failed) the connection is in an unknown state and is closed.
        if self._conn is not None:
            self._pool._release(self._conn)


class HttpPool:
    """Keep-alive connections to one origin (scheme://host[:port])."""

    def __init__(
        self,
        origin: str,
        *,
        max_connections: int = 256,
        connect_timeout_s: float = 3.0,
        idle_timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{origin!r} is not an http(s) origin")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = parts.port is None or parts.port == (443 if parts.scheme == "https" else 80)
        host_header = f"[{self._host}]" if ":" in self._host else self._host
        self.host_header = host_header if default_port else f"{host_header}:{self._port}"
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self._max = max_connections
        self._connect_timeout = connect_timeout_s
        self._idle_timeout = idle_timeout_s
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> _Exchange:
        """`async with pool.request(...) as response:` sends a request and yields the response
        once its headers are in."""
        lines = [f"{method} {target} HTTP/1.1\r\nhost: {self.host_header}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        lines.append(f"content-length: {len(body)}\r\n\r\n")
        return _Exchange(self, "".join(lines).encode("latin-1") + body)

    async def _acquire(self) -> _Connection:
        if self._closed:
            raise ConnectFailed(f"the connection pool for {self.origin} is closed")
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_timeout:
                return conn
            conn.close()
            self._open -= 1
        if self._open < self._max:
            self._open += 1
            try:
                return await self._connect()
            except BaseException:
                self._open -= 1
                self._wake_waiter()
                raise
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            handed = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                handed_late = waiter.result()
                if handed_late is not None:
                    self._release(handed_late)
                else:
                    self._wake_waiter()  # pass the free slot on
            raise
        if handed is None:  # a slot freed up: open a connection of our own
            return await self._acquire()
        return handed

    async def check_connect(self) -> None:
        """Open a fresh connection and close it again (a health probe of the network path)."""
        conn = await self._connect()
        conn.close()
        await asyncio.wait([conn.gone], timeout=1.0)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            raise ConnectTimeout(
                f"connecting to {self.origin} took longer than {self._connect_timeout:g}s"
            ) from None
        except ssl.SSLError as exc:
            raise ConnectFailed(f"TLS handshake with {self.origin} failed: {exc}") from exc
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConnectFailed(f"cannot connect to {self.origin}: {reason}") from exc
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.reusable and not self._closed:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(conn)
                    return
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            return
        conn.close()
        self._open -= 1
        self._wake_waiter()

    def _wake_waiter(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        """Close idle connections (waiting briefly for them to go); busy ones close on release."""
        self._closed = True
        closing = [conn.gone for conn in self._idle]
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectFailed(f"the pool for {self.origin} closed"))
        if closing:
            await asyncio.wait(closing, timeout=1.0)

    def __repr__(self) -> str:
        return (
            f"<HttpPool {self.origin} open={self._open} idle={len(self._idle)} "
            f"waiting={len(self._waiters)}>"
        )
