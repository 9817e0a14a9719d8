"""Keeps secrets out of every output: SAS signatures, bearer tokens, passwords, app keys, account keys.

Two nets. **Known values**: the configured secrets and every token a partner issues during the run are
registered here (``register``) and replaced wherever they appear, inside a partner's error body too.
**Shapes**: SAS signatures, account keys and long bearer tokens are recognised by their form even when
nobody registered them. Only the value is replaced, so the sentence around it stays readable
("missing or wrong Authorization bearer token" stays as it is).
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Any
from collections.abc import Iterable

MASK = "REDACTED"
MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words

_PATTERNS = [
    # A SAS signature however the URL was echoed: raw, %-encoded (whole URL too), JSON-escaped
    # (\u0026, \u003d: .NET's default) or HTML-escaped (&amp;).
    (re.compile(r"(?i)((?:\b|(?<=\\u0026)|(?<=\\u003f)|(?<=%26)|(?<=%3f))sig(?:=|%3D|\\u003d))[^&\s\"'<>\\]+"),
     rf"\1{MASK}"),
    # A bearer *value*: token-like and long. "bearer token" in a sentence is not one.
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]{16,}=*"), rf"\1{MASK}"),
    (re.compile(r"(?i)(AccountKey=)[^;\s\"']+"), rf"\1{MASK}"),
    (re.compile(r"(?i)(\"(?:password|accessToken|access_token|app_key|x-traede-app-key)\"\s*:\s*\")[^\"]+"),
     rf"\1{MASK}"),
    (re.compile(r"(?i)(\b(?:password|access_token|app_key|x-traede-app-key)\s*[=:]\s*)(?!\s|\"|REDACTED)[^\s\",;}&]+"),
     rf"\1{MASK}"),
]

_known: set[str] = set()
_known_lock = threading.Lock()
_ordered: tuple[str, ...] = ()


def register(*values: str | None) -> None:
    """Remember secret values for the life of the process; every later ``redact`` replaces them."""
    global _ordered
    fresh = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
    if not fresh - _known:
        return
    with _known_lock:
        _known.update(fresh)
        _ordered = tuple(sorted(_known, key=len, reverse=True))  # longest first: no partial leftovers


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    extra = [s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH and s not in _known]
    for secret in (*_ordered, *extra):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_tree(value: Any) -> Any:
    """Every string inside a JSON-like value, redacted (a report file is written from this, so that a
    replacement can never break the JSON around it)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_tree(k): redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message (and traceback) before any handler sees it."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        register(*secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(handler: logging.Handler, secrets: Iterable[str] = ()) -> None:
    """Attach the filter to a handler, so records from every logger (ours, urllib3, azure) pass it."""
    register(*secrets)
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
