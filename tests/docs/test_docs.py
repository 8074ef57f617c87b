"""The documentation is executed: its code runs and its quoted output is what the code prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import yaml
from click.testing import CliRunner

from hybridroute.cli import cli
from tests.loopback import RunningGateway

DOCS = Path(__file__).parents[2]
README = (DOCS / "README.md").read_text()


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_readme_openai_example_runs_against_the_gateway(gateway: RunningGateway):
    (code,) = _blocks(README, "python")
    code = code.replace("http://127.0.0.1:8080", gateway.url)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})  # running the documented example
    route, _, answer = out.getvalue().partition(" ")
    assert route == "direct_bedrock"  # meta_monitor's primary
    assert answer.startswith("Simulated answer from")


def test_readme_route_output_matches_the_cli(gateway: RunningGateway):
    result = CliRunner().invoke(
        cli, ["route", "--url", gateway.url, "--op", "emergency", "Is the primary database down?"]
    )
    documented = re.search(r"```\n(status .*?)```", README, flags=re.DOTALL)
    assert documented is not None
    labels = [line.split()[0] for line in documented.group(1).splitlines() if line[:1] != " "]
    printed = [line.split()[0] for line in result.output.splitlines() if line[:1] != " "]
    assert printed == labels


def test_every_cli_command_the_docs_mention_exists():
    mentioned = set()
    for doc in [README, *(p.read_text() for p in (DOCS / "docs").glob("*.md"))]:
        # commands as written in code: `hybridroute x`, .venv/bin/hybridroute x, $ hybridroute x
        pattern = r"(?:^|[`/]|\$ )hybridroute ([a-z]+(?: [a-z]+)?)"
        mentioned.update(re.findall(pattern, doc, flags=re.MULTILINE))
    assert {"demo", "serve", "route", "config validate", "config show", "sim bedrock"} <= mentioned
    runner = CliRunner()
    for command in sorted(mentioned):
        words = command.split()
        result = runner.invoke(cli, [*words, "--help"])
        if result.exit_code != 0 and len(words) == 2:
            result = runner.invoke(cli, [words[0], "--help"])
        assert result.exit_code == 0, f"`hybridroute {command}` in the docs: {result.output}"


def test_configuration_doc_quotes_the_real_seed_failure(tmp_path: Path):
    data = yaml.safe_load((DOCS / "docs" / "example-config.yaml").read_text())
    data["matrix"]["emergency"]["primary"] = "direct"
    path = tmp_path / "seed-failure.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(cli, ["config", "validate", str(path)])
    doc = (DOCS / "docs" / "configuration.md").read_text()
    quoted = re.search(r"seed-failure.yaml is invalid \(1 problem\):\n  - (.*)\n", doc)
    assert quoted is not None
    assert f"  - {quoted.group(1)}" in result.output
