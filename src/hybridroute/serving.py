"""Running ASGI apps on loopback sockets: the gateway, the simulators, the test servers.

`EmbeddedServer` serves an app under uvicorn inside the caller's event loop (several can share one
loop, as in `hybridroute demo`); it leaves signal handling to whoever owns the process.
`ThreadedServer` runs one in its own thread and event loop, so synchronous clients (the stock
OpenAI SDK, botocore) can call it from the main thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
from collections.abc import Generator
from types import TracebackType
from typing import Any

import uvicorn

__all__ = ["REUSE_PORT", "EmbeddedServer", "ThreadedServer", "bind_socket"]


REUSE_PORT = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
"""Whether processes can each listen on one port and have the kernel spread connections."""


def bind_socket(
    host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False, listen: bool = True
) -> socket.socket:
    """A TCP socket bound to host:port, listening unless `listen` is false. Port 0 picks a free
    port; a taken port raises with advice. `reuse_port`: other processes of this user may bind
    the same port too (Linux spreads new connections across the listening ones)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno,
            f"cannot listen on {host}:{port}: {exc.strerror}; "
            "is another process using that port? pass a different --port",
        ) from exc
    if listen:
        sock.listen(2048)
    sock.setblocking(False)
    return sock


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The process owner (CLI, test harness) decides what signals do.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn exits the process when the app's startup fails; the owner of an embedded
        # server decides that, so it gets an exception it can report instead.
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            raise RuntimeError("the application's startup failed; see the log above") from None


class EmbeddedServer:
    """Serve an ASGI app on a loopback socket inside the running event loop."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "server",
        lifespan: str = "auto",
        sock: socket.socket | None = None,
    ) -> None:
        self.name = name
        self._app = app
        self._host = host
        self._port = port
        self._lifespan = lifespan
        self._sock = sock  # a listening socket to share (worker processes), else one is bound
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        sock = self._sock if self._sock is not None else bind_socket(self._host, self._port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan=self._lifespan,  # type: ignore[arg-type]
            log_level="warning",
            access_log=False,
            http="httptools",
            loop="none",
            timeout_graceful_shutdown=5,
            # No X-Forwarded-* rewriting: the client address is the peer's own, so the admin
            # API's loopback rule and per-address rate limit cannot be fooled by a header.
            # No `server` header either: fewer bytes on every response.
            proxy_headers=False,
            server_header=False,
        )
        server = _QuietServer(config)
        self._server = server
        self._task = asyncio.get_running_loop().create_task(
            server.serve(sockets=[sock]), name=f"serve-{self.name}"
        )
        while not server.started:
            if self._task.done():
                sock.close()
                exc = self._task.exception()
                reason = str(exc) if exc else "its startup failed; see the log above"
                raise RuntimeError(f"{self.name} failed to start: {reason}") from exc
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = None
        self._task = None

    async def wait(self) -> None:
        """Wait until the server stops on its own (e.g. a failed lifespan)."""
        if self._task is not None:
            await self._task

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        state = "running" if self._task is not None else "stopped"
        return f"<EmbeddedServer {self.name} {self.url} {state}>"


class ThreadedServer:
    """Serve an ASGI app from a background thread with its own event loop."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, name: str = "server"):
        self._embedded = EmbeddedServer(app, host=host, port=port, name=name)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return self._embedded.url

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("server is not running")
        return self._loop

    def start(self, timeout: float = 30.0) -> ThreadedServer:
        self._thread = threading.Thread(
            target=self._run, name=f"thread-{self._embedded.name}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{self._embedded.name} did not start within {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"{self._embedded.name} failed to start") from self._error
        return self

    def _run(self) -> None:
        import uvloop

        uvloop.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self._embedded.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread, re-raised there
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self._embedded.stop()

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
