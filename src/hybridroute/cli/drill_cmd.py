"""`hybridroute drill health-check|alert-response|emergency-rollback|config-update`: the seed
training guide's exercises as timed drills against the demo environment.

This module owns the command line only: the `drill` group, one subcommand per drill, the options
(where the environment is, the admin token, the deadline, the poll interval, `--json`), turning
SIGTERM into an interruption so the injected fault is still removed, and the exit status (0 when
the drill was completed and its fault removed, else 1). The scenarios, steps, checks and the run
itself are in `hybridroute.cli.drills`.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import click

from hybridroute.cli.admin_client import admin_token_option
from hybridroute.cli.drill_scenarios import DRILLS
from hybridroute.cli.drills import Drill, locate, run_drill
from hybridroute.demo.config import DEMO_DATA_DIR

__all__ = ["drill_group"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(ctx: click.Context, param: click.Parameter, text: str) -> float:
    """`90`, `90s`, `10m`, `1h` → seconds."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 10m or 1h") from None
    if not seconds > 0:
        raise click.BadParameter("must be above 0")
    return seconds


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a drill runs, SIGTERM interrupts it like Ctrl-C (so its fault is still removed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _InOrder(click.Group):
    """Lists the drills in the seed guide's order (exercise 1 to 4), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group("drill", cls=_InOrder)
def drill_group() -> None:
    """Timed drills of the seed training guide's exercises, against `hybridroute demo`.

    Each drill prints its scenario, injects it through the simulators' knobs, lists the
    runbook's commands for each step, waits until the gateway's admin API and audit trail show
    the step done, and reports the time taken. The injected fault is always removed at the end.
    Exit status 0 when every step was done in time, 1 otherwise.
    """


def _drill_command(drill: Drill) -> Callable[..., None]:
    @click.option(
        "--demo-dir",
        default=DEMO_DATA_DIR,
        show_default=True,
        type=click.Path(file_okay=False),
        help="The demo's --data-dir, where it writes demo.json (where everything listens).",
    )
    @click.option(
        "--url",
        envvar="HYBRIDROUTE_URL",
        default=None,
        help="The gateway's base URL (env HYBRIDROUTE_URL; default: from demo.json).",
    )
    @click.option("--bedrock-sim", help="The Bedrock simulator's base URL (default: demo.json).")
    @click.option("--mcp-sim", help="The MCP simulator's base URL (default: demo.json).")
    @admin_token_option
    @click.option(
        "--timeout",
        "timeout_s",
        default="10m",
        show_default=True,
        callback=_seconds,
        help="Deadline for the whole drill (90s, 10m, 1h).",
    )
    @click.option(
        "--poll-interval",
        "poll_s",
        type=click.FloatRange(0.05, 10),
        default=0.5,
        show_default=True,
        help="Seconds between two looks at the gateway.",
    )
    @click.option(
        "--json", "as_json", is_flag=True, help="Print the report as JSON (progress: stderr)."
    )
    def command(
        demo_dir: str,
        url: str | None,
        bedrock_sim: str | None,
        mcp_sim: str | None,
        token: str | None,
        **options: Any,  # timeout_s, poll_s, as_json
    ) -> None:
        env = locate(demo_dir, url=url, bedrock_sim=bedrock_sim, mcp_sim=mcp_sim, token=token)
        timeout_s, poll_s = float(options["timeout_s"]), float(options["poll_s"])
        as_json = bool(options["as_json"])

        def out(line: str) -> None:
            click.echo(line, err=as_json)

        with _sigterm_interrupts():
            report = run_drill(drill, env, timeout_s=timeout_s, poll_s=poll_s, out=out)
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        else:
            click.echo(report.render())
        raise SystemExit(0 if report.passed else 1)

    command.__doc__ = drill.summary
    return command


def _register() -> None:
    for name, drill in DRILLS.items():
        decorated: Any = _drill_command(drill)
        drill_group.command(name, short_help=drill.summary)(decorated)


_register()
