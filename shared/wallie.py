"""Client for Wallie's (Wair) image API: ``POST /Token`` then ``POST /Images/urls``."""
from __future__ import annotations

import threading
import time

import requests

from .errors import AuthError, PartnerError
from .http import PartnerHttp
from .settings import HttpSettings, WallieSettings


MAX_TOKEN_RENEWALS = 5


class WallieClient:
    """Sends image records to Wallie. One token per run: cached until shortly before it expires,
    refreshed once when Wallie answers 401 mid-run."""

    name = "wallie"

    def __init__(self, base_url: str, tenant: str, username: str, password: str, *,
                 batch_size: int = 500, http: HttpSettings = HttpSettings(), pool_size: int = 8,
                 session: requests.Session | None = None):
        self.http = PartnerHttp(self.name, base_url, http, pool_size=pool_size, session=session)
        self.tenant = tenant
        self.batch_size = batch_size
        self._username = username
        self._password = password
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()
        self.token_requests = 0

    @classmethod
    def from_settings(cls, s: WallieSettings, http: HttpSettings, *, pool_size: int = 8) -> "WallieClient":
        return cls(s.base_url, s.tenant, s.username, s.password, batch_size=s.batch_size, http=http,
                   pool_size=pool_size)

    def send_images(self, records: list[dict]) -> None:
        """Upsert a batch of image records (at most ``batch_size``).

        A 401 renews the token and sends again. One renewal is the rule; a few more are allowed because a
        short-lived token can expire while urllib3 waits out a 429's Retry-After for the same call.
        """
        body = {"images": records}
        what = f"POST /Images/urls ({len(records)} images)"
        for renewals in range(MAX_TOKEN_RENEWALS + 1):
            token = self._valid_token()
            try:
                self.http.post("/Images/urls", headers=self._headers(token), json_body=body, what=what)
                return
            except AuthError:
                if renewals == MAX_TOKEN_RENEWALS:
                    raise
                self._forget(token)
                what = f"POST /Images/urls ({len(records)} images, after renewing the token)"

    def check_token(self) -> None:
        """Fetch a fresh token: proves the URL, tenant and credentials (used by ``doctor``)."""
        self._forget(self._token)
        self._valid_token()

    def _headers(self, token: str) -> dict:
        return {"X-Tenant": self.tenant, "Authorization": f"Bearer {token}"}

    def _valid_token(self) -> str:
        with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_expires:
                self._token, lifetime = self._fetch_token()
                # Renew a little early: 10% of the lifetime, at most a minute.
                self._token_expires = time.monotonic() + lifetime - min(60.0, lifetime * 0.1)
            return self._token

    def _forget(self, token: str | None) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = None

    def _fetch_token(self) -> tuple[str, float]:
        self.token_requests += 1
        try:
            response = self.http.post("/Token", headers={"X-Tenant": self.tenant},
                                      json_body={"username": self._username, "password": self._password},
                                      what="POST /Token", expect_json=True)
        except AuthError as exc:
            raise AuthError(self.name, "token request refused: check WALLIE_TENANT, WALLIE_USERNAME and "
                                       "WALLIE_PASSWORD", status_code=exc.status_code,
                            response_body=exc.response_body) from None
        try:
            data = response.json()
            token, lifetime = data["accessToken"], float(data.get("expiresIn") or 0)
            if not isinstance(token, str) or not token:
                raise ValueError("empty accessToken")
        except (ValueError, KeyError, TypeError) as exc:
            raise PartnerError(self.name, f"POST /Token answered 200 without a usable token ({exc})",
                               status_code=response.status_code,
                               response_body=response.text[:200]) from None
        return token, max(lifetime, 1.0)

    def stats(self) -> dict:
        return {**self.http.stats(), "token_requests": self.token_requests}

    def close(self) -> None:
        self.http.close()
