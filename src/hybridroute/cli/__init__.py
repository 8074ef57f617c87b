"""The `hybridroute` command line: serve, demo, route, health, cost, report, config, sim,
flags, rules, rollback, action, audit, compliance, deploy, mcp, db."""

from __future__ import annotations

import logging
import os

import click

from hybridroute import __version__
from hybridroute.cli.audit_cmd import audit_group, compliance_group
from hybridroute.cli.config_cmd import config_group
from hybridroute.cli.control_cmd import action_group, flags_group, rollback_command, rules_group
from hybridroute.cli.cost_cmd import cost_command
from hybridroute.cli.db_cmd import db_group
from hybridroute.cli.demo_cmd import demo_command
from hybridroute.cli.deploy_cmd import deploy_group
from hybridroute.cli.drill_cmd import drill_group
from hybridroute.cli.health_cmd import health_command
from hybridroute.cli.mcp_cmd import mcp_group
from hybridroute.cli.report_cmd import report_command
from hybridroute.cli.route_cmd import route_command
from hybridroute.cli.serve_cmd import serve_command
from hybridroute.cli.sim_cmd import sim_group

__all__ = ["main"]


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group()
@click.version_option(__version__, prog_name="hybridroute")
@click.option(
    "--log-level",
    default=lambda: os.environ.get("HYBRIDROUTE_LOG_LEVEL", "warning"),
    show_default="warning (env HYBRIDROUTE_LOG_LEVEL)",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
def cli(log_level: str) -> None:
    """hybridroute: an AI routing gateway for Direct Bedrock and MCP routes."""
    _configure_logging(log_level)


cli.add_command(serve_command)
cli.add_command(demo_command)
cli.add_command(route_command)
cli.add_command(health_command)
cli.add_command(cost_command)
cli.add_command(report_command)
cli.add_command(config_group)
cli.add_command(sim_group)
cli.add_command(flags_group)
cli.add_command(rules_group)
cli.add_command(rollback_command)
cli.add_command(action_group)
cli.add_command(audit_group)
cli.add_command(compliance_group)
cli.add_command(drill_group)
cli.add_command(mcp_group)
cli.add_command(deploy_group)
cli.add_command(db_group)


def main() -> None:
    cli(prog_name="hybridroute")
