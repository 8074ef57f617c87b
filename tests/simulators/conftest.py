"""Fixtures for the simulator tests: a served Bedrock simulator and botocore clients for it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import botocore.config
import botocore.session
import pytest
from starlette.applications import Starlette

from hybridroute.serving import ThreadedServer
from hybridroute.simulators.bedrock import (
    DEMO_ACCESS_KEY_ID,
    DEMO_SECRET_ACCESS_KEY,
    create_bedrock_app,
)
from hybridroute.simulators.knobs import Knobs
from hybridroute.simulators.stats import Stats

REGION = "eu-central-1"


# The asyncio backend and the isolated AWS environment come from tests/conftest.py.


@dataclass
class BedrockSim:
    """A Bedrock simulator served on loopback, with handles on its knobs and stats."""

    url: str
    app: Starlette
    knobs: Knobs
    stats: Stats

    def last(self) -> dict[str, object]:
        recent = self.stats.as_dict()["recent"]
        assert isinstance(recent, list)
        assert recent, "the simulator recorded no request"
        record = recent[-1]
        assert isinstance(record, dict)
        return record


@pytest.fixture(scope="module")
def _bedrock_server() -> Iterator[BedrockSim]:
    app = create_bedrock_app(credentials={DEMO_ACCESS_KEY_ID: DEMO_SECRET_ACCESS_KEY}, seed=7)
    with ThreadedServer(app, name="bedrock-sim") as server:
        yield BedrockSim(server.url, app, app.state.knobs, app.state.stats)


@pytest.fixture
def bedrock_sim(_bedrock_server: BedrockSim) -> BedrockSim:
    """The shared (signature-checking) simulator, reset to defaults for this test."""
    _bedrock_server.knobs.reset()
    _bedrock_server.stats.clear()
    return _bedrock_server


@pytest.fixture(scope="module")
def open_bedrock_sim() -> Iterator[BedrockSim]:
    """A simulator that checks no signatures, for raw HTTP requests."""
    app = create_bedrock_app(seed=11)
    with ThreadedServer(app, name="bedrock-sim-open") as server:
        yield BedrockSim(server.url, app, app.state.knobs, app.state.stats)


BedrockClientFactory = Callable[..., Any]


@pytest.fixture
def make_bedrock_client(bedrock_sim: BedrockSim) -> Iterator[BedrockClientFactory]:
    """Official botocore bedrock-runtime clients pointed at the simulator (closed afterwards)."""
    clients: list[Any] = []

    def make(
        *,
        secret: str = DEMO_SECRET_ACCESS_KEY,
        access_key: str = DEMO_ACCESS_KEY_ID,
        region: str = REGION,
        read_timeout: float = 10.0,
        **config: Any,
    ) -> Any:
        client = botocore.session.get_session().create_client(
            "bedrock-runtime",
            region_name=region,
            endpoint_url=bedrock_sim.url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret,
            config=botocore.config.Config(
                # total_max_attempts, not max_attempts: in botocore's legacy retry mode
                # max_attempts=1 still allows one retry of throttling and 5xx errors.
                retries={"total_max_attempts": 1},
                read_timeout=read_timeout,
                **config,
            ),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def bedrock_client(make_bedrock_client: BedrockClientFactory) -> Any:
    return make_bedrock_client()


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in items}


class LoopbackHttp:
    """Plain HTTP to loopback URLs; error statuses are returned, not raised."""

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpReply:
        assert url.startswith(("http://127.0.0.1:", "http://localhost:")), url
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return HttpReply(response.status, _lower(response.headers.items()), response.read())
        except urllib.error.HTTPError as error:
            with error:
                return HttpReply(error.code, _lower(error.headers.items()), error.read())

    def json(self, method: str, url: str, payload: object | None = None) -> HttpReply:
        body = None if payload is None else json.dumps(payload).encode()
        return self.request(method, url, body, {"content-type": "application/json"})


@pytest.fixture
def http() -> LoopbackHttp:
    return LoopbackHttp()
