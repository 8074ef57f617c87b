"""The benchmark's measurements, each a plain function over a running gateway and the upstream.

Every latency figure is taken twice: through the gateway, and straight to the upstream with the
equivalent request (a Bedrock Converse call, which is what both gateways make). Their difference
is the gateway's added latency. Latency at concurrency 1 and throughput come from wrk (written in
C, so the client adds little noise of its own); time to first token and the gateway's
self-reported overhead from the Python tools; fixed-rate latency from the open-loop generator;
CPU time per request and memory from /proc.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench import loadgen, payloads
from bench.processes import cpu_seconds, rss_mb

__all__ = [
    "MODEL_ID",
    "Baseline",
    "Figures",
    "Target",
    "converse_body",
    "measure_baseline",
    "measure_gateway",
]

MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
Progress = Callable[[str], None]


def converse_body() -> bytes:
    """The Converse request equivalent to `payloads.openai_body()` (what a gateway sends)."""
    openai = orjson.loads(payloads.openai_body(stream=False))
    system = [{"text": m["content"]} for m in openai["messages"] if m["role"] == "system"]
    messages = [
        {"role": m["role"], "content": [{"text": m["content"]}]}
        for m in openai["messages"]
        if m["role"] != "system"
    ]
    return orjson.dumps(
        {
            "messages": messages,
            "system": system,
            "inferenceConfig": {"maxTokens": openai.get("max_tokens", 64)},
        }
    )


@dataclass
class Target:
    """A gateway under test: where to send requests and how."""

    name: str
    url: str
    pid: int
    model: str
    headers: dict[str, str]
    ready_s: float


@dataclass
class Baseline:
    """The upstream measured directly."""

    c1: dict[str, float]
    ttft: dict[str, float]


@dataclass
class Figures:
    """Everything measured for one gateway."""

    name: str
    ready_s: float = 0.0
    c1: dict[str, float] = field(default_factory=dict)
    reported_overhead_ms: float | None = None
    ttft: dict[str, float] = field(default_factory=dict)
    c32: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_request: float = 0.0
    sweep: list[dict[str, float]] = field(default_factory=list)
    fixed_rate: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    requests_total: int = 0
    errors: int = 0
    soak: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Settings:
    """How much of each measurement to take (quick for CI, full for the record)."""

    c1_s: int = 5
    c1_repeats: int = 3
    sequential_n: int = 2000
    warmup: int = 200
    ttft_n: int = 1000
    throughput_s: int = 10
    sweep: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    sweep_s: int = 5
    fixed_rates: tuple[int, ...] = (50, 1000)
    fixed_rate_s: float = 5.0
    memory_requests: int = 200_000
    memory_max_s: int = 180
    soak_minutes: float = 0.0
    load_cpu: int | None = 1


def measure_baseline(upstream: str, settings: Settings, progress: Progress) -> Baseline:
    converse = f"{upstream}/model/{MODEL_ID}/converse"
    stream = f"{upstream}/model/{MODEL_ID}/converse-stream"
    body = converse_body()
    progress(
        f"upstream direct: latency at concurrency 1 ({settings.c1_repeats} × {settings.c1_s} s)"
    )
    c1 = _c1(converse, body, {}, settings)
    if c1["errors"]:
        raise RuntimeError(f"upstream: {c1['errors']:.0f} errors at concurrency 1")
    progress("upstream direct: time to first token")
    ttft = loadgen.run_async(loadgen.ttft(stream, body, {}, settings.ttft_n, settings.warmup))
    _check("upstream stream", ttft)
    return Baseline(c1, loadgen.summarise(ttft.latencies_s))


def _c1(url: str, body: bytes, headers: dict[str, str], settings: Settings) -> dict[str, float]:
    """Latency at concurrency 1: the median, over repeated wrk runs, of each percentile.

    One run on a shared virtual machine can be 10 % off; the median of a few is steadier.
    """
    runs = [
        loadgen.run_wrk(url, body, headers, 1, settings.c1_s, cpu=settings.load_cpu)
        for _ in range(settings.c1_repeats)
    ]
    return {
        "p50": statistics.median(r.p50_us for r in runs) / 1000.0,
        "p90": statistics.median(r.p90_us for r in runs) / 1000.0,
        "p99": statistics.median(r.p99_us for r in runs) / 1000.0,
        "mean": statistics.median(r.mean_us for r in runs) / 1000.0,
        "count": float(sum(r.requests for r in runs)),
        "errors": float(sum(r.errors for r in runs)),
    }


def _check(what: str, result: loadgen.LatencyResult) -> None:
    if result.errors:
        raise RuntimeError(f"{what}: {result.errors} errors ({result.error_kinds})")


def measure_gateway(target: Target, settings: Settings, progress: Progress) -> Figures:
    figures = Figures(target.name, ready_s=target.ready_s)
    url = f"{target.url}/v1/chat/completions"
    body = payloads.openai_body(stream=False, model=target.model)
    stream_body = payloads.openai_body(stream=True, model=target.model)
    figures.rss_start_mb = rss_mb(target.pid)

    progress(
        f"{target.name}: warm-up and self-reported overhead ({settings.sequential_n} requests)"
    )
    warm = loadgen.run_async(
        loadgen.sequential(url, body, target.headers, settings.sequential_n, settings.warmup)
    )
    _check(target.name, warm)
    if warm.overhead_ms:
        figures.reported_overhead_ms = statistics.median(warm.overhead_ms)
    figures.requests_total += warm.requests

    progress(f"{target.name}: latency at concurrency 1 ({settings.c1_repeats} × {settings.c1_s} s)")
    figures.c1 = _c1(url, body, target.headers, settings)
    figures.requests_total += int(figures.c1["count"])
    figures.errors += int(figures.c1["errors"])

    progress(f"{target.name}: time to first token ({settings.ttft_n} streams)")
    ttft = loadgen.run_async(
        loadgen.ttft(url, stream_body, target.headers, settings.ttft_n, settings.warmup)
    )
    _check(f"{target.name} stream", ttft)
    figures.ttft = loadgen.summarise(ttft.latencies_s)
    figures.requests_total += ttft.requests

    progress(f"{target.name}: throughput at concurrency 32 ({settings.throughput_s} s)")
    before = cpu_seconds(target.pid)
    wrk = loadgen.run_wrk(
        url, body, target.headers, 32, settings.throughput_s, cpu=settings.load_cpu
    )
    spent = cpu_seconds(target.pid) - before
    figures.c32 = _wrk_figures(wrk)
    figures.cpu_ms_per_request = spent / max(wrk.requests, 1) * 1000.0
    figures.requests_total += wrk.requests
    figures.errors += wrk.errors

    for concurrency in settings.sweep:
        progress(f"{target.name}: concurrency sweep, c={concurrency} ({settings.sweep_s} s)")
        result = loadgen.run_wrk(
            url, body, target.headers, concurrency, settings.sweep_s, cpu=settings.load_cpu
        )
        figures.sweep.append({"concurrency": concurrency, **_wrk_figures(result)})
        figures.requests_total += result.requests
        figures.errors += result.errors

    for rate in settings.fixed_rates:
        progress(f"{target.name}: fixed rate {rate}/s, open loop ({settings.fixed_rate_s:g} s)")
        result_open = loadgen.run_async(
            loadgen.open_loop(url, body, target.headers, rate, settings.fixed_rate_s)
        )
        summary = loadgen.summarise(result_open.latencies_s)
        figures.fixed_rate[str(rate)] = {
            **summary,
            "achieved_rate": result_open.achieved_rate,
            "errors": float(result_open.errors),
            "dropped": float(result_open.dropped),
        }
        figures.requests_total += result_open.sent

    _memory_run(target, figures, settings, progress, url, body)
    figures.rss_end_mb = rss_mb(target.pid)
    return figures


def _memory_run(
    target: Target,
    figures: Figures,
    settings: Settings,
    progress: Progress,
    url: str,
    body: bytes,
) -> None:
    """Drive the gateway to `memory_requests` (and through the soak), sampling memory."""
    remaining = settings.memory_requests - figures.requests_total
    rate = max(figures.c32.get("rps", 1000.0), 50.0)
    if remaining > 0:
        # A slow gateway would need hours to reach the count: the run is capped in time.
        seconds = max(1, min(round(remaining / rate), settings.memory_max_s))
        progress(
            f"{target.name}: memory run to {settings.memory_requests:,} requests (~{seconds} s)"
        )
        result = loadgen.run_wrk(url, body, target.headers, 32, seconds, cpu=settings.load_cpu)
        figures.requests_total += result.requests
        figures.errors += result.errors
    if settings.soak_minutes <= 0:
        return
    end = time.monotonic() + settings.soak_minutes * 60
    start = time.monotonic()
    while time.monotonic() < end:
        chunk = max(1, min(30, round(end - time.monotonic())))
        result = loadgen.run_wrk(url, body, target.headers, 32, chunk, cpu=settings.load_cpu)
        figures.requests_total += result.requests
        figures.errors += result.errors
        sample = {
            "minute": (time.monotonic() - start) / 60.0,
            "rss_mb": rss_mb(target.pid),
            "requests": float(figures.requests_total),
        }
        figures.soak.append(sample)
        progress(
            f"{target.name}: soak {sample['minute']:.1f}/{settings.soak_minutes:g} min, "
            f"RSS {sample['rss_mb']:.1f} MiB, {figures.requests_total:,} requests"
        )


def _wrk_figures(result: loadgen.WrkResult) -> dict[str, float]:
    return {
        "rps": result.rps,
        "p50_ms": result.p50_us / 1000.0,
        "p90_ms": result.p90_us / 1000.0,
        "p99_ms": result.p99_us / 1000.0,
        "errors": float(result.errors),
        "requests": float(result.requests),
    }
