"""The benchmark in one command: hybridroute and LiteLLM's proxy, side by side, on one upstream.

    bench/run [--mode full|quick|smoke] [--skip-litellm] [--soak-minutes M] [--out DIR]

Layout (2 cores): the gateway under test alone on core 0; the upstream, wrk and the Python load
tools on core 1. Both gateways forward every request to the same local upstream's Bedrock Converse
API (hybridroute through its Direct Bedrock route, LiteLLM through its bedrock/converse provider),
and both sign with SigV4. The upstream is also measured directly, so added latency is the
difference. Results go to `<out>/results.json`, `results.md` and `chart.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.processes import ProcessGroup, free_port, pinned, wait_http
from bench.scenarios import (
    MODEL_ID,
    Baseline,
    Figures,
    Settings,
    Target,
    measure_baseline,
    measure_gateway,
)

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
GATEWAY_CPU, LOAD_CPU = 0, 1

MODES: dict[str, Settings] = {
    "full": Settings(),
    "quick": Settings(
        c1_s=3,
        sequential_n=500,
        warmup=50,
        ttft_n=200,
        throughput_s=5,
        sweep=(1, 4, 16, 32),
        sweep_s=3,
        fixed_rates=(50, 500),
        fixed_rate_s=3.0,
        memory_requests=50_000,
    ),
    "smoke": Settings(
        c1_s=1,
        c1_repeats=1,
        sequential_n=50,
        warmup=5,
        ttft_n=20,
        throughput_s=1,
        sweep=(1, 8),
        sweep_s=1,
        fixed_rates=(20,),
        fixed_rate_s=1.0,
        memory_requests=0,
    ),
}


class Progress:
    """Numbered progress lines with the time since the start."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._step = 0

    def __call__(self, message: str) -> None:
        self._step += 1
        elapsed = time.monotonic() - self._start
        print(f"[{self._step:>3} | {elapsed:6.1f}s] {message}", flush=True)


def gateway_config_data(upstream: str, mcp_url: str, port: int, ledger: Path) -> dict[str, Any]:
    """hybridroute's config for a benchmark run: every row's primary is the Bedrock route, the
    ledger in SQLite at `ledger`."""
    rows = {
        "emergency": ("critical", 5000, None),
        "infrastructure": ("critical", 10000, "mcp"),
        "meta_monitor": ("high", 15000, "mcp"),
        "implementation": ("high", 15000, "mcp"),
        "kiro_communication": ("medium", 30000, "mcp"),
        "standard": ("medium", 30000, "mcp"),
        "background": ("low", 60000, "mcp"),
    }
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "routes": {
            "direct_bedrock": {
                "type": "bedrock",
                "region": "eu-central-1",
                "model_id": MODEL_ID,
                "endpoint_url": upstream,
                "credentials": {
                    "source": "static",
                    "access_key_id": "AKIABENCHMARK0000000",
                    "secret_access_key": "benchmark-secret",
                },
            },
            # A separate process (not a stdio child), so the gateway's own memory is measured.
            "mcp": {
                "type": "mcp",
                "transport": "streamable_http",
                "url": mcp_url,
                "region": "eu-central-1",
            },
        },
        "matrix": {
            op: {
                "priority": priority,
                "latency_budget_ms": budget,
                "primary": "direct_bedrock",
                "fallback": fallback,
            }
            for op, (priority, budget, fallback) in rows.items()
        },
        # Spend is recorded as in production: in SQLite, written in batches off the request path.
        "storage": {"backend": "sqlite", "sqlite_path": str(ledger)},
    }
    return config


def _gateway_config(path: Path, upstream: str, mcp_url: str, port: int) -> None:
    config = gateway_config_data(upstream, mcp_url, port, path.parent / "ledger.sqlite3")
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML


def _ensure_wrk(progress: Progress) -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        progress("installing wrk (Debian package)")
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=subprocess.DEVNULL,
        )
        return
    raise SystemExit("wrk is needed: install it with `sudo apt-get install wrk`")


def _run_hybridroute(
    group: ProcessGroup, work: Path, upstream: str, settings: Settings, progress: Progress
) -> Figures:
    mcp_port = free_port()
    mcp = group.start(
        "mcp-simulator",
        [sys.executable, "-m", "hybridroute.simulators.mcp_server", "--port", str(mcp_port)],
        cpu=LOAD_CPU,
    )
    wait_http(f"http://127.0.0.1:{mcp_port}/_sim/knobs", 30)
    port = free_port()
    config = work / "hybridroute.yaml"
    _gateway_config(config, upstream, f"http://127.0.0.1:{mcp_port}/mcp", port)
    progress("hybridroute: starting on core 0")
    started = time.monotonic()
    process = group.start(
        "hybridroute",
        [sys.executable, "-m", "hybridroute", "serve", "--config", str(config)],
        cpu=GATEWAY_CPU,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/ready", 60, ready_key="routes")
    ready_s = time.monotonic() - started
    target = Target(
        "hybridroute", url, process.pid, "default", {"x-operation-type": "standard"}, ready_s
    )
    figures = measure_gateway(target, settings, progress)
    group.stop(process)
    group.stop(mcp)
    return figures


def _run_litellm(
    group: ProcessGroup, work: Path, upstream: str, settings: Settings, progress: Progress
) -> Figures:
    from bench import litellm_peer

    executable = litellm_peer.ensure_litellm(litellm_peer.DEFAULT_VENV, progress=progress)
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(litellm_peer.litellm_config(upstream, route="bedrock"))
    progress("litellm: starting on core 0")
    started = time.monotonic()
    popen = litellm_peer.start_litellm(
        executable, config, port, cpu=GATEWAY_CPU, log_path=work / "logs" / "litellm.log"
    )
    try:
        ready_s = litellm_peer.wait_ready(port, 180, process=popen, since=started)
        target = Target("LiteLLM", f"http://127.0.0.1:{port}", popen.pid, "bench", {}, ready_s)
        return measure_gateway(target, settings, progress)
    finally:
        litellm_peer.stop(popen)


def _decisions_per_second(progress: Progress) -> float:
    progress("decision policy in process (core 0)")
    output = subprocess.run(
        pinned([sys.executable, "-m", "bench.policy"], GATEWAY_CPU),
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return float(output.stdout.strip())


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run", description="Benchmark hybridroute (and LiteLLM) on one upstream."
    )
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--skip-litellm", action="store_true", help="measure hybridroute only")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="memory soak length")
    parser.add_argument(
        "--memory-requests", type=int, default=None, help="requests before the memory reading"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    settings = replace(MODES[args.mode], soak_minutes=args.soak_minutes, load_cpu=LOAD_CPU)
    if args.memory_requests is not None:  # asked for explicitly: no time cap on that run
        settings = replace(settings, memory_requests=args.memory_requests, memory_max_s=7200)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {LOAD_CPU})  # the Python load tools run beside the upstream
    progress = Progress()
    _ensure_wrk(progress)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results: list[Figures] = []
    with ProcessGroup(out / "logs") as group:
        upstream_process = group.start(
            "upstream",
            [sys.executable, "-m", "bench.upstream", "--port", "0"],
            cpu=LOAD_CPU,
            capture_stdout=True,
        )
        port = int(group.read_line(upstream_process).split()[1])
        upstream = f"http://127.0.0.1:{port}"
        progress(f"upstream listening on {upstream} (core 1)")
        baseline = measure_baseline(upstream, settings, progress)
        results.append(_run_hybridroute(group, out, upstream, settings, progress))
        if not args.skip_litellm:
            results.append(_run_litellm(group, out, upstream, settings, progress))
    decisions = _decisions_per_second(progress)
    return _write(out, args, settings, baseline, results, decisions, progress)


def _write(
    out: Path,
    args: argparse.Namespace,
    settings: Settings,
    baseline: Baseline,
    results: list[Figures],
    decisions: float,
    progress: Callable[[str], None],
) -> int:
    ours = results[0]
    theirs = results[1] if len(results) > 1 else None
    table = report.rows(ours, theirs, baseline, decisions)
    with_litellm = theirs is not None
    text = report.text_table(table, with_litellm)
    print("\n" + text + "\n")
    (out / "results.md").write_text(report.markdown(table, with_litellm) + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": " ".join(["bench/run", *sys.argv[1:]]),
                "mode": args.mode,
                "settings": settings.__dict__,
                "baseline": baseline.__dict__,
                "gateways": [figures.as_dict() for figures in results],
                "decisions_per_s": decisions,
            },
            indent=2,
            default=str,
        )
    )
    report.chart(results, out / "chart.png")
    progress(f"results written to {out}/ (results.md, results.json, chart.png)")
    errors = sum(figures.errors for figures in results)
    if errors:
        print(f"{errors} requests failed during the run; see {out}/logs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
