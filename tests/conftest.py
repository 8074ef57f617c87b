"""Shared test setup: an isolated AWS environment and the asyncio backend for anyio tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_aws_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test may find ambient AWS credentials or reach the instance metadata service."""
    empty = tmp_path_factory.mktemp("aws")
    patch = pytest.MonkeyPatch()
    patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    patch.setenv("AWS_CONFIG_FILE", str(Path(empty, "config")))
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(Path(empty, "credentials")))
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_BEARER_TOKEN_BEDROCK",
    ):
        patch.delenv(name, raising=False)
    yield
    patch.undo()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytest_plugins = ["tests.loopback"]
