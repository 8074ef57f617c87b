"""AWS credentials and SigV4 signing through botocore's own machinery.

Credentials come from the SDK's standard provider chain (environment, shared config and
credentials files, SSO, container and instance metadata) unless the route names static ones.
Each request is signed by botocore's `SigV4Auth` for service `bedrock` in the route's region;
refreshable credentials are refreshed off the event loop when they are about to expire.
"""

from __future__ import annotations

import asyncio
import os

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError

from hybridroute.config.schema import ChainCredentials, StaticCredentials

__all__ = ["CredentialsUnavailable", "SigV4Signer", "resolve_credentials"]

SIGNING_NAME = "bedrock"


class CredentialsUnavailable(Exception):
    """No credentials could be found; the message says where the route looked."""


def _value(reference: str, field: str) -> str:
    if reference.startswith("env:"):
        name = reference[4:]
        value = os.environ.get(name)
        if not value:
            raise CredentialsUnavailable(
                f"environment variable {name} (named by credentials.{field}) is not set"
            )
        return value
    return reference


def resolve_credentials(config: ChainCredentials | StaticCredentials) -> Credentials:
    """Find credentials for a route. Blocking (files, metadata service): call off the loop."""
    try:
        return _resolve(config)
    except BotoCoreError as exc:  # ProfileNotFound, a broken SSO cache, a failed assume-role …
        raise CredentialsUnavailable(f"the AWS SDK could not load credentials: {exc}") from exc


def _resolve(config: ChainCredentials | StaticCredentials) -> Credentials:
    if isinstance(config, StaticCredentials):
        token = config.session_token
        return Credentials(
            _value(config.access_key_id, "access_key_id"),
            _value(config.secret_access_key, "secret_access_key"),
            _value(token, "session_token") if token else None,
        )
    session = botocore.session.Session(profile=config.profile)
    credentials = session.get_credentials()
    if credentials is None:
        profile = f" (profile {config.profile!r})" if config.profile else ""
        raise CredentialsUnavailable(
            "the AWS SDK's credential chain found no credentials"
            f"{profile}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, configure a profile in "
            "~/.aws, or run with an IAM role"
        )
    return credentials


class SigV4Signer:
    """Signs Bedrock Runtime requests for one region with one set of credentials.

    botocore's `SigV4Auth` does all of the signing. Two things keep it cheap on the request path:
    one `SigV4Auth` is reused while the credentials stay the same, and the `Host` header is given
    up front (exactly as the HTTP client will send it), which spares botocore re-parsing the URL
    twice per request. The signature is identical either way (tests/unit/test_signing.py).
    """

    __slots__ = ("_auth", "_credentials", "_frozen", "_region")

    def __init__(self, credentials: Credentials, region: str) -> None:
        self._credentials = credentials
        self._region = region
        self._frozen: ReadOnlyCredentials | None = None
        self._auth: SigV4Auth | None = None

    async def sign(self, url: str, host: str, body: bytes, accept: str) -> list[tuple[str, str]]:
        """The headers (other than Host) for a signed POST of a JSON `body` to `url`."""
        credentials = self._credentials
        if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
            frozen = await asyncio.to_thread(credentials.get_frozen_credentials)
        else:
            frozen = credentials.get_frozen_credentials()
        auth = self._auth
        if auth is None or frozen != self._frozen:
            auth = self._auth = SigV4Auth(frozen, SIGNING_NAME, self._region)
            self._frozen = frozen
        request = AWSRequest(
            method="POST",
            url=url,
            data=body,
            headers={"Host": host, "Content-Type": "application/json", "Accept": accept},
        )
        auth.add_auth(request)
        return [(name, value) for name, value in request.headers.items() if name != "Host"]
