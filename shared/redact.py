"""Keeps secrets out of every output: SAS signatures, bearer tokens, passwords, app keys, account keys.

Three nets. **Known values**: the configured secrets and every token a partner issues during the run are
registered here (``register``) and replaced wherever they appear, inside a partner's error body too.
**Issued signatures**: every SAS signature this process signs is remembered (``remember_signature``, a
fixed-size filter, see ``_IssuedSignatures``) and found again by value however it was spelled: raw,
%-encoded (once or more), JSON-escaped (``\\u002B``, ``\\/``), HTML-escaped (``&#43;``), with or without its
``=``, alone or inside a longer string. **Shapes**: a ``sig`` parameter in any notation (``sig=``, a JSON or
Python key ``"sig": "..."``, ``('sig', '...')``, ``<sig>``), any base64 HMAC-SHA256 (the form of every SAS
signature, also one this process did not sign), account keys and long bearer tokens are recognised by
their form. Only the value is replaced, so the sentence around it stays readable ("missing or wrong
Authorization bearer token" stays as it is).

Speed: most text (reasons, blob names, log lines) holds no run of 43 base64-ish characters, which one
character-class scan finds out; only such runs are decoded and looked up.
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

MASK = "REDACTED"
MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words

_Q = r"(?:\\*\"|'|&quot;|&#0*34;|&#0*39;|&#[xX]0*2[27];|%22|%27)"  # a quote, as JSON, repr, HTML or a URL writes it
_PATTERNS = [
    # A SAS signature however the URL was echoed: raw, %-encoded (whole URL too), JSON-escaped
    # (\u0026, \u003d: .NET's default) or HTML-escaped (&amp;).
    (re.compile(r"(?i)((?:%(?:25)*26|%(?:25)*3f|\\+u00(?:26|3f)|\b)sig(?:=|%(?:25)*3D|\\+u003d))"
                r"(?:[^&\s\"'<>\\]|\\+/|\\+u00(?:2[BbFf]|3[Dd]))+"), rf"\1{MASK}"),
    # ... or a key of a log or YAML line: "sig: <value>" (a value as long as a short signature at least).
    (re.compile(r"(?i)(\bsig\s*:\s*)(?!REDACTED)[A-Za-z0-9+/=%]{8,}"), rf"\1{MASK}"),
    # ... or as a field of its own: {"sig": "..."}, {'sig': ['...']}, ("sig", "..."), <sig>...</sig>.
    (re.compile(rf"(?i)({_Q}sig{_Q}\s*(?::|,|=>)\s*\[?\s*\(?\s*u?{_Q})"
                r"(?:[A-Za-z0-9+/=_.~-]|%[0-9A-Fa-f]{2}|\\+u00[0-9A-Fa-f]{2}|\\+/|&#[xX]?[0-9A-Fa-f]+;)+"),
     rf"\1{MASK}"),
    (re.compile(r"(?i)(<sig>)[^<\s]+"), rf"\1{MASK}"),
    # A bearer *value*: token-like and long. "bearer token" in a sentence is not one.
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]{16,}=*"), rf"\1{MASK}"),
    (re.compile(r"(?i)(AccountKey=)[^;\s\"']+"), rf"\1{MASK}"),
    (re.compile(r"(?i)(\"(?:password|accessToken|access_token|app_key|x-traede-app-key)\"\s*:\s*\")[^\"]+"),
     rf"\1{MASK}"),
    (re.compile(r"(?i)(\b(?:password|access_token|app_key|x-traede-app-key)\s*[=:]\s*)(?!\s|\"|REDACTED)[^\s\",;}&]+"),
     rf"\1{MASK}"),
]

# Every pattern above needs one of these words (a quick test before running them all).
_KEYWORDS = re.compile(r"(?i)sig|bearer|accountkey|password|access_?token|app[_-]key")

# -- signatures, by value and by shape -----------------------------------------------------------------

# A SAS signature is base64 of an HMAC-SHA256: 43 characters and '='. Each of its characters, as any
# common encoder may write it: '+', '/' and '=' escaped for a URL (once or more: %2B, %252B), for JSON
# (\u002B, .NET's default; \/, PHP's) or for HTML (&#43;, &#x2B;).
_ESCAPES = {
    "+": r"\+|%(?:25)*2[Bb]|\\+u002[Bb]|&(?:amp;)*#(?:0*43|[xX]0*2[Bb]);",
    "/": r"\\*/|%(?:25)*2[Ff]|\\+u002[Ff]|&(?:amp;)*#(?:0*47|[xX]0*2[Ff]);",
    "=": r"=|%(?:25)*3[Dd]|\\+u003[Dd]|&(?:amp;)*#(?:0*61|[xX]0*3[Dd]);",
}
_UNIT = re.compile(r"([A-Za-z0-9]+)|(" + _ESCAPES["+"] + r")|(" + _ESCAPES["/"] + r")|(" + _ESCAPES["="] + r")")
# Quick test: a run that could hold a signature in any of those spellings (at least 43 characters long).
_CANDIDATE = re.compile(r"[A-Za-z0-9+/=%\\&#;]{43,}")
_PLAIN = re.compile(r"[A-Za-z0-9+/=]+")
_UNPADDED = re.compile(r"[^=\0]{43,}")
_SIG_LENGTH = 43  # without the '='
_LAST = frozenset("AEIMQUYcgkosw048")  # the 43rd character of 32 bytes in base64 (its low 2 bits are 0)
_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


class _IssuedSignatures:
    """The signatures this process signed recently: a Bloom filter of two generations, fixed in size.

    A full sync signs 100,000+ URLs: a set of them would cost ~10 MB and grow with the catalog. This costs
    2 x 1 MiB, whatever the run, and remembers at least the last ``CAPACITY`` signatures (two generations:
    when one is full it becomes the old one). A lookup that wrongly says "issued" (about 1 in 500 when
    full) only masks a stray base64 string that is as long as a signature.
    """

    BITS = 1 << 23
    CAPACITY = 500_000
    HASHES = 4  # add() spells the four positions out: it runs once per signed URL

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: bytearray | None = None
        self._previous: bytearray | None = None
        self._count = 0

    def add(self, signature: str) -> None:
        h1, h2 = _hashes(signature[:_SIG_LENGTH])
        mask = self.BITS - 1
        with self._lock:
            if self._current is None or self._count >= self.CAPACITY:
                self._previous, self._current, self._count = self._current, bytearray(self.BITS // 8), 0
            bits = self._current
            self._count += 1
            for p in (h1 & mask, (h1 + h2) & mask, (h1 + 2 * h2) & mask, (h1 + 3 * h2) & mask):
                bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, window: str) -> bool:
        h1, h2 = _hashes(window)
        mask = self.BITS - 1
        positions = [(h1 + i * h2) & mask for i in range(self.HASHES)]
        for bits in (self._current, self._previous):
            if bits is not None and all(bits[p >> 3] & (1 << (p & 7)) for p in positions):
                return True
        return False

    def __bool__(self) -> bool:
        return self._current is not None


def _hashes(window: str) -> tuple[int, int]:
    """Two 32-bit hashes of a window (double hashing gives the filter's four positions). str hashes are
    salted per process, and so is the filter: it never leaves the process."""
    h = hash(window)
    return h & 0xFFFF_FFFF, ((h >> 32) & 0xFFFF_FFFF) | 1


_issued = _IssuedSignatures()


def remember_signature(signature: str) -> None:
    """A SAS signature this process just signed (base64, not %-encoded): no output will show it."""
    _issued.add(signature)


def _signature_spans(run: str) -> list[tuple[int, int]]:
    """Where signatures are in ``run`` (a candidate run of characters), as spans of ``run``."""
    starts: list[int] = []  # per character of the decoded text: where it starts and ends in ``run``
    ends: list[int] = []
    if _PLAIN.fullmatch(run):
        text = run  # nothing escaped: one character is one character
    else:
        chars: list[str] = []
        at = 0
        for m in _UNIT.finditer(run):
            if m.start() != at and chars:
                chars.append("\0")  # not contiguous: a break no signature may cross
                starts.append(at)
                ends.append(at)
            at = m.end()
            if m.group(1):
                chars.append(m.group(1))
                starts.extend(range(m.start(), m.end()))
                ends.extend(range(m.start() + 1, m.end() + 1))
            else:
                chars.append("+" if m.group(2) else "/" if m.group(3) else "=")
                starts.append(m.start())
                ends.append(m.end())
        text = "".join(chars)
    spans: list[tuple[int, int]] = []
    n = len(text)
    j = text.find("=", _SIG_LENGTH)
    while j != -1:  # by shape: 43 base64 characters, '=', and no second '='
        if text[j - 1] in _LAST and (j + 1 == n or text[j + 1] != "=") \
                and all(c in _B64 for c in text[j - _SIG_LENGTH:j]):
            spans.append((j - _SIG_LENGTH, j + 1))
        j = text.find("=", j + 1)
    if _issued:  # by value: 43 characters this process signed, with their '=' or without
        for piece in _UNPADDED.finditer(text):
            for i in range(piece.start(), piece.end() - _SIG_LENGTH + 1):
                if text[i:i + _SIG_LENGTH] in _issued:
                    end = i + _SIG_LENGTH
                    spans.append((i, end + 1 if end < n and text[end] == "=" else end))
    if not starts:
        return spans
    return [(starts[a], ends[b - 1]) for a, b in spans]


def _mask_signatures(text: str) -> str:
    out: list[str] = []
    done = 0
    for run in _CANDIDATE.finditer(text):
        spans = _signature_spans(run.group())
        if not spans:
            continue
        for a, b in _merged(spans):
            start, end = run.start() + a, run.start() + b
            if start >= done:
                out += [text[done:start], MASK]
                done = end
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


# -- known secret values -------------------------------------------------------------------------------

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
    text = _mask_signatures(text)  # first: a pattern below may cut a signature, and then neither net knows it
    if _KEYWORDS.search(text):  # one scan instead of one per pattern: most text names none of them
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
