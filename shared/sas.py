"""Read-only, blob-scoped, time-limited SAS URLs that a partner downloads from the internet."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import quote

from .errors import ConfigError

# A user-delegation key may live at most 7 days; ask for what the SAS needs plus a margin.
_DELEGATION_KEY_MARGIN = timedelta(hours=1)
_DELEGATION_KEY_MAX = timedelta(days=7)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SasSigner:
    """Signs blob URLs with the account key, or with a user-delegation key fetched once and reused.

    Start and expiry are computed per URL: start = now - skew (clock skew at the partner), expiry = now + ttl.
    The protocol is pinned to https whenever the endpoint is https.
    """

    def __init__(self, service_client: Any, container: str, *, ttl: timedelta, start_skew: timedelta,
                 clock: Callable[[], datetime] = _utcnow):
        self.service = service_client
        self.container = container
        self.ttl = ttl
        self.start_skew = start_skew
        self.clock = clock
        self.account_name = service_client.account_name
        self._container_url = f"{service_client.url.rstrip('/')}/{quote(container)}"
        self._https = self._container_url.lower().startswith("https://")
        key = getattr(service_client.credential, "account_key", None)
        self._account_key: str | None = key
        self._delegation_key: Any = None
        self._delegation_expiry: datetime | None = None
        self._lock = threading.Lock()

    @property
    def uses_delegation_key(self) -> bool:
        return self._account_key is None

    def url(self, blob_name: str) -> str:
        """The download URL for one blob, valid from now - skew until now + ttl."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        now = self.clock()
        start, expiry = now - self.start_skew, now + self.ttl
        if self._account_key is not None:
            creds = {"account_key": self._account_key}
        else:
            creds = {"user_delegation_key": self._user_delegation_key(now, expiry)}
        token = generate_blob_sas(
            self.account_name, self.container, blob_name,
            permission=BlobSasPermissions(read=True), start=start, expiry=expiry,
            protocol="https" if self._https else None, **creds,
        )
        return f"{self._container_url}/{quote(blob_name, safe='/~')}?{token}"

    def _user_delegation_key(self, now: datetime, needed_until: datetime) -> Any:
        with self._lock:
            if self._delegation_key is None or self._delegation_expiry < needed_until:
                key_expiry = min(needed_until + _DELEGATION_KEY_MARGIN, now + _DELEGATION_KEY_MAX)
                if key_expiry < needed_until:
                    raise ConfigError("SAS_TTL_HOURS is longer than a user-delegation key can live (7 days)")
                self._delegation_key = self.service.get_user_delegation_key(now - self.start_skew, key_expiry)
                self._delegation_expiry = key_expiry
            return self._delegation_key
