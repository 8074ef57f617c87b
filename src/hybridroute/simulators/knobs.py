"""Runtime fault knobs shared by the upstream simulators.

One mutable `Knobs` instance belongs to each simulator. The control endpoints change it while the
simulator serves traffic; request handlers read it on every request, so a change takes effect on
the next request. `update` validates the whole change before applying any of it.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio

__all__ = ["ERROR_KINDS", "Knobs"]

ERROR_KINDS: tuple[str, ...] = (
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

_module_rng = random.Random()


@dataclass
class Knobs:
    """What the simulator should do to the next requests (latency, failures, stream shape)."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    error_kind: str = "unavailable"
    throttle_rate: float = 0.0
    hang: bool = False
    outage: bool = False
    stream_chunks: int = 4
    stream_chunk_delay_ms: float = 0.0
    stream_fail_after: int | None = None

    def update(self, values: Mapping[str, object]) -> None:
        """Apply a partial change; raise `ValueError` (and change nothing) if any entry is bad."""
        checked = {name: _validate(name, value) for name, value in values.items()}
        for name, value in checked.items():
            setattr(self, name, value)

    def reset(self) -> None:
        """Put every knob back to its default."""
        defaults = Knobs()
        for knob in dataclasses.fields(self):
            setattr(self, knob.name, getattr(defaults, knob.name))

    def as_dict(self) -> dict[str, object]:
        return {knob.name: getattr(self, knob.name) for knob in dataclasses.fields(self)}

    async def delay(self, rng: random.Random | None = None) -> None:
        """Sleep for `latency_ms` ± a uniform `jitter_ms` (never less than zero)."""
        source = rng if rng is not None else _module_rng
        jitter = source.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms > 0 else 0.0
        seconds = max(0.0, self.latency_ms + jitter) / 1000.0
        if seconds > 0:
            await anyio.sleep(seconds)

    def pick_failure(self, rng: random.Random) -> str | None:
        """The failure to inject into this request, if any.

        "throttling" with probability `throttle_rate`; otherwise `error_kind` with probability
        `error_rate`; otherwise None.
        """
        if self.throttle_rate > 0 and rng.random() < self.throttle_rate:
            return "throttling"
        if self.error_rate > 0 and rng.random() < self.error_rate:
            return self.error_kind
        return None


def _as_number(value: object) -> float | None:
    """The value as a float if it is a real JSON number (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _check_rate(name: str, value: object) -> object:
    number = _as_number(value)
    if number is None or not 0.0 <= number <= 1.0:
        raise ValueError(f"knob {name!r} must be a number in [0, 1], got {value!r}")
    return number


def _check_millis(name: str, value: object) -> object:
    number = _as_number(value)
    if number is None or not math.isfinite(number) or number < 0:
        raise ValueError(
            f"knob {name!r} must be a finite number of milliseconds >= 0, got {value!r}"
        )
    return number


def _check_flag(name: str, value: object) -> object:
    if not isinstance(value, bool):
        raise ValueError(f"knob {name!r} must be true or false, got {value!r}")
    return value


def _check_kind(name: str, value: object) -> object:
    if value not in ERROR_KINDS:
        raise ValueError(f"knob {name!r} must be one of {', '.join(ERROR_KINDS)}; got {value!r}")
    return value


def _check_chunks(name: str, value: object) -> object:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"knob {name!r} must be an integer >= 1, got {value!r}")
    return value


def _check_fail_after(name: str, value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"knob {name!r} must be null or an integer >= 0, got {value!r}")
    return value


_VALIDATORS: dict[str, Callable[[str, object], object]] = {
    "latency_ms": _check_millis,
    "jitter_ms": _check_millis,
    "error_rate": _check_rate,
    "error_kind": _check_kind,
    "throttle_rate": _check_rate,
    "hang": _check_flag,
    "outage": _check_flag,
    "stream_chunks": _check_chunks,
    "stream_chunk_delay_ms": _check_millis,
    "stream_fail_after": _check_fail_after,
}


def _validate(name: str, value: object) -> object:
    validator = _VALIDATORS.get(name)
    if validator is None:
        raise ValueError(f"unknown knob {name!r}; valid knobs are: {', '.join(_VALIDATORS)}")
    return validator(name, value)
