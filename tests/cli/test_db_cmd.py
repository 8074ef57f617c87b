"""`hybridroute db migrate|status` against the machine's PostgreSQL, and the commands
docs/deployment.md shows."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import yaml
from click.testing import CliRunner

from hybridroute.cli import cli

DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEPLOYMENT = (Path(__file__).parents[2] / "docs" / "deployment.md").read_text()


def _drop(schema: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"cli_{secrets.token_hex(4)}"
    yield name
    _drop(name)


def test_migrate_then_status(schema: str):
    runner = CliRunner()
    status = runner.invoke(cli, ["db", "status", "--dsn", DSN, "--schema", schema])
    assert status.exit_code == 1
    assert f"schema {schema}: applied none; pending [1]" in status.output
    first = runner.invoke(cli, ["db", "migrate", "--dsn", DSN, "--schema", schema])
    assert first.exit_code == 0, first.output
    assert f"schema {schema}: applied 0001_initial" in first.output
    again = runner.invoke(cli, ["db", "migrate", "--dsn", DSN, "--schema", schema])
    assert "up to date" in again.output
    status = runner.invoke(cli, ["db", "status", "--dsn", DSN, "--schema", schema])
    assert status.exit_code == 0
    assert "applied [1]; pending none" in status.output


def test_the_schema_and_dsn_come_from_the_configuration(schema: str, tmp_path: Path):
    config = yaml.safe_load(
        (Path(__file__).parents[2] / "docs" / "example-config.yaml").read_text()
    )
    config["storage"] = {
        "backend": "postgres",
        "postgres_dsn": "env:FLEET_DSN",
        "postgres_schema": schema,
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(
        cli, ["db", "migrate", "--config", str(path)], env={"FLEET_DSN": DSN}
    )
    assert result.exit_code == 0, result.output
    assert f"schema {schema}: applied 0001_initial" in result.output
    missing = CliRunner().invoke(cli, ["db", "migrate", "--config", str(path)], env={})
    assert missing.exit_code == 1
    assert "FLEET_DSN is not set" in missing.output


def test_no_database_and_an_unreachable_one_are_clear_errors():
    result = CliRunner().invoke(cli, ["db", "migrate"], env={"HYBRIDROUTE_POSTGRES_DSN": ""})
    assert result.exit_code == 1
    assert "no database given" in result.output
    result = CliRunner().invoke(
        cli, ["db", "status", "--dsn", "postgresql://nobody:secret@127.0.0.1:9/none"]
    )
    assert result.exit_code == 1
    assert "cannot connect to PostgreSQL at 127.0.0.1:9/none" in result.output
    assert "secret" not in result.output


def test_the_deployment_doc_commands_run():
    (block,) = [
        b for b in re.findall(r"```bash\n(.*?)```", DEPLOYMENT, flags=re.DOTALL) if "db " in b
    ]
    schema = f"doc_{secrets.token_hex(4)}"
    script = block.replace("hybridroute_demo", schema)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"schema {schema}: applied [1]; pending none" in result.stdout
    finally:
        _drop(schema)
