"""`hybridroute route`: send one request to a running gateway and show the decision and answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import click

from hybridroute.cli.options import gateway_url_option

__all__ = ["route_command"]


def _request(url: str, body: dict[str, Any], headers: dict[str, str]) -> urllib.request.Request:
    return urllib.request.Request(
        f"{url.rstrip('/')}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
        method="POST",
    )


def _sse_data(lines: Iterator[bytes]) -> Iterator[str]:
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("data: "):
            yield line[6:]


def _print_decision(headers: Any, status: int) -> None:
    fallback = headers.get("x-hybridroute-fallback") == "true"
    route = headers.get("x-hybridroute-route", "none")
    click.echo(f"status     {status}")
    click.echo(f"route      {route}" + (" (fallback)" if fallback else ""))
    click.echo(f"decision   {headers.get('x-hybridroute-decision-id', 'none')}")
    reason = headers.get("x-hybridroute-reason")
    if reason:
        click.echo(f"reason     {reason}")
    attempts = headers.get("x-hybridroute-attempts")
    if attempts:
        click.echo(f"attempts   {attempts}")
    click.echo(f"overhead   {headers.get('x-hybridroute-overhead-ms', '?')} ms")
    cache = headers.get("x-hybridroute-cache")
    if cache:
        why = headers.get("x-hybridroute-cache-reason")
        click.echo(f"cache      {cache}" + (f" ({why})" if why else ""))


@click.command("route")
@click.argument("prompt")
@click.option(
    "--op", "operation_type", default="standard", show_default=True, help="Operation type."
)
@gateway_url_option
@click.option("--stream", is_flag=True, help="Ask for a server-sent-event stream.")
@click.option("--residency", default=None, help="Region set the request must stay in, e.g. eu.")
@click.option("--budget-ms", type=int, default=None, help="A latency budget below the row's.")
@click.option("--max-tokens", type=int, default=None, help="Maximum tokens to generate.")
@click.option(
    "--api-key",
    envvar="HYBRIDROUTE_API_KEY",
    default=None,
    help="Data-plane API key naming the tenant (env HYBRIDROUTE_API_KEY).",
)
@click.option("--no-cache", is_flag=True, help="Do not answer from the response cache.")
def route_command(  # noqa: PLR0913 - one parameter per command-line option
    prompt: str,
    operation_type: str,
    url: str,
    stream: bool,
    residency: str | None,
    budget_ms: int | None,
    max_tokens: int | None,
    api_key: str | None,
    no_cache: bool,
) -> None:
    """Send PROMPT as one operation and print the routing decision and the answer."""
    body: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    headers = {"x-operation-type": operation_type}
    if residency:
        headers["x-data-residency"] = residency
    if budget_ms is not None:
        headers["x-latency-budget-ms"] = str(budget_ms)
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    if no_cache:
        headers["cache-control"] = "no-cache"
    try:
        with urllib.request.urlopen(_request(url, body, headers), timeout=660) as response:
            _print_decision(response.headers, response.status)
            if stream:
                _print_stream(_sse_data(iter(response.readline, b"")))
            else:
                _print_completion(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        _print_decision(error.headers, error.code)
        try:
            detail = json.loads(error.read())["error"]
        except (ValueError, KeyError, TypeError):
            detail = {"message": "(no error body)"}
        click.echo(f"error      {detail.get('code', '')}: {detail.get('message')}", err=True)
        raise SystemExit(1) from None
    except urllib.error.URLError as error:
        click.echo(f"cannot reach the gateway at {url}: {error.reason}", err=True)
        click.echo(
            "start it with `hybridroute demo` or `hybridroute serve --config FILE`", err=True
        )
        raise SystemExit(1) from None


def _print_completion(data: dict[str, Any]) -> None:
    usage = data.get("usage", {})
    extension = data.get("hybridroute", {})
    estimated = extension.get("usage_estimated")
    click.echo(f"model      {data.get('model')}")
    click.echo(
        f"tokens     {usage.get('prompt_tokens')} in / {usage.get('completion_tokens')} out"
        + (" (estimated)" if estimated else "")
    )
    if "cost" in extension:
        click.echo(f"cost       {extension['cost']} {extension.get('currency', '')}".rstrip())
    click.echo("answer")
    click.echo("  " + data["choices"][0]["message"]["content"].replace("\n", "\n  "))


def _print_stream(events: Iterator[str]) -> None:
    click.echo("answer (streamed)")
    click.echo("  ", nl=False)
    cost = ""
    for data in events:
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            click.echo("")
            click.echo(f"stream error: {chunk['error'].get('message')}", err=True)
            raise SystemExit(1)
        for choice in chunk.get("choices", []):
            click.echo(choice.get("delta", {}).get("content", ""), nl=False)
        extension = chunk.get("hybridroute")
        if extension and "cost" in extension:
            cost = f"{extension['cost']} {extension.get('currency', '')}".rstrip()
    click.echo("")
    if cost:
        click.echo(f"cost       {cost}")
