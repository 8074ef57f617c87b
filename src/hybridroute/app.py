"""The gateway as one ASGI application, and the function that serves it.

The ASGI lifespan builds the `Runtime` from the config, starts it (routes connect), and closes
it on shutdown; requests are served by the data plane against the current runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Callable

from hybridroute._clock import Clock
from hybridroute.api import DataPlane
from hybridroute.api.auth import AdminAuth
from hybridroute.api.http import Receive, Scope, Send
from hybridroute.config.schema import GatewayConfig
from hybridroute.errors import GatewayError
from hybridroute.runtime import STANDALONE, Runtime, WorkerRole
from hybridroute.serving import EmbeddedServer

__all__ = ["GatewayApp", "create_app", "run_gateway"]

log = logging.getLogger("hybridroute")

_GC_YOUNG_THRESHOLD = 20_000


class GatewayApp:
    """ASGI app: lifespan owns the runtime; HTTP goes to the data plane."""

    def __init__(
        self, config: GatewayConfig, *, clock: Clock | None = None, role: WorkerRole = STANDALONE
    ) -> None:
        self.config = config
        self.runtime: Runtime | None = None
        self._clock = clock
        self._role = role
        self._data_plane = DataPlane(
            lambda: self.runtime,
            config.server.max_body_bytes,
            admin=AdminAuth(config.admin),
            role=role,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self._data_plane(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        runtime: Runtime | None = None
        try:
            runtime = Runtime(self.config, clock=self._clock, role=self._role)
            await runtime.start()
        except Exception as exc:
            if isinstance(exc, GatewayError):  # an operator's problem, said in words
                log.error("gateway failed to start: %s", exc.message)
            else:
                log.exception("gateway failed to start")
            if runtime is not None:
                await runtime.aclose()
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        self.runtime = runtime
        # Everything built so far (modules, botocore's service data, schemas, the runtime) lives
        # as long as the process: moving it out of the collector's reach keeps full collections
        # short, which is what kept the tail latency high under load.
        gc.freeze()
        # With the long-lived objects frozen, young collections find little to keep; making
        # them rarer spares work on the request path without letting garbage pile up (most of
        # it is freed by reference counting anyway).
        gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        self.runtime = None
        await runtime.aclose()
        await send({"type": "lifespan.shutdown.complete"})


def create_app(
    config: GatewayConfig, *, clock: Clock | None = None, role: WorkerRole = STANDALONE
) -> GatewayApp:
    """The gateway's ASGI app for a validated config; `role`: its part among several worker
    processes (the only process by default)."""
    return GatewayApp(config, clock=clock, role=role)


async def run_gateway(  # noqa: PLR0913 - where to listen, and the worker process's part
    config: GatewayConfig,
    *,
    host: str,
    port: int,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    sock: socket.socket | None = None,
    role: WorkerRole = STANDALONE,
    internal_port: int | None = None,
) -> None:
    """Serve the gateway until SIGINT/SIGTERM (or `stop` is set). `sock`: a listening socket
    shared with other worker processes (else one is bound to host:port). `internal_port`: the
    leader worker also serves on this loopback port, where the followers reach it."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    app = create_app(config, role=role)
    server = EmbeddedServer(app, host=host, port=port, name="gateway", lifespan="on", sock=sock)
    internal = (
        EmbeddedServer(app, port=internal_port, name="gateway-internal", lifespan="off")
        if internal_port is not None
        else None
    )
    await server.start()
    if internal is not None:
        await internal.start()
    if on_ready is not None:
        on_ready(server.url)
    try:
        await stop.wait()
    finally:
        if internal is not None:
            await internal.stop()
        await server.stop()
