"""The response-cache benchmark: what a cache hit costs through HTTP, and how often one happens.

    bench/cache [--requests N] [--quick] [--json PATH] [--work DIR]

Owns the cache's figures. It starts the fast Bedrock Converse upstream and the MCP simulator on
core 1, and hybridroute alone on core 0 with the response cache on, prices and budgets set (so
every miss goes through the accounting path) and its ledger in SQLite in the work directory.
Then, from core 1:

1. latency at concurrency 1, one keep-alive connection, one request at a time, timed on the
   client with `time.perf_counter_ns` (plus the gateway's own `x-hybridroute-overhead-ms`):
   the upstream called directly (the floor), a JSON hit, a streamed hit (to the last byte), an
   uncacheable request and a miss (a new prompt each time: lookup, Bedrock call, store);
2. the hit rate of a repetitive workload: a seeded Zipf draw over distinct prompts of the
   cacheable operation types, counted from each response's `x-hybridroute-cache` header and from
   `GET /admin/cache`, beside the rate the draw allows (1 − distinct / requests);
3. throughput of hits (and of uncacheable requests, for comparison) with wrk at a modest
   concurrency, and the gateway's CPU time per request.

Every response is checked (status, cache header); a wrong one, or header and admin counters
that disagree, makes the exit status 1. Missing a target does not: these are measurements.
Figures go to `--json` (default `bench/results/cache.json`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import os
import random
import shutil
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httptools

from bench import loadgen
from bench.harness import gateway_config_data
from bench.payloads import OPERATION_HEADER
from bench.processes import ProcessGroup, cpu_seconds, free_port, wait_http
from bench.scenarios import MODEL_ID, converse_body

__all__ = [
    "Client",
    "Reply",
    "Sizes",
    "chat_body",
    "expected_hit_rate",
    "gateway_config",
    "main",
    "replay_check",
    "zipf_draws",
]

REPO = Path(__file__).resolve().parents[1]
GATEWAY_CPU, LOAD_CPU = 0, 1
CACHE_HEADER = "x-hybridroute-cache"
ADMIN_TOKEN_ENV = "HYBRIDROUTE_ADMIN_TOKEN"

HIT_P99_TARGET_MS = 1.0  # the performance issue
HIT_SLO_MS = 300.0  # the seed's cached-response SLO
HIT_RATE_TARGET = 0.80  # the seed

# The cacheable operation types of the workload, each with the temperature it is sent with
# (None: the operation's default, which is at or below the cache's 0.5 limit) and its default
# TTL in seconds. `standard` defaults to 0.7, so it is sent at 0.
WORKLOAD_OPERATIONS: tuple[tuple[str, float | None, float], ...] = (
    ("infrastructure", None, 30.0),
    ("meta_monitor", None, 300.0),
    ("implementation", None, 600.0),
    ("kiro_communication", None, 600.0),
    ("standard", 0.0, 3600.0),
)


@dataclass(frozen=True)
class Sizes:
    """How much of each measurement to do."""

    requests: int = 20_000  # per latency row, and the workload's length
    warmup: int = 500  # unmeasured requests before each latency row
    prompts: int = 5_000  # distinct prompts in the workload
    zipf_s: float = 1.0  # the workload's Zipf exponent
    seed: int = 7
    wrk_connections: int = 8
    wrk_s: int = 10

    @classmethod
    def full(cls, requests: int | None = None) -> Sizes:
        n = requests or cls.requests
        return cls(requests=n, warmup=min(500, max(10, n // 20)), prompts=max(4, n // 4))

    @classmethod
    def quick(cls, requests: int | None = None) -> Sizes:
        n = requests or 200
        return cls(requests=n, warmup=20, prompts=max(4, n // 4), wrk_s=1)


class Progress:
    """Numbered progress lines with the seconds since the start."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._step = 0

    def __call__(self, message: str) -> None:
        self._step += 1
        print(f"[{self._step:>3} | {time.monotonic() - self._start:6.1f}s] {message}", flush=True)


# ---- requests ------------------------------------------------------------------------------


def chat_body(
    prompt: str,
    *,
    temperature: float | None = None,
    stream: bool = False,
    max_tokens: int = 64,
) -> bytes:
    """An OpenAI chat request with a system message and `prompt` as the user's message."""
    body: dict[str, Any] = {
        "model": "bench-model",
        "messages": [
            {"role": "system", "content": "You are an operations assistant. Answer briefly."},
            {"role": "user", "content": prompt},
        ],
        "max_tokens": max_tokens,
    }
    if temperature is not None:
        body["temperature"] = temperature
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def workload_prompt(index: int) -> str:
    """The text of the workload's prompt number `index` (distinct for every index)."""
    services = ("checkout", "search", "billing", "auth", "ledger", "inventory", "gateway")
    service = services[index % len(services)]
    return (
        f"Ticket {index:05d}: {service} in eu-central-1 showed elevated p99 latency since "
        f"{index % 24:02d}:00 UTC. Check replication lag, pool usage and recent errors, and say "
        "whether anyone needs to act."
    )


def http_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 POST request (keep-alive) as bytes."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        *(f"{name}: {value}" for name, value in headers.items()),
        f"content-length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ---- the client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One response: status, headers (names lower-cased), body, and the client's round trip."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_ns: int


class Client:
    """One blocking HTTP/1.1 keep-alive connection, one request at a time.

    A plain socket and httptools' parser, no event loop: the round trip is measured from just
    before `sendall` to the parser's end-of-message callback, so the client adds only a few
    microseconds. The connection is reopened when the server closes it.
    """

    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self._address = (host, port)
        self._timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._done_ns = 0

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection(self._address, timeout=self._timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._parser = httptools.HttpResponseParser(self)
        return self._sock

    def exchange(self, request: bytes) -> Reply:
        sock = self._socket()
        self._headers, self._body, self._done_ns = [], [], 0
        started = time.perf_counter_ns()
        sock.sendall(request)
        while not self._done_ns:
            data = sock.recv(262_144)
            if not data:
                self.close()
                raise ConnectionError("the server closed the connection mid-response")
            self._parser.feed_data(data)
        reply = Reply(
            status=self._parser.get_status_code(),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self._headers},
            body=b"".join(self._body),
            elapsed_ns=self._done_ns - started,
        )
        if not self._parser.should_keep_alive():
            self.close()
        return reply

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._done_ns = time.perf_counter_ns()


def run_queue_wait_s(pid: int) -> float:
    """Seconds the process's threads have spent runnable but waiting for a CPU (schedstat).

    On a quiet machine this barely moves; when other work shares the gateway's core, it grows
    by about as much as the client's latency tail.
    """
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def load_average() -> float:
    """The machine's one-minute load average (other work competing for the cores)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return float(Path("/proc/loadavg").read_text().split()[0])
    return float("nan")


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The client's garbage collector paused during a timed loop (its pauses are not ours)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# ---- latency at concurrency 1 ----------------------------------------------------------------


@dataclass
class LatencyRow:
    """One latency measurement: client round trips and the gateway's own overhead."""

    label: str
    expect: str | None  # the x-hybridroute-cache value every response must carry
    latencies_s: list[float] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)
    wrong: int = 0  # responses with a bad status or an unexpected cache header
    wrong_detail: dict[str, int] = field(default_factory=dict)
    gateway_waited_s: float | None = None  # the gateway runnable, its core busy elsewhere

    def figures(self) -> dict[str, Any]:
        latency = loadgen.summarise(self.latencies_s)
        overhead = loadgen.summarise([value / 1000.0 for value in self.overhead_ms])
        return {
            "label": self.label,
            "expect": self.expect,
            "count": int(latency["count"]),
            "latency_ms": {k: v for k, v in latency.items() if k != "count"},
            "overhead_ms": None
            if not self.overhead_ms
            else {"p50": overhead["p50"], "p99": overhead["p99"]},
            "wrong": self.wrong,
            "wrong_detail": self.wrong_detail,
            "gateway_waited_ms": None
            if self.gateway_waited_s is None
            else self.gateway_waited_s * 1000.0,
        }


def _judge(reply: Reply, expect: str | None) -> str | None:
    """What is wrong with a reply, or None."""
    if reply.status != 200:
        return f"status {reply.status}"
    if expect is not None and reply.headers.get(CACHE_HEADER) != expect:
        return f"{CACHE_HEADER}: {reply.headers.get(CACHE_HEADER)}"
    streamed = reply.headers.get("content-type", "").startswith("text/event")
    if streamed and not reply.body.rstrip().endswith(b"data: [DONE]"):
        return "stream without its end"
    return None


def measure_latency(
    client: Client, label: str, requests: Sequence[bytes], warmup: int, expect: str | None
) -> LatencyRow:
    """Send `requests` one at a time; time all but the first `warmup`."""
    row = LatencyRow(label, expect)
    with _no_gc():
        for index, request in enumerate(requests):
            reply = client.exchange(request)
            if index < warmup:
                continue
            problem = _judge(reply, expect)
            if problem is not None:
                row.wrong += 1
                row.wrong_detail[problem] = row.wrong_detail.get(problem, 0) + 1
                continue
            row.latencies_s.append(reply.elapsed_ns / 1e9)
            overhead = reply.headers.get(loadgen.OVERHEAD_HEADER)
            if overhead is not None:
                row.overhead_ms.append(float(overhead))
    return row


# ---- the repetitive workload -------------------------------------------------------------------


def zipf_draws(requests: int, prompts: int, s: float, seed: int) -> list[int]:
    """`requests` prompt numbers drawn from 0..prompts-1 with weight 1 / (rank + 1) ** s."""
    weights = list(itertools.accumulate(1.0 / (rank + 1) ** s for rank in range(prompts)))
    return random.Random(seed).choices(range(prompts), cum_weights=weights, k=requests)


def expected_hit_rate(draws: Sequence[int]) -> float:
    """The hit rate of an exact-match cache over `draws` when nothing expires or is evicted:
    every draw after a prompt's first is a hit."""
    return 1.0 - len(set(draws)) / len(draws) if draws else 0.0


def replay_check(
    draws: Sequence[int],
    statuses: Sequence[str],
    sent_ns: Sequence[int],
    done_ns: Sequence[int],
    ttl_s: Sequence[float],
    margin_s: float = 1.0,
) -> dict[str, int]:
    """Walk the workload as the cache should have seen it, TTLs included.

    A request is due a hit when its prompt was stored (by an earlier miss) less than the TTL of
    its operation before it was sent. `mismatches` counts responses that say otherwise, leaving
    out those within `margin_s` of a TTL boundary (client and gateway clocks differ there);
    `expired` counts misses of prompts whose entry had outlived its TTL.
    """
    stored: dict[int, int] = {}
    due, expired, mismatches = 0, 0, 0
    for prompt, status, sent, done in zip(draws, statuses, sent_ns, done_ns, strict=True):
        ttl = ttl_s[prompt]
        age = None if prompt not in stored else (sent - stored[prompt]) / 1e9
        hit_due = age is not None and age < ttl
        due += hit_due
        expired += age is not None and not hit_due and status == "miss"
        near_boundary = age is not None and abs(age - ttl) < margin_s
        if (status == "hit") != hit_due and not near_boundary:
            mismatches += 1
        if status == "miss":
            stored[prompt] = done
    return {"hits_due": due, "expired": expired, "mismatches": mismatches}


def _workload_requests(
    host: str, port: int, sizes: Sizes
) -> tuple[list[int], list[bytes], list[float]]:
    """The draw, each prompt's request bytes, and each prompt's TTL."""
    draws = zipf_draws(sizes.requests, sizes.prompts, sizes.zipf_s, sizes.seed)
    requests, ttls = [], []
    for prompt in range(sizes.prompts):
        operation, temperature, ttl = WORKLOAD_OPERATIONS[prompt % len(WORKLOAD_OPERATIONS)]
        body = chat_body(workload_prompt(prompt), temperature=temperature)
        headers = {OPERATION_HEADER: operation}
        requests.append(http_request(host, port, "/v1/chat/completions", body, headers))
        ttls.append(ttl)
    return draws, requests, ttls


# ---- the gateway and its admin API -----------------------------------------------------------


def gateway_config(work: Path, upstream: str, mcp_url: str, port: int, max_entries: int) -> None:
    """hybridroute's config for the run: Bedrock primary everywhere, the cache on, prices and
    budgets set (the budgets far above what the run spends), the ledger in SQLite."""
    config = gateway_config_data(upstream, mcp_url, port, work / "ledger.sqlite3")
    config |= {
        "pricing": {
            "currency": "USD",
            "routes": {
                "direct_bedrock": {"input_per_1k": "0.003", "output_per_1k": "0.015"},
                "mcp": {"input_per_1k": "0.0005", "output_per_1k": "0.0015"},
            },
        },
        "budgets": {"global": {"daily": "100000.00", "monthly": "1000000.00"}},
        # Room for every distinct prompt of the run: the hit rate measured is the cache's, not
        # that of an undersized LRU.
        "cache": {"enabled": True, "max_entries": max_entries, "max_mib": 256},
    }
    (work / "hybridroute.yaml").write_text(json.dumps(config, indent=2))  # JSON is YAML


class Admin:
    """The gateway's admin endpoints (a bearer token when HYBRIDROUTE_ADMIN_TOKEN is set)."""

    def __init__(self, url: str) -> None:
        self._url = url
        token = os.environ.get(ADMIN_TOKEN_ENV)
        self._headers = {"authorization": f"Bearer {token}"} if token else {}

    def _call(self, path: str, body: bytes | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            self._url + path,
            data=body,
            headers={**self._headers, "content-type": "application/json"},
            method="POST" if body is not None else "GET",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    def cache(self) -> dict[str, Any]:
        return self._call("/admin/cache")

    def cache_totals(self) -> dict[str, int]:
        total = self.cache()["stats"]["total"]
        return {k: int(total[k]) for k in ("hits", "misses", "bypasses", "uncacheable", "stores")}

    def invalidate_everything(self) -> int:
        return int(self._call("/admin/cache/invalidate", b"{}")["removed"])

    def cost(self) -> dict[str, Any]:
        return self._call("/admin/cost?days=1")


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything one run needs: where things are, how big, and what went wrong."""

    sizes: Sizes
    host: str
    gateway_port: int
    gateway_pid: int
    upstream_port: int
    admin: Admin
    progress: Progress
    load_cpu: int | None
    problems: list[str] = field(default_factory=list)

    def chat(self, body: bytes, headers: dict[str, str]) -> bytes:
        return http_request(self.host, self.gateway_port, "/v1/chat/completions", body, headers)


def _latency_rows(run: Run) -> list[LatencyRow]:
    sizes, progress = run.sizes, run.progress
    n, warm = sizes.requests, sizes.warmup
    total = n + warm
    rows: list[LatencyRow] = []
    cacheable = {OPERATION_HEADER: "standard"}
    prompt = workload_prompt(999_999)

    def measure(label: str, requests: Sequence[bytes], port: int, expect: str | None) -> None:
        progress(f"{label}: {n:,} requests at concurrency 1 (+{warm} warm-up)")
        client = Client(run.host, port)
        waited = run_queue_wait_s(run.gateway_pid)
        try:
            row = measure_latency(client, label, requests, warm, expect)
        finally:
            client.close()
        if port == run.gateway_port:
            row.gateway_waited_s = run_queue_wait_s(run.gateway_pid) - waited
        figures = row.figures()["latency_ms"]
        progress(
            f"  p50 {figures['p50']:.3f} ms, p99 {figures['p99']:.3f} ms, wrong {row.wrong}"
            f", load average {load_average():.2f}"
        )
        if row.wrong:
            run.problems.append(f"{label}: {row.wrong} wrong responses {row.wrong_detail}")
        rows.append(row)

    direct = http_request(
        run.host, run.upstream_port, f"/model/{MODEL_ID}/converse", converse_body(), {}
    )
    measure("upstream called directly (the floor)", [direct] * total, run.upstream_port, None)

    hit = run.chat(chat_body(prompt, temperature=0.0), cacheable)
    _warm(run, hit, "JSON hit")
    measure("cache hit, JSON", [hit] * total, run.gateway_port, "hit")

    streamed = run.chat(chat_body(prompt, temperature=0.0, stream=True), cacheable)
    _warm(run, streamed, "streamed hit")
    measure("cache hit, streamed (to the last byte)", [streamed] * total, run.gateway_port, "hit")

    hot = run.chat(chat_body(prompt), cacheable)  # standard's default temperature, 0.7
    measure("uncacheable (standard at 0.7) via Bedrock", [hot] * total, run.gateway_port, "off")

    fresh = [
        run.chat(chat_body(workload_prompt(index), temperature=0.0), cacheable)
        for index in range(1_000_000, 1_000_000 + total)
    ]
    measure("miss (new prompt: lookup, Bedrock, store)", fresh, run.gateway_port, "miss")
    return rows


def _warm(run: Run, request: bytes, what: str) -> None:
    """Send `request` until the gateway answers it from the cache (a miss stores it first)."""
    client = Client(run.host, run.gateway_port)
    try:
        for _ in range(3):
            if client.exchange(request).headers.get(CACHE_HEADER) == "hit":
                return
    finally:
        client.close()
    run.problems.append(f"{what}: the entry was not served from the cache after warming")


def _hit_rate(run: Run) -> dict[str, Any]:
    sizes, progress = run.sizes, run.progress
    removed = run.admin.invalidate_everything()
    draws, requests, ttls = _workload_requests(run.host, run.gateway_port, sizes)
    expected = expected_hit_rate(draws)
    progress(
        f"workload: {len(draws):,} requests over {sizes.prompts:,} prompts (Zipf s={sizes.zipf_s},"
        f" seed {sizes.seed}; {len(set(draws)):,} distinct drawn; cache emptied: {removed} entries)"
    )
    before = run.admin.cache_totals()
    statuses: list[str] = []
    sent: list[int] = []
    done: list[int] = []
    wrong = 0
    client = Client(run.host, run.gateway_port)
    started = time.monotonic()
    try:
        with _no_gc():
            for prompt in draws:
                at = time.perf_counter_ns()
                reply = client.exchange(requests[prompt])
                statuses.append(reply.headers.get(CACHE_HEADER, "absent"))
                sent.append(at)
                done.append(at + reply.elapsed_ns)
                wrong += reply.status != 200
    finally:
        client.close()
    seconds = time.monotonic() - started
    counted = _delta(run.admin.cache_totals(), before)
    hits, misses = statuses.count("hit"), statuses.count("miss")
    from_headers = hits / (hits + misses) if hits + misses else 0.0
    lookups = counted["hits"] + counted["misses"]
    from_admin = counted["hits"] / lookups if lookups else 0.0
    check = replay_check(draws, statuses, sent, done, ttls)
    figures: dict[str, Any] = {
        "requests": len(draws),
        "prompts": sizes.prompts,
        "distinct": len(set(draws)),
        "zipf_s": sizes.zipf_s,
        "seed": sizes.seed,
        "seconds": seconds,
        "headers": {"hits": hits, "misses": misses, "other": len(draws) - hits - misses},
        "admin": counted,
        "hit_rate_headers": from_headers,
        "hit_rate_admin": from_admin,
        "hit_rate_expected": expected,
        "hit_rate_expected_with_ttl": check["hits_due"] / len(draws) if draws else 0.0,
        "expired_misses": check["expired"],
        "mismatches": check["mismatches"],
        "errors": wrong,
    }
    progress(
        f"  hit rate {from_headers:.2%} from headers, {from_admin:.2%} from /admin/cache,"
        f" {expected:.2%} expected ({seconds:.1f} s)"
    )
    if (counted["hits"], counted["misses"]) != (hits, misses):
        run.problems.append(f"headers ({hits} hits, {misses} misses) and /admin/cache {counted}")
    if check["mismatches"] or wrong or figures["headers"]["other"]:
        run.problems.append(
            f"workload: {check['mismatches']} responses not as the cache's rules predict,"
            f" {wrong} errors, {figures['headers']['other']} neither hit nor miss"
        )
    return figures


def _throughput(run: Run) -> list[dict[str, Any]]:
    sizes, progress = run.sizes, run.progress
    if shutil.which("wrk") is None:
        progress("throughput: wrk is not installed (apt-get install wrk); skipped")
        return []
    url = f"http://{run.host}:{run.gateway_port}/v1/chat/completions"
    prompt = workload_prompt(999_999)
    headers = {OPERATION_HEADER: "standard"}
    hit = chat_body(prompt, temperature=0.0)
    _warm(run, run.chat(hit, headers), "throughput")
    cases = (("cache hits", hit, "hits"), ("uncacheable via Bedrock", chat_body(prompt), "off"))
    results = []
    for label, body, counter in cases:
        progress(f"throughput, {label}: wrk, {sizes.wrk_connections} connections, {sizes.wrk_s} s")
        before, cpu_before = run.admin.cache_totals(), cpu_seconds(run.gateway_pid)
        wrk = loadgen.run_wrk(
            url, body, headers, sizes.wrk_connections, sizes.wrk_s, cpu=run.load_cpu
        )
        cpu = cpu_seconds(run.gateway_pid) - cpu_before
        counted = _delta(run.admin.cache_totals(), before)
        served = counted["hits"] if counter == "hits" else counted["uncacheable"]
        results.append(
            {
                "label": label,
                "connections": sizes.wrk_connections,
                "seconds": wrk.duration_s,
                "requests": wrk.requests,
                "errors": wrk.errors,
                "rps": wrk.rps,
                "p50_ms": wrk.p50_us / 1000.0,
                "p99_ms": wrk.p99_us / 1000.0,
                "cpu_ms_per_request": cpu / max(wrk.requests, 1) * 1000.0,
                "counted_by_gateway": served,
            }
        )
        progress(f"  {wrk.rps:,.0f} req/s, p99 {wrk.p99_us / 1000:.2f} ms, errors {wrk.errors}")
        if wrk.errors or served < wrk.requests:
            run.problems.append(
                f"throughput {label}: {wrk.errors} errors; {served} counted by the gateway"
                f" for {wrk.requests} answered"
            )
    return results


def _start(
    group: ProcessGroup, work: Path, sizes: Sizes, cpus: tuple[int | None, int | None]
) -> tuple[int, int, int]:
    """Upstream, MCP simulator and gateway: (upstream port, gateway port, gateway pid)."""
    gateway_cpu, load_cpu = cpus
    upstream = group.start(
        "upstream",
        [sys.executable, "-m", "bench.upstream", "--port", "0"],
        cpu=load_cpu,
        capture_stdout=True,
    )
    upstream_port = int(group.read_line(upstream).split()[1])
    mcp_port = free_port()
    group.start(
        "mcp-simulator",
        [sys.executable, "-m", "hybridroute.simulators.mcp_server", "--port", str(mcp_port)],
        cpu=load_cpu,
    )
    wait_http(f"http://127.0.0.1:{mcp_port}/_sim/knobs", 30)
    port = free_port()
    for stale in work.glob("ledger.sqlite3*"):  # a fresh ledger: figures of this run only
        stale.unlink()
    gateway_config(
        work,
        f"http://127.0.0.1:{upstream_port}",
        f"http://127.0.0.1:{mcp_port}/mcp",
        port,
        max_entries=max(10_000, 2 * (sizes.prompts + sizes.requests + sizes.warmup)),
    )
    gateway = group.start(
        "hybridroute",
        [sys.executable, "-m", "hybridroute", "serve", "--config", str(work / "hybridroute.yaml")],
        cpu=gateway_cpu,
    )
    wait_http(f"http://127.0.0.1:{port}/ready", 60, ready_key="routes")
    return upstream_port, port, gateway.pid


# ---- the report --------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:.3f}" if value < 10 else f"{value:,.1f}"


def _met(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "no")


def _table(headers: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def report(figures: dict[str, Any]) -> str:
    """The run's tables, in Markdown (readable as text too)."""
    lines = []
    for row in figures["latency"]:
        latency, overhead = row["latency_ms"], row["overhead_ms"]
        is_hit = row["expect"] == "hit"
        lines.append(
            [
                row["label"],
                f"{row['count']:,}",
                *(_ms(latency[k]) for k in ("p50", "p90", "p99", "p999", "max")),
                "—" if overhead is None else f"{_ms(overhead['p50'])} / {_ms(overhead['p99'])}",
                "—" if row["gateway_waited_ms"] is None else f"{row['gateway_waited_ms']:,.0f}",
                f"p99 ≤ {HIT_P99_TARGET_MS:g}" if is_hit else "",
                _met(latency["p99"] <= HIT_P99_TARGET_MS) if is_hit else "",
            ]
        )
    load = figures["machine"]["load_average"]
    text = [
        f"Machine: {figures['machine']['cpus']} CPUs, one-minute load average {load['start']:.2f}"
        f" at the start and {load['end']:.2f} at the end (the run itself keeps about one core"
        " busy; other work on the gateway's core shows as the gateway waiting for it)",
        "",
        "Latency at concurrency 1 (ms, client round trip over one keep-alive connection)",
        "",
        _table(
            [
                "request",
                "measured",
                "p50",
                "p90",
                "p99",
                "p99.9",
                "max",
                "gateway's overhead p50 / p99",
                "gateway waited for its core, ms in all",
                "target",
                "met",
            ],
            lines,
        ),
    ]
    rate = figures["hit_rate"]
    ok = rate["hit_rate_headers"] >= HIT_RATE_TARGET
    text += [
        "",
        f"Hit rate: {rate['requests']:,} requests, Zipf s={rate['zipf_s']:g} over"
        f" {rate['prompts']:,} prompts (seed {rate['seed']}), {rate['distinct']:,} distinct drawn,"
        f" concurrency 1, {rate['seconds']:.1f} s",
        "",
        _table(
            ["measure", "value", "target", "met"],
            [
                [
                    "hit rate from the responses' x-hybridroute-cache",
                    f"{rate['hit_rate_headers']:.2%} ({rate['headers']['hits']:,} hits,"
                    f" {rate['headers']['misses']:,} misses)",
                    f"≥ {HIT_RATE_TARGET:.0%}",
                    _met(ok),
                ],
                [
                    "hit rate from GET /admin/cache (counters over the workload)",
                    f"{rate['hit_rate_admin']:.2%} ({rate['admin']['hits']:,} hits,"
                    f" {rate['admin']['misses']:,} misses)",
                    "",
                    "",
                ],
                [
                    "expected for this draw, nothing expiring (1 − distinct / requests)",
                    f"{rate['hit_rate_expected']:.2%}",
                    "",
                    "",
                ],
                [
                    "expected with the operations' TTLs (client's clock)",
                    f"{rate['hit_rate_expected_with_ttl']:.2%}"
                    f" ({rate['expired_misses']:,} misses after expiry)",
                    "",
                    "",
                ],
                [
                    "responses not as the cache's rules predict",
                    f"{rate['mismatches']:,}",
                    "0",
                    _met(rate["mismatches"] == 0),
                ],
            ],
        ),
    ]
    if figures["throughput"]:
        text += [
            "",
            "Throughput (wrk, closed loop)",
            "",
            _table(
                [
                    "requests",
                    "connections",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "gateway CPU per request ms",
                    "errors",
                ],
                [
                    [
                        row["label"],
                        str(row["connections"]),
                        f"{row['rps']:,.0f}",
                        _ms(row["p50_ms"]),
                        _ms(row["p99_ms"]),
                        _ms(row["cpu_ms_per_request"]),
                        str(row["errors"]),
                    ]
                    for row in figures["throughput"]
                ],
            ),
        ]
    cost = figures["cost"]
    text += [
        "",
        f"Accounting (GET /admin/cost): {cost['charged_requests']:,} requests charged,"
        f" {cost['spend']} {cost['currency']} spent, {cost['cache_saved']} {cost['currency']}"
        " saved by hits",
    ]
    return "\n".join(text)


# ---- the command -------------------------------------------------------------------------------


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/cache", description="Benchmark hybridroute's response cache."
    )
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per latency row and in the workload"
    )
    parser.add_argument("--quick", action="store_true", help="small numbers (seconds)")
    parser.add_argument(
        "--json",
        type=Path,
        default=REPO / "bench" / "results" / "cache.json",
        help="where the figures go (default bench/results/cache.json)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=REPO / "bench" / "results" / "cache-run",
        help="config, ledger and process logs of the run",
    )
    args = parser.parse_args(argv)
    if args.requests is not None and args.requests < 10:
        parser.error("--requests must be at least 10")
    return args


def _measure(
    group: ProcessGroup, work: Path, sizes: Sizes, progress: Progress
) -> tuple[dict[str, Any], list[str]]:
    multi_core = (os.cpu_count() or 1) > 1
    gateway_cpu, load_cpu = (GATEWAY_CPU, LOAD_CPU) if multi_core else (None, None)
    progress("starting the upstream and the MCP simulator (core 1) and hybridroute (core 0)")
    upstream_port, port, pid = _start(group, work, sizes, (gateway_cpu, load_cpu))
    host = "127.0.0.1"
    run = Run(
        sizes, host, port, pid, upstream_port, Admin(f"http://{host}:{port}"), progress, load_cpu
    )
    progress(f"hybridroute ready on port {port}, upstream on {upstream_port}")
    latency = [row.figures() for row in _latency_rows(run)]
    hit_rate = _hit_rate(run)
    throughput = _throughput(run)
    spend = run.admin.cost()
    total = spend["spend"]["total"]
    figures: dict[str, Any] = {
        "latency": latency,
        "hit_rate": hit_rate,
        "throughput": throughput,
        "cost": {
            "currency": spend["spend"]["currency"],
            "charged_requests": int(total["requests"]),
            "spend": total["cost"],
            "cache_saved": spend["cache_saved"],
        },
        "cache": run.admin.cache(),
    }
    if figures["cost"]["charged_requests"] == 0:
        run.problems.append("no request was charged: the accounting path did not run")
    return figures, run.problems


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    sizes = Sizes.quick(args.requests) if args.quick else Sizes.full(args.requests)
    if (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {LOAD_CPU})  # the client runs beside the upstream
    progress = Progress()
    load_at_start = load_average()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    with ProcessGroup(work / "logs") as group:
        figures, problems = _measure(group, work, sizes, progress)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["bench/cache", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average": {"start": load_at_start, "end": load_average()},
        },
        "sizes": asdict(sizes),
        "targets": {
            "hit_p99_ms": HIT_P99_TARGET_MS,
            "hit_slo_ms": HIT_SLO_MS,
            "hit_rate": HIT_RATE_TARGET,
        },
        **figures,
        "problems": problems,
    }
    print("\n" + report(result) + "\n", flush=True)
    path: Path = args.json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    progress(f"figures written to {path}; logs in {work / 'logs'}")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
