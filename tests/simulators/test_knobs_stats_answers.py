"""Knobs validation and fault picking, Stats bookkeeping, and the simulated answer."""

from __future__ import annotations

import random
import time

import pytest

from hybridroute.simulators.answers import count_tokens, simulated_answer
from hybridroute.simulators.knobs import ERROR_KINDS, Knobs
from hybridroute.simulators.stats import Stats

# --- Knobs -----------------------------------------------------------------------------------


def test_knobs_defaults_and_as_dict() -> None:
    assert Knobs().as_dict() == {
        "latency_ms": 0.0,
        "jitter_ms": 0.0,
        "error_rate": 0.0,
        "error_kind": "unavailable",
        "throttle_rate": 0.0,
        "hang": False,
        "outage": False,
        "stream_chunks": 4,
        "stream_chunk_delay_ms": 0.0,
        "stream_fail_after": None,
    }


def test_update_applies_a_partial_change() -> None:
    knobs = Knobs()
    knobs.update({"error_rate": 1, "error_kind": "throttling", "stream_fail_after": 2})
    assert (knobs.error_rate, knobs.error_kind, knobs.stream_fail_after) == (1.0, "throttling", 2)
    assert knobs.latency_ms == 0.0


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"error_rate": 1.5}, ["'error_rate'", "[0, 1]"]),
        ({"throttle_rate": -0.1}, ["'throttle_rate'", "[0, 1]"]),
        ({"error_rate": True}, ["'error_rate'"]),
        ({"latency_ms": -1}, ["'latency_ms'", ">= 0"]),
        ({"jitter_ms": "fast"}, ["'jitter_ms'"]),
        ({"stream_chunks": 0}, ["'stream_chunks'", ">= 1"]),
        ({"stream_chunks": 2.5}, ["'stream_chunks'"]),
        ({"stream_fail_after": -1}, ["'stream_fail_after'"]),
        ({"hang": "yes"}, ["'hang'", "true or false"]),
        ({"error_kind": "meteor"}, ["'error_kind'", "throttling", "truncate"]),
        ({"colour": "red"}, ["'colour'", "latency_ms", "stream_fail_after"]),
    ],
)
def test_update_rejects_bad_values_naming_them(change: dict[str, object], named: list[str]) -> None:
    knobs = Knobs()
    with pytest.raises(ValueError, match=r".") as caught:
        knobs.update(change)
    for fragment in named:
        assert fragment in str(caught.value)
    assert knobs == Knobs()


def test_update_is_all_or_nothing() -> None:
    knobs = Knobs()
    with pytest.raises(ValueError, match="error_rate"):
        knobs.update({"latency_ms": 100, "error_rate": 7})
    assert knobs.latency_ms == 0.0


def test_reset_restores_defaults() -> None:
    knobs = Knobs()
    knobs.update({"outage": True, "latency_ms": 5, "stream_fail_after": 0})
    knobs.reset()
    assert knobs == Knobs()


def test_pick_failure_extremes() -> None:
    rng = random.Random(1)
    assert Knobs().pick_failure(rng) is None
    assert Knobs(throttle_rate=1.0, error_rate=1.0).pick_failure(rng) == "throttling"
    assert Knobs(error_rate=1.0, error_kind="garbage").pick_failure(rng) == "garbage"


def test_pick_failure_rates_are_respected_and_seedable() -> None:
    knobs = Knobs(throttle_rate=0.2, error_rate=0.5, error_kind="internal")
    picks = [knobs.pick_failure(random.Random(42)) for _ in range(3)]
    assert len(set(picks)) == 1  # same seed, same first pick
    rng = random.Random(3)
    draws = [knobs.pick_failure(rng) for _ in range(4000)]
    throttled = draws.count("throttling") / len(draws)
    internal = draws.count("internal") / len(draws)
    assert 0.17 < throttled < 0.23
    assert 0.37 < internal < 0.43  # 0.8 * 0.5


def test_error_kinds_cover_the_contract() -> None:
    assert ERROR_KINDS == (
        "throttling",
        "unavailable",
        "internal",
        "model_timeout",
        "model_not_ready",
        "validation",
        "access_denied",
        "model_error",
        "garbage",
        "truncate",
    )


@pytest.mark.anyio
async def test_delay_sleeps_latency_and_never_negative() -> None:
    started = time.monotonic()
    await Knobs(latency_ms=30).delay()
    assert time.monotonic() - started >= 0.029
    started = time.monotonic()
    await Knobs(latency_ms=1, jitter_ms=50).delay(random.Random(0))  # may clamp at zero
    assert time.monotonic() - started < 0.5


# --- Stats -----------------------------------------------------------------------------------


def test_stats_counts_by_outcome_and_bounds_history() -> None:
    stats = Stats()
    for index in range(250):
        stats.record(outcome="ok" if index % 5 else "error:throttling", index=index)
    summary = stats.as_dict()
    assert summary["requests"] == 250
    assert summary["by_outcome"] == {"error:throttling": 50, "ok": 200}
    recent = summary["recent"]
    assert isinstance(recent, list)
    assert len(recent) == 50
    assert recent[-1]["index"] == 249
    assert isinstance(recent[-1]["at"], float)
    assert len(stats.recent) == 200
    stats.clear()
    assert stats.as_dict() == {"requests": 0, "by_outcome": {}, "recent": []}


# --- answers ---------------------------------------------------------------------------------


def test_simulated_answer_echoes_collapsed_text() -> None:
    text, finish, tokens = simulated_answer("model-x", "  hello \n\t world  ", None)
    assert text == "Simulated answer from model-x: hello world"
    assert (finish, tokens) == ("stop", 6)


def test_simulated_answer_cuts_echo_at_200_characters() -> None:
    text, _, _ = simulated_answer("s", "x" * 500, None)
    assert text == "Simulated answer from s: " + "x" * 200


def test_simulated_answer_respects_max_tokens() -> None:
    assert simulated_answer("s", "one two three", 3) == ("Simulated answer from", "length", 3)
    assert simulated_answer("s", "one", 50) == ("Simulated answer from s: one", "stop", 5)
    with pytest.raises(ValueError, match="max_tokens"):
        simulated_answer("s", "one", 0)


def test_count_tokens() -> None:
    assert count_tokens("") == 0
    assert count_tokens("   ") == 1
    assert count_tokens("a b  c\nd") == 4
