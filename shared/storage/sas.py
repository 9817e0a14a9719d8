"""Read-only, blob-scoped, time-limited SAS URLs that a partner downloads from the internet."""
from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from azure.core.exceptions import AzureError

from ..errors import ConfigError, SigningError
from ..redact import remember_signature

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

# A user-delegation key may live at most 7 days; ask for what the SAS needs plus a margin.
_DELEGATION_KEY_MARGIN = timedelta(hours=1)
_DELEGATION_KEY_MAX = timedelta(days=7)
MAX_TTL = timedelta(hours=168)  # SAS_TTL_HOURS' limit: what a user-delegation key can cover
# Signed once per second as a template; its name must not occur anywhere else in a string-to-sign.
_TEMPLATE_BLOB = "sas-template-6f2b9c1e/x.jpg"
_MAX_TEMPLATES = 16  # response types signed within one second (a handful of image types in practice)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SasSigner:
    """Signs blob URLs with the account key, or with a user-delegation key fetched once and reused.

    Start and expiry are computed per URL: start = now - skew (clock skew at the partner), expiry = now + ttl.
    The protocol is pinned to https whenever the endpoint is https.

    Speed: a SAS carries whole seconds, so within one second every URL shares its fields and differs only in
    the blob path inside the string-to-sign. The SDK signs a template blob once per second (its
    ``sts_hook`` shows the string-to-sign); each URL then costs one HMAC instead of a full SDK call
    (~8x faster). The template is checked against the SDK's own signature; if anything differs, every URL
    is signed by the SDK.
    """

    def __init__(self, service_client: BlobServiceClient, container: str, *, ttl: timedelta, start_skew: timedelta,
                 clock: Callable[[], datetime] = _utcnow):
        if not timedelta(0) < ttl <= MAX_TTL:
            raise ConfigError(f"a SAS may live from a moment to {MAX_TTL.days} days, not {ttl}: partners need "
                              "time to download, and a longer-lived URL is a longer-lived leak")
        self.service = service_client
        self.container = container
        self.ttl = ttl
        self.start_skew = start_skew
        self.clock = clock
        if not service_client.account_name:
            raise ConfigError("the images account has no name: IMAGES_STORAGE names no account to sign SAS URLs for")
        self.account_name: str = service_client.account_name
        self._container_url = f"{service_client.url.rstrip('/')}/{quote(container)}"
        self._https = self._container_url.lower().startswith("https://")
        key = getattr(service_client.credential, "account_key", None)
        self._account_key: str | None = key
        self._delegation_key: Any = None
        self._delegation_expiry: datetime | None = None
        self._lock = threading.Lock()
        self._templates: dict[str | None, _Template] = {}  # by the response type they set (None: the stored one)
        self._fast = True
        # With the real clock and whole-second skew and TTL, a template serves every URL of its second.
        self._whole_seconds = clock is _utcnow and not (ttl.microseconds or start_skew.microseconds)

    @property
    def uses_delegation_key(self) -> bool:
        return self._account_key is None

    def url(self, blob_name: str, content_type: str | None = None) -> str:
        """The download URL for one blob, valid from now - skew until now + ttl. ``content_type``: the type the
        download is served with (the SAS's ``rsct``), where the blob's stored type is wrong or missing."""
        template = self._templates.get(content_type)
        if template is not None and self._whole_seconds and int(time.time()) == template.second:
            return f"{self._container_url}/{url_path(blob_name)}?{template.token(blob_name)}"  # the usual case
        now = self.clock()
        start, expiry = now - self.start_skew, now + self.ttl
        window = (start.replace(microsecond=0), expiry.replace(microsecond=0))
        if self._fast and (template is None or template.window != window):
            template = self._make_template(now, start, expiry, window, content_type)
            if template is None:
                self._templates.clear()
            else:
                if len(self._templates) >= _MAX_TEMPLATES:
                    self._templates.clear()
                self._templates[content_type] = template
        if self._fast and template is not None:
            token = template.token(blob_name)
        else:
            token = self._sdk_token(blob_name, now, start, expiry, content_type=content_type)
        return f"{self._container_url}/{url_path(blob_name)}?{token}"

    def _sdk_token(self, blob_name: str, now: datetime, start: datetime, expiry: datetime,
                   sts_hook: Callable[[str], None] | None = None, content_type: str | None = None) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        options: dict[str, Any] = {"account_key": self._account_key} if self._account_key is not None \
            else {"user_delegation_key": self._user_delegation_key(now, expiry)}
        if sts_hook:
            options["sts_hook"] = sts_hook
        if content_type:
            options["content_type"] = content_type
        token: str = generate_blob_sas(
            self.account_name, self.container, blob_name,
            permission=BlobSasPermissions(read=True), start=start, expiry=expiry,
            protocol="https" if self._https else None, **options,
        )
        for part in token.split("&"):
            if part.startswith("sig="):
                remember_signature(unquote(part[4:]))  # no output may show it (``redact``)
        return token

    def _make_template(self, now: datetime, start: datetime, expiry: datetime,
                       window: tuple[datetime, datetime], content_type: str | None = None) -> _Template | None:
        """Sign the template blob with the SDK and split its string-to-sign around the blob path (one
        template per response type: ``rsct`` is part of what is signed)."""
        seen: list[str] = []
        try:
            token = self._sdk_token(_TEMPLATE_BLOB, now, start, expiry, sts_hook=seen.append,
                                    content_type=content_type)
        except TypeError:  # an SDK without sts_hook
            self._fast = False
            return None
        key = self._account_key if self._account_key is not None \
            else self._user_delegation_key(now, expiry).value
        resource = f"/blob/{self.account_name}/{self.container}/"
        parts = token.split("&")
        sigs = [i for i, p in enumerate(parts) if p.startswith("sig=")]
        if len(seen) != 1 or seen[0].count(resource + _TEMPLATE_BLOB) != 1 or len(sigs) != 1:
            self._fast = False
            return None
        head, tail = seen[0].split(resource + _TEMPLATE_BLOB)
        template = _Template(window, int(now.timestamp()), base64.b64decode(key), head + resource, tail,
                             "&".join(parts[:sigs[0]] + ["sig="]), "&".join([""] + parts[sigs[0] + 1:]))
        if template.token(_TEMPLATE_BLOB) != token:
            self._fast = False
            return None
        return template

    def _user_delegation_key(self, now: datetime, needed_until: datetime) -> Any:
        with self._lock:
            expiry = self._delegation_expiry
            if self._delegation_key is None or expiry is None or expiry < needed_until:
                key_expiry = min(needed_until + _DELEGATION_KEY_MARGIN, now + _DELEGATION_KEY_MAX)
                if key_expiry < needed_until:
                    raise ConfigError("SAS_TTL_HOURS is longer than a user-delegation key can live (7 days)")
                try:
                    self._delegation_key = self.service.get_user_delegation_key(now - self.start_skew, key_expiry)
                except AzureError as exc:
                    code = getattr(exc, "error_code", None) or type(exc).__name__
                    raise SigningError(
                        f"cannot sign SAS URLs: the storage account refused a user-delegation key ({code}): the "
                        "identity needs the 'Storage Blob Delegator' role on the images account") from exc
                self._delegation_expiry = key_expiry
            return self._delegation_key


def url_path(blob_name: str) -> str:
    """The blob name as a URL path every common client sends unchanged.

    Percent-encoding as usual (``%``, ``#``, ``?``, spaces, unicode), and also the dots of ``.`` and ``..``
    segments: requests, curl and browsers remove such segments before sending (RFC 3986 dot-segment
    removal), so ``300010/../front.jpg`` would reach the service as ``front.jpg`` and fail its signature.
    ``%2E`` is not a dot segment for them, and the storage service decodes it back to the blob's name.
    """
    path = quote(blob_name, safe="/~")
    if "." in path and ("/." in path or path.startswith(".")):
        path = "/".join("%2E" * len(seg) if seg in (".", "..") else seg for seg in path.split("/"))
    return path


class _Template:
    """Everything of a SAS token but the signature, for one second of start/expiry."""

    __slots__ = ("window", "second", "head", "tail", "before_sig", "after_sig", "_mac")

    def __init__(self, window: tuple[datetime, datetime], second: int, key: bytes, head: str, tail: str,
                 before_sig: str, after_sig: str):
        self.window, self.second, self.head, self.tail = window, second, head, tail
        self.before_sig, self.after_sig = before_sig, after_sig
        self._mac = hmac.new(key, head.encode("utf-8"), hashlib.sha256)  # the key and the head, hashed once

    def token(self, blob_name: str) -> str:
        mac = self._mac.copy()
        mac.update((blob_name + self.tail).encode("utf-8"))
        signature = base64.b64encode(mac.digest()).decode()
        remember_signature(signature)  # no output may show it, however it is echoed (``redact``)
        # quote() of base64, done by hand: only '+' and '=' need escaping ('/' stays, as the SDK leaves it).
        return self.before_sig + signature.replace("+", "%2B").replace("=", "%3D") + self.after_sig
