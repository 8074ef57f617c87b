"""`hybridroute deploy check`: validate a deployment before (and after) it takes traffic.

Runs the smoke tests against the configured, running routes, the integration tests of the
gateway's systems and the environment's gates (`hybridroute.deploy`), prints the deployment
report, writes it as Markdown and JSON under `--out`, and exits 1 when the deployment FAILED
(2 when the configuration does not even load).

Which configuration: `--config FILE` (or `HYBRIDROUTE_CONFIG`); without one, the running demo's
(`hybridroute demo` leaves the addresses of its simulators in `<data-dir>/demo.json`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from hybridroute.cli.config_cmd import load_or_exit
from hybridroute.config.load import parse_config
from hybridroute.config.schema import GatewayConfig
from hybridroute.demo.config import DEMO_STORE_FILE, embedded_config_data
from hybridroute.deploy.gates import ENVIRONMENTS
from hybridroute.deploy.runner import run_deploy_check

__all__ = ["deploy_group"]


def _demo_config(demo_dir: Path) -> tuple[GatewayConfig, str]:
    state = demo_dir / "demo.json"
    try:
        demo = json.loads(state.read_text())
        bedrock, mcp = demo["bedrock_sim"], demo["mcp_sim"]
    except FileNotFoundError:
        raise click.ClickException(
            f"no configuration given and no running demo found ({state} is missing): pass "
            "--config FILE, or start `hybridroute demo` (with --data-dir to match --demo-dir)"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"{state} is not a demo state file: {exc}") from None
    data = embedded_config_data(bedrock_url=bedrock, mcp_url=f"{mcp.rstrip('/')}/mcp")
    # The demo's own store (the check itself writes nothing into it).
    data["storage"] = {"backend": "sqlite", "sqlite_path": str(demo_dir / DEMO_STORE_FILE)}
    return parse_config(data, source=str(state)), f"the running demo ({state})"


@click.group("deploy")
def deploy_group() -> None:
    """Validate a deployment: smoke tests, integration tests, environment gates, a report."""


@deploy_group.command("check")
@click.option(
    "--env",
    "environment",
    type=click.Choice(ENVIRONMENTS),
    default="development",
    show_default=True,
    help="The environment whose gates apply.",
)
@click.option(
    "--config",
    "config_file",
    envvar="HYBRIDROUTE_CONFIG",
    type=click.Path(dir_okay=False),
    help="The configuration to check (env HYBRIDROUTE_CONFIG); default: the running demo's.",
)
@click.option(
    "--demo-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Where the running demo keeps its state (used without --config).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("deploy-reports"),
    show_default=True,
    help="Where the Markdown and JSON reports are written.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead.")
def deploy_check(
    environment: str, config_file: str | None, demo_dir: Path, out: Path, as_json: bool
) -> None:
    """Check a deployment and write its report (exit 1 when it FAILED)."""
    if config_file is not None:
        config, source = load_or_exit(config_file), config_file
    else:
        config, source = _demo_config(demo_dir)
    report = asyncio.run(run_deploy_check(config, environment, source=source))
    out.mkdir(parents=True, exist_ok=True)
    markdown = out / f"{report.deployment_id}.md"
    markdown.write_text(report.markdown())
    (out / f"{report.deployment_id}.json").write_text(json.dumps(report.as_dict(), indent=2))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(report.markdown())
        click.echo(f"report written to {markdown} (and .json beside it)", err=True)
    if not report.passed:
        raise SystemExit(1)
