"""The cache policy: which requests may be cached, for how long, and the reason given."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hybridroute.caching import CachePolicy, CacheSettings, CacheVerdict
from hybridroute.types import ChatMessage, GenerationRequest, Priority

SETTINGS = CacheSettings(
    default_ttl_s=300.0,
    ttl_s={"emergency": 0.0, "background": 3600.0},
    max_temperature=0.5,
    aggressive_ttl_multiplier=4.0,
)


def request(operation: str = "standard", temperature: float | None = 0.2) -> GenerationRequest:
    return GenerationRequest(
        operation_type=operation,
        priority=Priority.MEDIUM,
        system=(),
        messages=(ChatMessage("user", "hi"),),
        max_tokens=100,
        temperature=temperature,
        top_p=None,
        stop=(),
        decision_id="d",
        requested_model="m",
    )


def verdict(
    req: GenerationRequest, *, aggressive: bool = False, settings: CacheSettings = SETTINGS
) -> CacheVerdict:
    return CachePolicy(settings).verdict(req, aggressive=aggressive)


def test_a_deterministic_enough_request_is_cached_for_its_operations_ttl():
    assert verdict(request()) == CacheVerdict(
        True, 300.0, "temperature 0.2 at or below 0.5: ttl 300 s"
    )
    assert verdict(request("background", 0.0)) == CacheVerdict(
        True, 3600.0, "temperature 0 at or below 0.5: ttl 3600 s"
    )


def test_the_temperature_limit_itself_is_still_cacheable():
    assert verdict(request(temperature=0.5)).cacheable


def test_a_higher_temperature_is_not_cached():
    assert verdict(request(temperature=0.7)) == CacheVerdict(
        False, 0.0, "temperature 0.7 above 0.5"
    )
    assert not verdict(request(temperature=0.5000001)).cacheable
    assert not verdict(request(temperature=float("nan"))).cacheable


def test_an_unset_temperature_is_not_cached():
    result = verdict(request(temperature=None))
    assert not result.cacheable
    assert result.ttl_s == 0.0
    assert result.reason.startswith("temperature unset")


def test_an_operation_with_ttl_0_is_never_cached():
    assert verdict(request("emergency", 0.0)) == CacheVerdict(
        False, 0.0, "operation emergency is never cached (ttl 0)"
    )


def test_ttl_0_is_never_cached_even_in_aggressive_mode():
    result = verdict(request("emergency", 0.0), aggressive=True)
    assert result == CacheVerdict(False, 0.0, "operation emergency is never cached (ttl 0)")


def test_a_default_ttl_of_0_makes_every_unlisted_operation_uncacheable():
    settings = replace(SETTINGS, default_ttl_s=0.0)
    assert not verdict(request("standard"), settings=settings, aggressive=True).cacheable
    assert verdict(request("background"), settings=settings).cacheable


def test_a_disabled_cache_caches_nothing():
    off = replace(SETTINGS, enabled=False)
    for aggressive in (False, True):
        assert verdict(request(), settings=off, aggressive=aggressive) == CacheVerdict(
            False, 0.0, "cache disabled"
        )


@pytest.mark.parametrize("temperature", [None, 0.0, 0.7, 1.0, 2.0])
def test_aggressive_mode_lifts_the_temperature_limit_and_multiplies_the_ttl(
    temperature: float | None,
):
    assert verdict(request(temperature=temperature), aggressive=True) == CacheVerdict(
        True, 1200.0, "aggressive caching: ttl 300 s x 4"
    )
    assert verdict(request("background", temperature), aggressive=True).ttl_s == 14400.0


def test_settings_are_validated_and_their_ttl_map_is_a_private_copy():
    ttls = {"standard": 60.0}
    settings = CacheSettings(ttl_s=ttls)
    ttls["standard"] = 0.0
    assert settings.ttl_for("standard") == 60.0
    assert settings.ttl_for("unlisted") == 300.0
    with pytest.raises(TypeError):
        settings.ttl_s["standard"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_entries": 0}, "max_entries"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_entry_bytes": 0}, "max_entry_bytes"),
        ({"default_ttl_s": -1.0}, "default_ttl_s"),
        ({"ttl_s": {"standard": -5.0}}, "standard"),
        ({"ttl_s": {"standard": float("inf")}}, "standard"),
        ({"max_temperature": -0.1}, "max_temperature"),
        ({"aggressive_ttl_multiplier": 0.0}, "aggressive_ttl_multiplier"),
    ],
)
def test_invalid_settings_are_refused(changes: dict[str, object], message: str):
    with pytest.raises(ValueError, match=message):
        CacheSettings(**changes)  # type: ignore[arg-type]
