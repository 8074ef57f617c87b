"""Log redaction: PII taken out of every log line before a handler writes it, and request
payloads kept out of the log altogether.

`install(redactor)` puts a filter on the root logger's handlers (where `hybridroute serve`
writes its logs) that renders each record's message, redacts it, and hands the handler the
clean text. Exception tracebacks are redacted too. `uninstall()` takes the filter off again.
"""

from __future__ import annotations

import logging

from hybridroute.compliance.redaction import Redactor

__all__ = ["PAYLOAD_LOGGERS", "RedactingFilter", "install", "uninstall"]


class RedactingFilter(logging.Filter):
    """Replaces a record's message with its redacted rendering."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("hybridroute-redaction")
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._redactor.enabled:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: the handler reports it
            return True
        clean = self._redactor.redact(message)
        if clean is not message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redactor.redact(record.exc_text)
        return True


# Libraries that log whole requests and responses (prompts and answers: the callers' data) at
# DEBUG; they are held at INFO so debug logging of the gateway never writes those payloads.
PAYLOAD_LOGGERS = ("mcp", "httpcore", "httpcore2", "httpx", "httpx2", "botocore", "urllib3")


def install(redactor: Redactor) -> RedactingFilter:
    """Redact what every root handler writes, and keep payload-logging libraries at INFO;
    returns the filter (for `uninstall`)."""
    for name in PAYLOAD_LOGGERS:
        library = logging.getLogger(name)
        if library.getEffectiveLevel() < logging.INFO:
            library.setLevel(logging.INFO)
    installed = RedactingFilter(redactor)
    for handler in logging.getLogger().handlers:
        handler.addFilter(installed)
    return installed


def uninstall(installed: RedactingFilter) -> None:
    for handler in logging.getLogger().handlers:
        handler.removeFilter(installed)
