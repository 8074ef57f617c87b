"""The benchmark harness end to end in its smoke mode: every scenario runs and reports.

Correctness only: the figures of a few seconds on a busy CI machine mean nothing, so no
threshold is checked; what must hold is that every measurement produced numbers without errors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_smoke_run_measures_every_scenario(tmp_path: Path):
    out = tmp_path / "results"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.harness",
            "--mode",
            "smoke",
            "--skip-litellm",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "added latency p50, c=1" in run.stdout
    results = json.loads((out / "results.json").read_text())
    (gateway,) = results["gateways"]
    assert gateway["name"] == "hybridroute"
    assert gateway["errors"] == 0
    assert gateway["c32"]["rps"] > 0
    assert gateway["c1"]["p50"] > 0
    assert gateway["ttft"]["count"] > 0
    assert gateway["reported_overhead_ms"] > 0
    assert gateway["cpu_ms_per_request"] > 0
    assert [p["concurrency"] for p in gateway["sweep"]] == [1, 8]
    assert results["decisions_per_s"] > 0
    assert results["baseline"]["c1"]["p50"] > 0
    assert (out / "chart.png").stat().st_size > 10_000
    assert (out / "results.md").read_text().startswith("| measure |")
