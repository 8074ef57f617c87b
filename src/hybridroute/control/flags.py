"""`FlagService`: the five feature flags as operators change them — persisted, audited, and read
by the next decision.

Decisions read the in-memory `FlagStore` (no I/O on the request path); a change goes to the
control store first (so it survives a restart), then into the flag store, then into the audit
trail with who, when, old → new and why. At start the persisted state, when there is one, wins
over the configuration's initial values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from hybridroute.audit.trail import AuditTrail
from hybridroute.errors import RequestError
from hybridroute.routing.flags import FlagStore
from hybridroute.signals import Flag, FlagState
from hybridroute.storage.control import ControlStore

__all__ = ["FLAGS_KEY", "FlagChange", "FlagService", "parse_flag"]

log = logging.getLogger("hybridroute.control")

FLAGS_KEY = "flags"


@dataclass(frozen=True, slots=True)
class FlagChange:
    """What a flag change did."""

    old: FlagState
    new: FlagState
    changed: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "flags": self.new.as_mapping(),
            "previous": self.old.as_mapping(),
            "changed": list(self.changed),
        }


def parse_flag(name: object) -> Flag:
    """A flag by its name (`ENABLE_…`); a clear error listing the five otherwise."""
    names = [f.value for f in Flag]
    if isinstance(name, str):
        wanted = name.strip().upper()
        for flag in Flag:
            if flag.value == wanted or flag.value == f"ENABLE_{wanted}":
                return flag
    raise RequestError(f"unknown flag {name!r}; the flags are {', '.join(names)}", param="flag")


class FlagService:
    """Changes flags durably and audibly."""

    def __init__(self, flags: FlagStore, store: ControlStore, audit: AuditTrail) -> None:
        self._flags = flags
        self._store = store
        self._audit = audit
        self.last_change: dict[str, Any] | None = None

    def current(self) -> FlagState:
        return self._flags.current()

    async def load(self) -> bool:
        """Apply the persisted flag state, if any; whether there was one."""
        raw = await self._store.get_state(FLAGS_KEY)
        if raw is None:
            return False
        data = orjson.loads(raw)
        self._apply(FlagState.from_mapping(data["flags"]))
        self.last_change = data.get("last_change")
        return True

    def _apply(self, state: FlagState) -> None:
        for flag in Flag:
            enabled = state.as_mapping()[flag.value]
            if self._flags.current().as_mapping()[flag.value] != enabled:
                self._flags.set(flag, enabled)

    async def set(self, flag: Flag, enabled: bool, *, actor: str, reason: str) -> FlagChange:
        new = FlagState.from_mapping({**self.current().as_mapping(), flag.value: enabled})
        return await self._change(new, actor=actor, reason=reason, action="update")

    async def disable_all(self, *, actor: str, reason: str) -> FlagChange:
        return await self._change(FlagState.all_off(), actor=actor, reason=reason,
                                  action="disable_all")  # fmt: skip

    async def restore(self, state: FlagState, *, actor: str, reason: str) -> FlagChange:
        """Set all five at once (`enable-all` restores them all on)."""
        return await self._change(state, actor=actor, reason=reason, action="restore")

    async def _change(self, new: FlagState, *, actor: str, reason: str, action: str) -> FlagChange:
        old = self.current()
        changed = tuple(
            name for name, value in new.as_mapping().items() if old.as_mapping()[name] != value
        )
        change = {"by": actor, "reason": reason, "action": action, "changed": list(changed)}
        # Durable first: a change that cannot be kept is not made.
        await self._store.put_state(
            FLAGS_KEY,
            orjson.dumps({"flags": new.as_mapping(), "last_change": change}).decode(),
        )
        self._apply(new)
        self.last_change = change
        await self._audit.record(
            "flags_changed",
            actor,
            {
                "action": action,
                "reason": reason,
                "old": old.as_mapping(),
                "new": new.as_mapping(),
                "changed": list(changed),
            },
        )
        log.warning(
            "flags %s by %s (%s): %s", action, actor, reason, ", ".join(changed) or "no change"
        )
        return FlagChange(old, new, changed)
