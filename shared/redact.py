"""Keeps secrets out of logs: SAS signatures, bearer tokens, passwords and app keys."""
from __future__ import annotations

import logging
import re
from typing import Iterable

_PATTERNS = [
    (re.compile(r"(?i)([?&]sig=)[^&\s\"'<>]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(\bsig%3D)[^&\s\"'<>]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/=]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(AccountKey=)[^;\s\"']+"), r"\1REDACTED"),
    (re.compile(r"(?i)(\"?(?:password|accessToken|access_token|app_key|x-traede-app-key)\"?\s*[:=]\s*\"?)"
                r"[^\s\",;}]+"), r"\1REDACTED"),
]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "REDACTED")
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message before any handler sees it."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


def install(handler: logging.Handler, secrets: Iterable[str] = ()) -> None:
    """Attach the filter to a handler, so records from every logger (ours, urllib3, azure) pass it."""
    for existing in handler.filters:
        if isinstance(existing, RedactingFilter):
            existing.secrets = sorted(set(existing.secrets) | {s for s in secrets if s})
            return
    handler.addFilter(RedactingFilter(secrets))
