"""The drills behind `hybridroute drill`: the seed training guide's four exercises (health check,
alert response, emergency rollback, configuration update), run against a live demo environment.

This module owns the framework — what a scenario, a step and a check are, and the run of one
drill (the four scenarios are in `hybridroute.cli.drill_scenarios`):

- a *scenario* (`Drill`) names the seed exercise it trains, checks its preconditions, injects
  its fault through the simulators' knobs (`PATCH <sim>/_sim/knobs`) and sends the few requests
  that make the fault show (a breaker that opens, an alert that fires, figures with data);
- a *step* (`Step`) is one thing the operator must do, with the commands of
  docs/operations.md that do it, and a *check* that decides whether it is done from what the
  gateway's admin API and audit trail show, never from the operator's word;
- `run_drill` prints the scenario, injects it, announces each step, polls its check every
  `poll_s` until the deadline, times every step, and always puts the simulators' knobs back as
  they were (done, failed, timed out or interrupted alike); it returns a `DrillReport`.

`locate` finds the environment: the `demo.json` that `hybridroute demo` writes in its data
directory, or URLs given explicitly. The click commands are in `hybridroute.cli.drill_cmd`.
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from hybridroute.cli.admin_client import admin_call
from hybridroute.cli.render import table
from hybridroute.demo.runner import DEMO_STATE_FILE

__all__ = [
    "ALERT_RULE",
    "AUTH",
    "BEDROCK",
    "BEDROCK_ROUTE",
    "MCP",
    "Drill",
    "DrillError",
    "DrillReport",
    "Environment",
    "Run",
    "Seen",
    "Step",
    "StepResult",
    "action_text",
    "burst",
    "curl_command",
    "locate",
    "reason_of",
    "require_flags_on",
    "run_drill",
    "send_chat",
]

BEDROCK = "bedrock"
MCP = "mcp"
BEDROCK_ROUTE = "direct_bedrock"
ALERT_RULE = "bedrock_connection_failure"
_HTTP_TIMEOUT_S = 15.0


class DrillError(click.ClickException):
    """The drill cannot go on: a precondition does not hold or a part cannot be reached."""


class DrillTimeout(DrillError):
    """The deadline (`--timeout`) passed before the scenario was even set up."""


# -- the environment ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """Where the drill's gateway and simulators listen, and the admin token to use."""

    gateway: str
    bedrock_sim: str
    mcp_sim: str
    token: str | None = None

    def sim(self, name: str) -> str:
        return self.bedrock_sim if name == BEDROCK else self.mcp_sim


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_state(state: Path) -> tuple[dict[str, Any], str]:
    """What `demo.json` says (or nothing), and why nothing."""
    if not state.is_file():
        return {}, f"{state} does not exist"
    try:
        found = json.loads(state.read_text())
    except (OSError, ValueError) as error:
        return {}, f"{state} cannot be read ({error})"
    if not isinstance(found, dict):
        return {}, f"{state} is not a demo state file"
    pid = found.get("pid")
    if isinstance(pid, int) and not _alive(pid):
        return {}, f"{state} was left by a demo that is no longer running (pid {pid})"
    return found, ""


def locate(
    demo_dir: str,
    *,
    url: str | None,
    bedrock_sim: str | None,
    mcp_sim: str | None,
    token: str | None,
) -> Environment:
    """The environment: explicit URLs first, the rest from `<demo_dir>/demo.json`."""
    found, why = _read_state(Path(demo_dir, DEMO_STATE_FILE))
    gateway = url or found.get("gateway")
    bedrock = bedrock_sim or found.get("bedrock_sim")
    mcp = mcp_sim or found.get("mcp_sim")
    missing = [
        option
        for option, value in (("--url", gateway), ("--bedrock-sim", bedrock), ("--mcp-sim", mcp))
        if not isinstance(value, str) or not value
    ]
    if missing:
        raise DrillError(
            f"no demo environment found: {why or 'it names no ' + ', '.join(missing)}. Start "
            f"one with 'hybridroute demo --data-dir {demo_dir}' (--no-traffic for a quiet one), "
            f"or pass {', '.join(missing)}"
        )
    return Environment(
        gateway=str(gateway).rstrip("/"),
        bedrock_sim=str(bedrock).rstrip("/"),
        mcp_sim=str(mcp).rstrip("/").removesuffix("/mcp"),
        token=token,
    )


def _sim_call(base: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base}{path}", data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        raise DrillError(f"the simulator at {base} answered {error.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise DrillError(
            f"cannot reach the simulator at {base} ({reason}); is the demo running?"
        ) from None


def send_chat(gateway: str, operation_type: str, text: str) -> tuple[int, str | None]:
    """One chat request as a client sends it: its status and the route that served it."""
    body = {"model": "default", "messages": [{"role": "user", "content": text}], "max_tokens": 32}
    request = urllib.request.Request(
        f"{gateway}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-operation-type": operation_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:
            response.read()
            return response.status, response.headers.get("x-hybridroute-route")
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, None
    except (urllib.error.URLError, OSError):
        return 0, None


# -- one drill in progress ---------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One audit record, its data decoded."""

    seq: int
    at: float
    kind: str
    actor: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Seen:
    """What a check saw: done or not, and what to tell the operator about it."""

    done: bool
    detail: str = ""


class Run:
    """One drill in progress: where things are, the deadline, what was injected (and the knobs'
    values before), the audit records since the start, and facts steps hand to later steps."""

    def __init__(
        self,
        env: Environment,
        out: Callable[[str], None],
        *,
        deadline: float,
        poll_s: float,
        cancel: threading.Event,
    ) -> None:
        self.env = env
        self.out = out
        self.deadline = deadline
        self.poll_s = poll_s
        self.cancel = cancel
        self.facts: dict[str, Any] = {}
        self.injected: dict[str, dict[str, Any]] = {}
        self.saved: dict[str, dict[str, Any]] = {}
        self.restored: dict[str, dict[str, Any]] = {}
        self._records: list[Record] = []
        self._baseline = 0
        self._cursor = 0.0  # the newest record's time seen, on the gateway's clock

    # -- the gateway -----------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        return admin_call(self.env.gateway, "GET", path, self.env.token, timeout_s=_HTTP_TIMEOUT_S)

    def flags(self) -> dict[str, bool]:
        return dict(self.get("/admin/feature-flags/bedrock")["flags"])

    def _export(self) -> list[Record]:
        body = self.get(f"/admin/audit/export?format=json&since={self._cursor - 1.0:.6f}")
        return [
            Record(r["seq"], r["at"], r["kind"], r["actor"], json.loads(r["data"] or "{}"))
            for r in body["records"]
        ]

    def start_trail(self) -> None:
        """Remember where the audit trail stands: only later records are the operator's.
        Times are the gateway's (an export from the far future has no records, only the
        gateway's clock), so a gateway whose clock differs from this machine's is read right."""
        empty = self.get("/admin/audit/export?format=json&since=99999999999")
        self._cursor = float(empty["exported_at"]) - 2.0
        self._baseline = max((r.seq for r in self._export()), default=0)

    def records(self, kind: str, after: int = 0) -> list[Record]:
        """The audit records of `kind` written since the drill started (and after seq
        `after`), oldest first."""
        last = self._records[-1].seq if self._records else self._baseline
        for record in self._export():
            if record.seq > last:
                self._records.append(record)
                last = record.seq
                self._cursor = max(self._cursor, record.at)
        floor = max(after, self._baseline)
        return [r for r in self._records if r.kind == kind and r.seq > floor]

    def mark(self) -> int:
        """The newest audit record's seq now (later records happened after this moment)."""
        self.records("")
        return self._records[-1].seq if self._records else self._baseline

    # -- the simulators --------------------------------------------------------------------------

    def inject(self, sim: str, changes: dict[str, Any]) -> None:
        """Change some of a simulator's knobs, remembering what they were."""
        base = self.env.sim(sim)
        before = _sim_call(base, "GET", "/_sim/knobs")
        saved = self.saved.setdefault(sim, {})
        for knob in changes:
            saved.setdefault(knob, before.get(knob))
        _sim_call(base, "PATCH", "/_sim/knobs", changes)
        self.injected.setdefault(sim, {}).update(changes)
        self.out(f"  injected: {sim} simulator knobs {json.dumps(changes)}  ({base}/_sim/knobs)")

    def remove_fault(self) -> bool:
        """Put back every knob the drill changed; whether all are back as they were."""
        for sim, values in list(self.saved.items()):
            base = self.env.sim(sim)
            try:
                _sim_call(base, "PATCH", "/_sim/knobs", values)
                now = _sim_call(base, "GET", "/_sim/knobs")
            except DrillError as error:
                self.out(f"  could not remove the fault: {error.message}")
                continue
            if all(now.get(knob) == value for knob, value in values.items()):
                del self.saved[sim]
                self.restored.setdefault(sim, {}).update(values)
                self.out(f"  fault removed: {sim} simulator knobs back to {json.dumps(values)}")
        return not self.saved

    def say(self, text: str) -> None:
        """Print a paragraph, wrapped and indented."""
        self.out(textwrap.fill(text, 96, initial_indent="  ", subsequent_indent="  "))

    # -- waiting ---------------------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        if self.cancel.wait(max(0.0, seconds)):
            raise KeyboardInterrupt

    def wait_for(self, check: Callable[[Run], Seen]) -> Seen:
        """Poll `check` until it sees the step done or the deadline passes."""
        shown = ""
        while True:
            try:
                seen = check(self)
            except click.ClickException as error:
                seen = Seen(False, f"cannot read the gateway: {error.message}")
            if seen.done:
                return seen
            if seen.detail and seen.detail != shown:
                self.out(f"  … {seen.detail}")
                shown = seen.detail
            left = self.deadline - time.monotonic()
            if left <= 0:
                return seen
            self.pause(min(self.poll_s, left))


def _fill(text: str, facts: dict[str, Any]) -> str:
    """Put what the drill knows (`<alert-id>`, `<start-version>`, ...) into a command."""
    for name, value in facts.items():
        text = text.replace(f"<{name}>", str(value))
    return text


# -- scenarios, steps, reports -----------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One thing the operator must do, the runbook's commands for it, and its check."""

    name: str
    title: str
    commands: tuple[str, ...]
    checked: str
    check: Callable[[Run], Seen]
    before: Callable[[Run], None] | None = None
    note: str = ""


@dataclass(frozen=True)
class Drill:
    """One seed training exercise as a drill."""

    name: str
    summary: str
    exercise: str
    expected: str
    scenario: str
    setup: Callable[[Run], None]
    steps: tuple[Step, ...]


@dataclass
class StepResult:
    name: str
    title: str
    status: str = "not reached"  # done | timed out | interrupted | not reached
    seconds: float | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "title": self.title,
            "status": self.status,
            "seconds": self.seconds,
            "detail": self.detail,
        }


@dataclass
class DrillReport:
    """How a drill went: each step's result and time, the total, the fault's removal."""

    drill: str
    exercise: str
    expected: str
    gateway: str
    timeout_s: float
    started_at: float
    steps: list[StepResult]
    outcome: str = "not started"  # completed | timed out | interrupted | failed
    problem: str = ""
    total_s: float = 0.0
    injected: dict[str, dict[str, Any]] = field(default_factory=dict)
    restored: dict[str, dict[str, Any]] = field(default_factory=dict)
    fault_removed: bool = False

    @property
    def completed(self) -> bool:
        return self.outcome == "completed"

    @property
    def passed(self) -> bool:
        return self.completed and self.fault_removed

    def as_dict(self) -> dict[str, Any]:
        return {
            "drill": self.drill,
            "exercise": self.exercise,
            "expected": self.expected,
            "gateway": self.gateway,
            "started_at": self.started_at,
            "timeout_s": self.timeout_s,
            "outcome": self.outcome,
            "completed": self.completed,
            "passed": self.passed,
            "problem": self.problem,
            "steps": [s.as_dict() for s in self.steps],
            "total_s": self.total_s,
            "injected": self.injected,
            "restored": self.restored,
            "fault_removed": self.fault_removed,
        }

    def render(self) -> str:
        rows = [
            [
                str(i),
                s.title,
                s.status,
                "-" if s.seconds is None else f"{s.seconds:.1f} s",
                s.detail,
            ]
            for i, s in enumerate(self.steps, 1)
        ]
        lines = [
            f"Report: drill {self.drill} (the seed's {self.exercise})",
            table(["#", "step", "result", "took", "observed"], rows),
            f"total: {self.total_s:.1f} s (the guide allows {self.expected})",
        ]
        if self.injected:
            state = "yes" if self.fault_removed else "NO — put the knobs back by hand"
            lines.append(f"fault removed: {state} (injected {json.dumps(self.injected)})")
        why = {
            "completed": "every step observed done",
            "timed out": f"a step was not done within --timeout {self.timeout_s:g} s",
            "interrupted": "interrupted",
            "failed": self.problem,
        }.get(self.outcome, self.outcome)
        lines.append(f"result: {'PASS' if self.passed else 'FAIL'} — {why}")
        return "\n".join(lines)


def _introduce(drill: Drill, run: Run, timeout_s: float) -> None:
    env = run.env
    run.out(f"Drill {drill.name}: the seed's {drill.exercise} (the guide allows {drill.expected})")
    run.out(
        f"  gateway {env.gateway}, bedrock simulator {env.bedrock_sim}, "
        f"mcp simulator {env.mcp_sim}; deadline {timeout_s:g} s (--timeout)"
    )
    run.out("\nScenario")
    for paragraph in drill.scenario.split("\n\n"):
        run.say(paragraph)
        run.out("")


def _shell(run: Run) -> None:
    run.out("\nIn your shell (docs/operations.md §0):")
    run.out(f"  export GATEWAY={run.env.gateway}")
    run.out("  export HYBRIDROUTE_URL=$GATEWAY")
    run.out("  export HYBRIDROUTE_ADMIN_TOKEN=$ADMIN_TOKEN   # if the gateway has admin tokens")


def _announce(step: Step, index: int, count: int, run: Run) -> None:
    run.out(f"\nStep {index}/{count}: {_fill(step.title, run.facts)}")
    run.out("  commands (docs/operations.md):")
    for command in step.commands:
        for line in _fill(command, run.facts).splitlines():
            run.out(f"    {line}")
    if step.note:
        run.say(step.note)
    run.out(textwrap.fill(f"checked: {step.checked}", 96, initial_indent="  ",
                          subsequent_indent="    "))  # fmt: skip
    run.out("  waiting for it …")


def run_drill(
    drill: Drill,
    env: Environment,
    *,
    timeout_s: float,
    poll_s: float = 0.5,
    out: Callable[[str], None],
    cancel: threading.Event | None = None,
) -> DrillReport:
    """Run one drill to its end, a timeout, an error or an interruption; the simulators' knobs
    are always put back. `cancel`, when set from another thread, interrupts it like Ctrl-C."""
    began = time.monotonic()
    run = Run(
        env, out, deadline=began + timeout_s, poll_s=poll_s, cancel=cancel or threading.Event()
    )
    report = DrillReport(
        drill=drill.name,
        exercise=drill.exercise,
        expected=drill.expected,
        gateway=env.gateway,
        timeout_s=timeout_s,
        started_at=time.time(),
        steps=[StepResult(s.name, s.title) for s in drill.steps],
    )
    current: StepResult | None = None
    step_began = began
    try:
        _introduce(drill, run, timeout_s)
        run.start_trail()
        drill.setup(run)
        _shell(run)
        for index, (step, result) in enumerate(zip(drill.steps, report.steps, strict=True), 1):
            if step.before is not None:
                step.before(run)
            current = result
            result.title = _fill(step.title, run.facts)
            _announce(step, index, len(drill.steps), run)
            step_began = time.monotonic()
            seen = run.wait_for(step.check)
            result.seconds = round(time.monotonic() - step_began, 1)
            result.detail = seen.detail
            if not seen.done:
                result.status = "timed out"
                report.outcome = "timed out"
                out(f"  ✗ step not done within the deadline (--timeout {timeout_s:g} s)")
                break
            result.status = "done"
            out(f"  ✓ step done in {result.seconds:.1f} s — {seen.detail}")
        else:
            report.outcome = "completed"
    except KeyboardInterrupt:
        report.outcome = "interrupted"
        if current is not None and current.status == "not reached":
            current.status = "interrupted"
            current.seconds = round(time.monotonic() - step_began, 1)
        out("\n  interrupted")
    except DrillTimeout as error:
        report.outcome, report.problem = "timed out", error.message
        out(f"  ✗ {error.message}")
    except click.ClickException as error:
        report.outcome, report.problem = "failed", error.message
        out(f"  ✗ {error.message}")
    finally:
        if run.saved:
            out("")
        report.fault_removed = run.remove_fault()
        out("")
        report.injected = run.injected
        report.restored = run.restored
        report.total_s = round(time.monotonic() - began, 1)
    return report


# -- shared pieces of the scenarios ------------------------------------------------------------


def burst(run: Run, operation_type: str, count: int, text: str) -> list[tuple[int, str | None]]:
    """`count` requests at once, each with its own text (so none is a cache hit)."""

    def one(i: int) -> tuple[int, str | None]:
        return send_chat(run.env.gateway, operation_type, f"{text} (drill request {i + 1})")

    with ThreadPoolExecutor(max_workers=min(count, 32)) as pool:
        return list(pool.map(one, range(count)))


def require_flags_on(run: Run) -> None:
    off = [name for name, on in run.flags().items() if not on]
    if off:
        raise DrillError(
            f"this drill starts from hybrid routing, but {', '.join(off)} "
            f"{'is' if len(off) == 1 else 'are'} off; turn the flags on first: "
            'hybridroute flags enable-all --reason "before the drill"'
        )


def reason_of(record: Record) -> str:
    return str(record.data.get("reason") or "").strip()


def action_text(action: str, target: str | None, enabled: Any = True) -> str:
    words = {
        "cache_aggressive": "aggressive caching",
        "breaker_open": "breaker held open",
        "breaker_reset": "breaker reset",
        "route_disable": "route disabled",
        "route_enable": "route enabled",
        "maintenance": "maintenance mode",
    }.get(action, action)
    if action in ("cache_aggressive", "maintenance"):
        return f"{words} {'on' if enabled else 'off'}"
    return f"{words} on {target}"


AUTH = '-H "Authorization: Bearer $ADMIN_TOKEN"'


def curl_command(path: str) -> str:
    return f'curl -sS {AUTH} "$GATEWAY{path}"'
