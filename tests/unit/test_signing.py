"""The route's signer produces exactly the signature of botocore's stock SigV4 path."""

from __future__ import annotations

import datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from hybridroute.providers.bedrock.signing import SigV4Signer

pytestmark = pytest.mark.anyio

URL = "https://bedrock-runtime.eu-central-1.amazonaws.com/model/anthropic.claude-3-5-sonnet%3A0/converse"
HOST = "bedrock-runtime.eu-central-1.amazonaws.com"
BODY = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both signers sign at the same instant (botocore reads the time through this function)."""
    moment = datetime.datetime(2026, 11, 22, 6, 0, 0)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: moment)


@pytest.mark.parametrize("token", [None, "session-token"])
async def test_signature_matches_stock_botocore(fixed_clock: None, token: str | None):
    credentials = Credentials("AKIDEXAMPLE", "secret", token)
    stock = AWSRequest(
        method="POST",
        url=URL,
        data=BODY,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    SigV4Auth(credentials.get_frozen_credentials(), "bedrock", "eu-central-1").add_auth(stock)
    ours = dict(
        await SigV4Signer(credentials, "eu-central-1").sign(URL, HOST, BODY, "application/json")
    )
    assert ours["Authorization"] == stock.headers["Authorization"]
    assert ours["X-Amz-Date"] == stock.headers["X-Amz-Date"]
    assert ours.get("X-Amz-Security-Token") == token
    assert "Host" not in ours  # the HTTP client sends it, exactly as signed


async def test_new_credentials_are_picked_up(fixed_clock: None):
    credentials = Credentials("AKIDEXAMPLE", "secret")
    signer = SigV4Signer(credentials, "eu-central-1")
    first = dict(await signer.sign(URL, HOST, BODY, "application/json"))
    credentials.secret_key = "rotated"  # what a refresh does
    second = dict(await signer.sign(URL, HOST, BODY, "application/json"))
    assert first["Authorization"] != second["Authorization"]
