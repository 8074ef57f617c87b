"""The response-cache benchmark's pieces, and one tiny run of it end to end.

No timing is judged here: figures from a few hundred requests on a shared CI machine mean
nothing. What must hold is that the workload is repeatable, the expected hit rate and the TTL
replay count correctly, the gateway accepts the benchmark's configuration, and a run produces
every figure, well formed, with the responses and the admin counters in agreement.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import cache_bench
from hybridroute.config.checks import check_config
from hybridroute.config.load import load_config

REPO = Path(__file__).resolve().parents[2]
S = 1_000_000_000  # nanoseconds


def test_zipf_draw_is_repeatable_and_in_range():
    first = cache_bench.zipf_draws(500, 40, 1.0, seed=3)
    assert first == cache_bench.zipf_draws(500, 40, 1.0, seed=3)
    assert first != cache_bench.zipf_draws(500, 40, 1.0, seed=4)
    assert len(first) == 500
    assert set(first) <= set(range(40))
    assert first.count(0) > first.count(39)  # rank 1 is the most popular


def test_expected_hit_rate_counts_every_repeat_as_a_hit():
    assert cache_bench.expected_hit_rate([0, 1, 0, 0]) == 0.5
    assert cache_bench.expected_hit_rate([0, 1, 2]) == 0.0
    assert cache_bench.expected_hit_rate([]) == 0.0


def test_replay_check_agrees_with_a_cache_that_keeps_everything():
    draws = [0, 0, 1, 0, 1]
    statuses = ["miss", "hit", "miss", "hit", "hit"]
    sent = [i * S for i in range(5)]
    done = [t + 1000 for t in sent]
    check = cache_bench.replay_check(draws, statuses, sent, done, [60.0, 60.0])
    assert check == {"hits_due": 3, "expired": 0, "mismatches": 0}


def test_replay_check_expects_a_miss_after_the_ttl_and_flags_a_wrong_hit():
    draws = [0, 0, 0]
    sent = [0, 10 * S, 11 * S]
    done = [t + 1000 for t in sent]
    expired = cache_bench.replay_check(draws, ["miss", "miss", "hit"], sent, done, [5.0])
    assert expired == {"hits_due": 1, "expired": 1, "mismatches": 0}
    wrong = cache_bench.replay_check(draws, ["miss", "hit", "miss"], sent, done, [5.0])
    assert wrong["mismatches"] == 1  # a hit on an entry past its TTL


def test_the_gateway_accepts_the_benchmark_configuration(tmp_path: Path):
    cache_bench.gateway_config(
        tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9/mcp", 8080, max_entries=20_000
    )
    config = load_config(tmp_path / "hybridroute.yaml")
    assert check_config(config) == []
    assert config.cache.enabled
    assert config.cache.max_entries == 20_000
    assert config.budgets.configured
    assert set(config.pricing.routes) == set(config.routes)
    assert config.storage.sqlite_path == str(tmp_path / "ledger.sqlite3")


def test_workload_operations_are_cacheable_by_default(tmp_path: Path):
    cache_bench.gateway_config(
        tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9/mcp", 8080, max_entries=10_000
    )
    config = load_config(tmp_path / "hybridroute.yaml")
    for operation, temperature, ttl in cache_bench.WORKLOAD_OPERATIONS:
        sent = temperature if temperature is not None else config.operations[operation].temperature
        assert sent is not None
        assert sent <= config.cache.max_temperature, operation
        assert config.cache.ttl_for(operation) == ttl, operation


def _well_formed_latency(row: dict[str, Any], requests: int) -> None:
    assert row["wrong"] == 0, row
    assert row["count"] == requests, row
    latency = row["latency_ms"]
    assert all(math.isfinite(latency[k]) for k in ("p50", "p90", "p99", "p999", "max", "mean"))
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p999"]
    assert latency["p999"] <= latency["max"]


@pytest.mark.slow
def test_a_quick_run_produces_every_figure(tmp_path: Path):
    out = tmp_path / "cache.json"
    requests = 40
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cache_bench",
            "--quick",
            "--requests",
            str(requests),
            "--json",
            str(out),
            "--work",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "| cache hit, JSON |" in run.stdout
    figures = json.loads(out.read_text())
    assert figures["problems"] == []

    rows = {row["label"]: row for row in figures["latency"]}
    assert [row["expect"] for row in figures["latency"]] == [None, "hit", "hit", "off", "miss"]
    for row in rows.values():
        _well_formed_latency(row, requests)
    hit = rows["cache hit, JSON"]
    assert hit["overhead_ms"]["p50"] > 0
    assert hit["gateway_waited_ms"] >= 0

    rate = figures["hit_rate"]
    assert rate["requests"] == requests
    assert rate["headers"]["hits"] == rate["admin"]["hits"]
    assert rate["headers"]["misses"] == rate["admin"]["misses"] == rate["distinct"]
    assert rate["hit_rate_headers"] == rate["hit_rate_admin"] == rate["hit_rate_expected"]
    assert 0 < rate["hit_rate_expected"] < 1
    assert rate["mismatches"] == 0

    for row in figures["throughput"]:  # empty when wrk is not installed
        assert row["errors"] == 0
        assert row["rps"] > 0
        assert row["counted_by_gateway"] >= row["requests"] > 0
        assert row["cpu_ms_per_request"] > 0

    assert figures["cost"]["charged_requests"] > 0
    assert float(figures["cost"]["spend"]) > 0
    assert float(figures["cost"]["cache_saved"]) > 0
    assert figures["sizes"]["requests"] == requests
