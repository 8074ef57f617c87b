"""Server-side AWS Signature Version 4 verification for the Bedrock simulator.

The signature is recomputed with botocore's own `SigV4Auth` (canonical request, string to sign,
signing key), from the request exactly as received, so whatever a botocore client signed verifies
here byte for byte. The one subtlety is the path: a client signs a URL whose path is already
percent-encoded (a model id `a:b` travels as `a%3Ab`) and SigV4 encodes it once more when building
the canonical request. Rebuilding the URL from the *raw* received path reproduces that.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

__all__ = [
    "MAX_CLOCK_SKEW",
    "SigV4Authorization",
    "SigV4Check",
    "parse_authorization",
    "verify_sigv4",
]

MAX_CLOCK_SKEW = timedelta(minutes=15)

MISSING_TOKEN = "MissingAuthenticationTokenException"
UNRECOGNIZED_CLIENT = "UnrecognizedClientException"
INVALID_SIGNATURE = "InvalidSignatureException"

_ALGORITHM = "AWS4-HMAC-SHA256"
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


@dataclass(frozen=True)
class SigV4Check:
    """The verdict on one request's signature (and what its credential scope says)."""

    ok: bool
    access_key_id: str | None = None
    region: str | None = None
    service: str | None = None
    error_code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class SigV4Authorization:
    """The parts of an `Authorization: AWS4-HMAC-SHA256 …` header."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str | None) -> SigV4Authorization | None:
    """Split a SigV4 Authorization header; None if absent or not well formed."""
    if not value:
        return None
    match = _AUTHORIZATION.match(value.strip())
    if match is None:
        return None
    scope = match["credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not all(scope):
        return None
    access_key_id, date, region, service, _terminator = scope
    signed = tuple(match["signed"].split(";"))
    return SigV4Authorization(access_key_id, date, region, service, signed, match["signature"])


def verify_sigv4(
    method: str,
    path_with_query: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str],
    *,
    now: datetime | None = None,
) -> SigV4Check:
    """Check a request's SigV4 signature against `secrets` (access key id → secret key).

    `path_with_query` is the raw path as received (still percent-encoded), plus `?query` if any;
    `headers` has lower-case names.
    """
    auth = parse_authorization(headers.get("authorization"))
    if auth is None:
        return _missing_or_malformed(headers.get("authorization"))
    secret = secrets.get(auth.access_key_id)
    if secret is None:
        return _fail(
            auth, UNRECOGNIZED_CLIENT, "The security token included in the request is invalid."
        )
    problem = _scope_problem(auth, headers, now or datetime.now(UTC))
    if problem is not None:
        return _fail(auth, INVALID_SIGNATURE, problem)
    expected = _expected_signature(method, path_with_query, headers, body, auth, secret)
    if not hmac.compare_digest(expected, auth.signature):
        return _fail(auth, INVALID_SIGNATURE, _MISMATCH_MESSAGE)
    return SigV4Check(True, auth.access_key_id, auth.region, auth.service)


def _missing_or_malformed(header: str | None) -> SigV4Check:
    if not header:
        return SigV4Check(False, error_code=MISSING_TOKEN, message="Missing Authentication Token")
    return SigV4Check(
        False,
        error_code=INVALID_SIGNATURE,
        message=(
            f"Authorization header is not a well-formed {_ALGORITHM} header "
            "(expected Credential=<key>/<date>/<region>/<service>/aws4_request, "
            "SignedHeaders=…, Signature=<64 hex digits>)"
        ),
    )


def _fail(auth: SigV4Authorization, code: str, message: str) -> SigV4Check:
    return SigV4Check(False, auth.access_key_id, auth.region, auth.service, code, message)


def _scope_problem(
    auth: SigV4Authorization, headers: Mapping[str, str], now: datetime
) -> str | None:
    """Why the date headers and credential scope cannot be right, or None."""
    amz_date = headers.get("x-amz-date")
    if not amz_date or "x-amz-date" not in auth.signed_headers:
        return "Authorization requires a signed 'X-Amz-Date' header."
    if "host" not in auth.signed_headers:
        return "'Host' must be a signed header."
    missing = [name for name in auth.signed_headers if name not in headers]
    if missing:
        return f"Signed header(s) missing from the request: {', '.join(missing)}."
    try:
        signed_at = datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        return f"X-Amz-Date {amz_date!r} is not in the form YYYYMMDD'T'HHMMSS'Z'."
    if amz_date[:8] != auth.date:
        return f"Credential scope date {auth.date} does not match X-Amz-Date {amz_date}."
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        return f"Signature expired: {amz_date} is more than 15 minutes from the server time."
    return None


def _expected_signature(
    method: str,
    path_with_query: str,
    headers: Mapping[str, str],
    body: bytes,
    auth: SigV4Authorization,
    secret: str,
) -> str:
    """The signature botocore would compute for this request with this secret."""
    signed_headers = {name: headers[name] for name in auth.signed_headers}
    # http://: SigV4Auth then always hashes the body, as a client does unless it sends
    # X-Amz-Content-SHA256 (which, being signed, is then used as the payload hash instead).
    url = f"http://{headers['host']}{path_with_query}"
    request = AWSRequest(method=method.upper(), url=url, headers=signed_headers, data=body)
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials(auth.access_key_id, secret), auth.service, auth.region)
    canonical_request = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical_request)
    return signer.signature(string_to_sign, request)
