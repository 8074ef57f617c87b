"""`hybridroute demo`: both upstream simulators, the gateway on its embedded default, and light
synthetic traffic, all in one process on loopback, with a banner saying where to look. While it
runs, `<data-dir>/demo.json` says where the gateway and the simulators listen (what
`hybridroute drill` reads); it is removed when the demo stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hybridroute.app import create_app
from hybridroute.demo.config import DEMO_DATA_DIR, DEMO_STORE_FILE, embedded_config
from hybridroute.demo.traffic import TrafficGenerator
from hybridroute.serving import EmbeddedServer
from hybridroute.simulators.bedrock import (
    DEMO_ACCESS_KEY_ID,
    DEMO_SECRET_ACCESS_KEY,
    create_bedrock_app,
)
from hybridroute.simulators.knobs import Knobs
from hybridroute.simulators.mcp_server import create_mcp_http_app

__all__ = ["DEMO_STATE_FILE", "DemoOptions", "run_demo"]

DEMO_STATE_FILE = "demo.json"


@dataclass(frozen=True)
class DemoOptions:
    port: int = 8080
    host: str = "127.0.0.1"
    traffic: bool = True
    rate: float = 2.0
    report_every_s: float = 15.0
    data_dir: str = DEMO_DATA_DIR


def _cli_command() -> str:
    """How the user can run this CLI: `hybridroute` if that is on PATH, else its path."""
    beside = Path(sys.executable).with_name("hybridroute")
    on_path = shutil.which("hybridroute")
    if on_path is not None and Path(on_path).resolve() == beside.resolve():
        return "hybridroute"
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


def _banner(gateway: str, bedrock: str, mcp: str, options: DemoOptions) -> str:
    curl_body = '{"model":"default","messages":[{"role":"user","content":"hello"}]}'
    traffic = (
        f"Synthetic traffic: {options.rate:g} requests/s of mixed operation types "
        "(--no-traffic turns it off)."
        if options.traffic
        else "No synthetic traffic (--no-traffic)."
    )
    store = str(Path(options.data_dir, DEMO_STORE_FILE))
    return f"""
hybridroute demo is running (embedded default: local simulators, spend in {store}, in-memory cache)

  gateway             {gateway}    POST /v1/chat/completions (OpenAI-compatible)
  health / ready      {gateway}/health    {gateway}/ready
  models              {gateway}/v1/models
  health report       {gateway}/admin/health/status    (or: hybridroute health)
  metrics             {gateway}/metrics    alerts: {gateway}/admin/alerts
  bedrock simulator   {bedrock}    knobs: {bedrock}/_sim/knobs
  mcp simulator       {mcp}/mcp    knobs: {mcp}/_sim/knobs

Try:
  {_cli_command()} route --url {gateway} --op emergency "Is the primary database down?"
  curl -s {gateway}/v1/chat/completions -H 'content-type: application/json' \\
       -H 'x-operation-type: standard' -d '{curl_body}'
Simulate a Direct Bedrock outage and watch fallback-eligible operations move to mcp:
  curl -s -X PATCH {bedrock}/_sim/knobs -d '{{"outage": true}}'
  {_cli_command()} health --url {gateway}     # the health score, routes, recommendations
  curl -s -X PATCH {bedrock}/_sim/knobs -d '{{"outage": false}}'
Where the money went, and the day so far:
  {_cli_command()} cost --url {gateway}
  {_cli_command()} report daily --url {gateway}
Operate it (flags, rollback, routing versions, the audit trail; see docs/operations.md):
  {_cli_command()} flags list --url {gateway}
  {_cli_command()} rollback --level 2 --url {gateway} --reason drill
  {_cli_command()} flags enable-all --url {gateway}
  {_cli_command()} audit verify --url {gateway}

{traffic} Ctrl-C stops everything.
"""


async def run_demo(
    options: DemoOptions,
    *,
    out: Callable[[str], None],
    stop: asyncio.Event | None = None,
) -> None:
    """Run the demo until SIGINT/SIGTERM or until `stop` is set."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    bedrock_app = create_bedrock_app(
        Knobs(latency_ms=120.0, jitter_ms=40.0, stream_chunks=6, stream_chunk_delay_ms=20.0),
        credentials={DEMO_ACCESS_KEY_ID: DEMO_SECRET_ACCESS_KEY},
    )
    mcp_app = create_mcp_http_app(Knobs(latency_ms=80.0, jitter_ms=30.0))
    async with contextlib.AsyncExitStack() as stack:
        bedrock = await stack.enter_async_context(
            EmbeddedServer(bedrock_app, host=options.host, name="bedrock-simulator", lifespan="on")
        )
        mcp = await stack.enter_async_context(
            EmbeddedServer(mcp_app, host=options.host, name="mcp-simulator", lifespan="on")
        )
        config = embedded_config(
            bedrock_url=bedrock.url,
            mcp_url=f"{mcp.url}/mcp",
            port=options.port,
            data_dir=options.data_dir,
        )
        gateway = await stack.enter_async_context(
            EmbeddedServer(
                create_app(config),
                host=options.host,
                port=options.port,
                name="gateway",
                lifespan="on",
            )
        )
        where = {"gateway": gateway.url, "bedrock_sim": bedrock.url, "mcp_sim": mcp.url}
        stack.callback(_write_state(options.data_dir, where).unlink, missing_ok=True)
        out(_banner(gateway.url, bedrock.url, mcp.url, options))
        if options.traffic:
            generator = TrafficGenerator(gateway.url, rate=options.rate)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(generator.run(stop))
                tasks.create_task(_report(generator, stop, options.report_every_s, out))
            out(generator.stats.line())
        else:
            await stop.wait()
        out("stopping the demo")


def _write_state(data_dir: str, where: dict[str, str]) -> Path:
    """Write `<data-dir>/demo.json` (whole or not at all) and return its path."""
    state = Path(data_dir, DEMO_STATE_FILE)
    state.parent.mkdir(parents=True, exist_ok=True)
    partial = state.with_name(f".{DEMO_STATE_FILE}.{os.getpid()}")
    partial.write_text(json.dumps({**where, "pid": os.getpid()}) + "\n")
    partial.replace(state)
    return state


async def _report(
    generator: TrafficGenerator, stop: asyncio.Event, every_s: float, out: Callable[[str], None]
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if not stop.is_set():
            out(generator.stats.line())
