"""The benchmark's report: the side-by-side table (text and Markdown), the ratios, the targets,
the raw figures as JSON, and the latency/throughput chart."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scenarios import Baseline, Figures

__all__ = ["Row", "chart", "markdown", "rows", "text_table"]


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure for each gateway, how to compare, and our target."""

    label: str
    ours: float | None
    theirs: float | None
    unit: str
    better: str  # "lower" or "higher": which way the ratio is read ("" for no ratio)
    target: str = ""
    meets: bool | None = None


def _added(figures: Figures, baseline: Baseline, key: str) -> float | None:
    value = figures.c1.get(key)
    return None if value is None else value - baseline.c1[key]


def _ttft_added(figures: Figures, baseline: Baseline, key: str) -> float | None:
    value = figures.ttft.get(key)
    return None if value is None else value - baseline.ttft[key]


def _slope_mb_per_min(samples: Sequence[dict[str, float]]) -> float | None:
    points = [(s["minute"], s["rss_mb"]) for s in samples]
    if len(points) < 3:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def rows(
    ours: Figures,
    theirs: Figures | None,
    baseline: Baseline,
    decisions_per_s: float | None,
) -> list[Row]:
    """The comparison table's rows (targets from the performance issue)."""

    def pair(get: Callable[[Figures], float | None]) -> tuple[float | None, float | None]:
        return get(ours), (get(theirs) if theirs is not None else None)

    def row(
        label: str,
        get: Callable[[Figures], float | None],
        unit: str,
        better: str,
        target: str = "",
        check: Callable[[float], bool] | None = None,
    ) -> Row:
        mine, other = pair(get)
        meets = check(mine) if (check is not None and mine is not None) else None
        return Row(label, mine, other, unit, better, target, meets)

    slope = _slope_mb_per_min(ours.soak)
    table = [
        row(
            "gateway's own reported overhead p50 (x-hybridroute-overhead-ms)",
            lambda f: f.reported_overhead_ms,
            "ms",
            "lower",
        ),
        row(
            "CPU time per request",
            lambda f: f.cpu_ms_per_request,
            "ms",
            "lower",
            "≤ 0.4",
            lambda v: v <= 0.4,
        ),
        row(
            "added latency p50, c=1 (Bedrock route, signing included)",
            lambda f: _added(f, baseline, "p50"),
            "ms",
            "lower",
            "≤ 0.5",
            lambda v: v <= 0.5,
        ),
        row(
            "added latency p99, c=1",
            lambda f: _added(f, baseline, "p99"),
            "ms",
            "lower",
            "≤ 1.5",
            lambda v: v <= 1.5,
        ),
        row(
            "throughput, c=32",
            lambda f: f.c32.get("rps"),
            "req/s",
            "higher",
            "≥ 2,000",
            lambda v: v >= 2000,
        ),
        row(
            "p99 latency, c=32",
            lambda f: f.c32.get("p99_ms"),
            "ms",
            "lower",
            "≤ 50",
            lambda v: v <= 50,
        ),
        row(
            "streaming time-to-first-token overhead p50",
            lambda f: _ttft_added(f, baseline, "p50"),
            "ms",
            "lower",
            "≤ 1",
            lambda v: v <= 1,
        ),
        row(
            "streaming time-to-first-token overhead p99",
            lambda f: _ttft_added(f, baseline, "p99"),
            "ms",
            "lower",
        ),
    ]
    for rate in ours.fixed_rate:
        table.append(
            row(
                f"p99 latency at a fixed {int(rate):,} req/s (open loop)",
                _fixed_rate_p99(rate),
                "ms",
                "lower",
            )
        )
    table += [
        row(
            "ready to serve after start", lambda f: f.ready_s, "s", "lower", "≤ 2", lambda v: v <= 2
        ),
        row("requests served in the run", lambda f: float(f.requests_total), "requests", ""),
        row("RSS after start", lambda f: f.rss_start_mb, "MiB", "lower"),
        row(
            "RSS after the load run",
            lambda f: f.rss_end_mb,
            "MiB",
            "lower",
            "≤ 150",
            lambda v: v <= 150,
        ),
    ]
    if slope is not None:
        table.append(
            Row(
                "RSS trend over the soak",
                slope,
                None,
                "MiB/min",
                "lower",
                "no growth",
                abs(slope) < 0.5,
            )
        )
    if decisions_per_s is not None:
        table.append(
            Row(
                "decision policy, in process",
                decisions_per_s,
                None,
                "decisions/s",
                "higher",
                "≥ 200,000",
                decisions_per_s >= 200_000,
            )
        )
    table.append(
        Row("cache-hit latency p99", None, None, "ms", "lower", "≤ 1 (measured by bench/cache)")
    )
    return table


def _fixed_rate_p99(rate: str) -> Callable[[Figures], float | None]:
    def get(figures: Figures) -> float | None:
        return figures.fixed_rate.get(rate, {}).get("p99")

    return get


def _fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if unit in ("req/s", "decisions/s", "requests"):
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _ratio(row: Row) -> str:
    if not row.better or row.ours is None or row.theirs is None:
        return ""
    if row.ours <= 0 or row.theirs <= 0:
        return ""
    ratio = row.theirs / row.ours if row.better == "lower" else row.ours / row.theirs
    return f"{ratio:,.1f}×"


def _cells(table: list[Row], with_litellm: bool) -> tuple[list[str], list[list[str]]]:
    headers = ["measure", "unit", "hybridroute"]
    if with_litellm:
        headers += ["LiteLLM", "hybridroute advantage"]
    headers += ["target", "met"]
    lines = []
    for row in table:
        cells = [row.label, row.unit, _fmt(row.ours, row.unit)]
        if with_litellm:
            cells += [_fmt(row.theirs, row.unit), _ratio(row)]
        met = "" if row.meets is None else ("yes" if row.meets else "no")
        cells += [row.target, met]
        lines.append(cells)
    return headers, lines


def text_table(table: list[Row], with_litellm: bool) -> str:
    headers, lines = _cells(table, with_litellm)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(line.rstrip() for line in out)


def markdown(table: list[Row], with_litellm: bool) -> str:
    headers, lines = _cells(table, with_litellm)
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def chart(results: list[Figures], path: Path) -> None:
    """Throughput and latency against concurrency, for each gateway (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for figures in results:
        points: list[dict[str, Any]] = figures.sweep
        if not points:
            continue
        x = [p["concurrency"] for p in points]
        left.plot(x, [p["rps"] for p in points], marker="o", label=figures.name)
        right.plot(x, [p["p50_ms"] for p in points], marker="o", label=f"{figures.name} p50")
        right.plot(
            x,
            [p["p99_ms"] for p in points],
            marker="x",
            linestyle="--",
            label=f"{figures.name} p99",
        )
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent connections")
        axis.grid(True, alpha=0.3)
        axis.legend()
    left.set_ylabel("requests per second")
    left.set_yscale("log")
    left.set_title("Throughput (one gateway core)")
    right.set_ylabel("latency (ms)")
    right.set_yscale("log")
    right.set_title("Latency")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
