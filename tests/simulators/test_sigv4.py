"""Server-side SigV4 verification against requests signed by botocore's signer.

(The end-to-end proof with botocore's real client is in test_bedrock_sim.py.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from hybridroute.simulators.sigv4 import SigV4Check, parse_authorization, verify_sigv4

KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
HOST = "127.0.0.1:8443"
PATH = "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse?b=2&a=1"
BODY = b'{"messages": []}'


def _signed(path: str = PATH, body: bytes = BODY, region: str = "us-west-2") -> dict[str, str]:
    """Headers (lower-case, as a server sees them) of a request botocore signed."""
    request = AWSRequest(
        method="POST",
        url=f"http://{HOST}{path}",
        headers={"Content-Type": "application/json"},
        data=body,
    )
    SigV4Auth(Credentials(KEY_ID, SECRET), "bedrock", region).add_auth(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers["host"] = HOST
    return headers


def _verify(
    headers: dict[str, str], path: str = PATH, body: bytes = BODY, now: datetime | None = None
) -> SigV4Check:
    return verify_sigv4("POST", path, headers, body, {KEY_ID: SECRET}, now=now)


def test_botocore_signature_verifies_and_reports_scope() -> None:
    check = _verify(_signed())
    assert check.ok, check.message
    assert (check.access_key_id, check.region, check.service) == (KEY_ID, "us-west-2", "bedrock")
    assert check.error_code is None


def test_tampered_body_or_path_is_an_invalid_signature() -> None:
    headers = _signed()
    for path, body in ((PATH, b'{"messages": [1]}'), (PATH.replace("%3A0", "%3A1"), BODY)):
        check = _verify(headers, path=path, body=body)
        assert not check.ok
        assert check.error_code == "InvalidSignatureException"
        assert check.region == "us-west-2"


def test_wrong_secret_is_an_invalid_signature() -> None:
    check = verify_sigv4("POST", PATH, _signed(), BODY, {KEY_ID: "not-the-secret"})
    assert check.error_code == "InvalidSignatureException"


def test_unknown_access_key_is_unrecognized() -> None:
    check = verify_sigv4("POST", PATH, _signed(), BODY, {"AKIAOTHER": SECRET})
    assert check.error_code == "UnrecognizedClientException"
    assert check.access_key_id == KEY_ID


def test_missing_and_malformed_authorization() -> None:
    headers = _signed()
    del headers["authorization"]
    assert _verify(headers).error_code == "MissingAuthenticationTokenException"
    headers["authorization"] = "Bearer abc"
    malformed = _verify(headers)
    assert malformed.error_code == "InvalidSignatureException"
    assert "well-formed" in (malformed.message or "")


def test_old_signature_has_expired() -> None:
    later = datetime.now(UTC) + timedelta(minutes=20)
    check = _verify(_signed(), now=later)
    assert check.error_code == "InvalidSignatureException"
    assert "expired" in (check.message or "")


def test_signed_header_missing_from_request() -> None:
    headers = _signed()
    del headers["content-type"]
    check = _verify(headers)
    assert check.error_code == "InvalidSignatureException"
    assert "content-type" in (check.message or "")


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "AWS4-HMAC-SHA256 Credential=K/20260101/us-east-1/bedrock, SignedHeaders=host, "
        "Signature=ab",
        "AWS4-HMAC-SHA256 Credential=K/20260101/bedrock/aws4_request, SignedHeaders=host, "
        "Signature=" + "a" * 64,
    ],
)
def test_parse_authorization_rejects_incomplete_headers(value: str | None) -> None:
    assert parse_authorization(value) is None


def test_parse_authorization_reads_the_scope() -> None:
    parsed = parse_authorization(_signed()["authorization"])
    assert parsed is not None
    assert (parsed.region, parsed.service) == ("us-west-2", "bedrock")
    assert "host" in parsed.signed_headers
    assert "x-amz-date" in parsed.signed_headers
