"""Data subjects: pseudonyms that can be forgotten (erasure that keeps the audit chain whole).

A request may name the person it is about (the OpenAI `user` field or `X-Data-Subject`). The
subject is never stored in clear: records carry a *pseudonym*, HMAC-SHA256 of the subject under
a random per-subject salt. The salt is kept in the control store under a *lookup key* (HMAC of
the subject under the deployment's subject secret), so the same subject always gets the same
pseudonym while its salt exists.

Erasure deletes the salt. From then on nobody — the operator included — can tell which records
were about that person: the pseudonym in every audit record, cache tag and export is unlinkable,
while the records themselves, and so the hash chain over them, stay exactly as they were.
A later request about the same person gets a new salt, so a new, unrelated pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping

from hybridroute.errors import ConfigError, ConfigIssue
from hybridroute.storage.control import ControlStore

__all__ = ["SUBJECT_SECRET_KEY", "SubjectRegistry"]

log = logging.getLogger("hybridroute.compliance")

SUBJECT_SECRET_KEY = "compliance:subject-secret"
_SALT_PREFIX = "subject:"
_MAX_CACHED = 100_000


class SubjectRegistry:
    """Pseudonyms of data subjects, and their erasure."""

    def __init__(self, store: ControlStore, secret_ref: str | None = None) -> None:
        self._store = store
        self._secret_ref = secret_ref
        self._secret = b""
        self._salts: dict[str, bytes] = {}
        self._unsaved: dict[str, bytes] = {}
        self.erasures = 0

    async def open(self, environ: Mapping[str, str] | None = None) -> None:
        """Load (or create and keep) the secret lookups are keyed with."""
        env = os.environ if environ is None else environ
        if self._secret_ref is not None:
            variable = self._secret_ref.removeprefix("env:")
            value = env.get(variable)
            if not value:
                raise ConfigError(
                    [
                        ConfigIssue(
                            "compliance.subject_secret",
                            f"environment variable {variable} is not set (or empty)",
                            f"export {variable}=<a long random secret>",
                        )
                    ],
                    source="compliance",
                )
            self._secret = value.encode()
            return
        stored = await self._store.get_state(SUBJECT_SECRET_KEY)
        if stored is None:
            stored = secrets.token_hex(32)
            await self._store.put_state(SUBJECT_SECRET_KEY, stored)
        self._secret = bytes.fromhex(stored)

    def _lookup(self, subject: str) -> str:
        return hmac.new(self._secret, subject.encode(), hashlib.sha256).hexdigest()

    def pseudonym(self, subject: str) -> str:
        """The subject's pseudonym from the cached salts (a subject not cached gets a new salt,
        saved by `flush`); call `resolve` to consult the store first."""
        lookup = self._lookup(subject)
        salt = self._salts.get(lookup)
        if salt is None:
            salt = secrets.token_bytes(16)
            self._remember(lookup, salt)
            self._unsaved[lookup] = salt
        return "ps-" + hmac.new(salt, subject.encode(), hashlib.sha256).hexdigest()[:32]

    async def resolve(self, subject: str) -> str:
        """The pseudonym, reading the stored salt first when it is not cached."""
        lookup = self._lookup(subject)
        if lookup not in self._salts:
            stored = await self._store.get_state(_SALT_PREFIX + lookup)
            if stored is not None:
                self._remember(lookup, bytes.fromhex(stored))
        return self.pseudonym(subject)

    def _remember(self, lookup: str, salt: bytes) -> None:
        if len(self._salts) >= _MAX_CACHED:
            self._salts.pop(next(iter(self._salts)))
        self._salts[lookup] = salt

    async def flush(self) -> None:
        """Save the salts of subjects first seen since the last flush."""
        pending, self._unsaved = self._unsaved, {}
        try:
            for lookup, salt in pending.items():
                await self._store.put_state(_SALT_PREFIX + lookup, salt.hex())
        except Exception:
            self._unsaved = {**pending, **self._unsaved}
            raise

    async def erase(self, subject: str) -> str | None:
        """Forget the subject's salt; returns the pseudonym it had (to invalidate what is
        tagged with it), or None when the subject was never seen."""
        lookup = self._lookup(subject)
        salt = self._salts.pop(lookup, None)
        self._unsaved.pop(lookup, None)
        if salt is None:
            stored = await self._store.get_state(_SALT_PREFIX + lookup)
            salt = bytes.fromhex(stored) if stored is not None else None
        await self._store.delete_state(_SALT_PREFIX + lookup)
        if salt is None:
            return None
        self.erasures += 1
        return "ps-" + hmac.new(salt, subject.encode(), hashlib.sha256).hexdigest()[:32]
