"""Client for Wallie's (Wair) image API: ``POST /Token`` then ``POST /Images/urls``."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from .. import redact
from ..config.settings import DEFAULT_HTTP, HttpSettings, WallieSettings
from ..domain import Partner
from ..errors import AuthError, PartnerError
from .http import Answer, PartnerHttp

CHECK_SETTINGS = "check WALLIE_TENANT, WALLIE_USERNAME and WALLIE_PASSWORD"
# A refused login is remembered this long: the other workers of the same run do not ask again. A login
# that got no answer (after its retries) is remembered briefly, for the workers that were waiting for it.
REFUSAL_MEMORY_SECONDS = 30.0
FAILURE_MEMORY_SECONDS = 5.0


class _TokenRefused(AuthError):
    """POST /Token refused the credentials themselves: renewing again cannot help."""


class _BearerToken(requests.auth.AuthBase):
    """Attaches a valid token to every attempt, so a token that expires during a retry wait is renewed
    before the next attempt instead of being refused; remembers, per thread, which token it sent."""

    def __init__(self, client: WallieClient):
        self.client = client
        self.sent = threading.local()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.client._valid_token()
        self.sent.token = token
        request.headers["Authorization"] = f"Bearer {token}"
        return request


class WallieClient:
    """Sends image records to Wallie with one cached token, renewed shortly before it expires.

    A 401 renews the token once and sends again; a 401 for the renewed token means Wallie refuses
    credentials it has just accepted, an ``AuthError`` (retrying cannot help).
    """

    name = Partner.WALLIE
    unit = Partner.WALLIE.unit  # one record per image

    def __init__(self, base_url: str, tenant: str, username: str, password: str, *,
                 batch_size: int = 500, http: HttpSettings = DEFAULT_HTTP, pool_size: int = 8,
                 session: requests.Session | None = None, stop: threading.Event | None = None):
        self.http = PartnerHttp(self.name, base_url, http, pool_size=pool_size, base_url_setting="WALLIE_BASE_URL",
                                session=session, stop=stop)
        self.tenant = tenant
        self.batch_size = batch_size
        self._username = username
        self._password = password
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()
        self._refusal: tuple[float, PartnerError] | None = None
        self._auth = _BearerToken(self)
        self.token_requests = 0

    @classmethod
    def from_settings(cls, s: WallieSettings, http: HttpSettings, *, pool_size: int = 8,
                      stop: threading.Event | None = None) -> WallieClient:
        return cls(s.base_url, s.tenant, s.username, s.password, batch_size=s.batch_size, http=http,
                   pool_size=pool_size, stop=stop)

    def send_images(self, records: list[dict[str, Any]], guard: Callable[[], float] | None = None) -> Answer:
        """Upsert a batch of image records (at most ``batch_size``)."""
        body = {"images": records}
        what = f"POST /Images/urls ({len(records)} images)"
        unsure = False
        for renewed in (False, True):
            try:
                answer = self.http.post("/Images/urls", headers={"X-Tenant": self.tenant}, auth=self._auth,
                                        json_body=body, what=what, guard=guard)
                return Answer(answer.response, answer.unsure or unsure)
            except _TokenRefused:
                raise
            except AuthError as exc:
                if renewed:
                    raise AuthError(self.name, f"{what}: HTTP {exc.status_code} for a token Wallie issued moments "
                                               f"ago: {CHECK_SETTINGS} (the user may lack rights for this tenant)",
                                    status_code=exc.status_code, response_body=exc.response_body,
                                    unsure=exc.unsure or unsure) from exc
                unsure = exc.unsure
                self._forget(getattr(self._auth.sent, "token", None))
                what = f"POST /Images/urls ({len(records)} images, after renewing the token)"
        raise AssertionError("unreachable: the second attempt returns or raises")

    send = send_images  # the engine's name for it (see ``sync.Target``)

    def check_token(self) -> None:
        """Fetch a fresh token: proves the URL, tenant and credentials (used by ``doctor``)."""
        self._forget(self._token)
        self._refusal = None
        self._valid_token()

    def _valid_token(self) -> str:
        with self._token_lock:
            if self._refusal is not None:
                at, failure = self._refusal
                memory = REFUSAL_MEMORY_SECONDS if isinstance(failure, _TokenRefused) else FAILURE_MEMORY_SECONDS
                if time.monotonic() - at < memory:
                    raise type(failure)(self.name, failure.message, status_code=failure.status_code,
                                        response_body=failure.response_body, cause=failure.cause,
                                        detail=failure.detail)
            if self._token is None or time.monotonic() >= self._token_expires:
                try:
                    self._token, lifetime = self._fetch_token()
                except PartnerError as exc:
                    self._refusal = (time.monotonic(), exc)
                    raise
                self._refusal = None
                # Renew a little early: 10% of the lifetime, at most a minute.
                self._token_expires = time.monotonic() + lifetime - min(60.0, lifetime * 0.1)
            return self._token

    def _forget(self, token: str | None) -> None:
        with self._token_lock:
            if token is None or self._token == token:
                self._token = None

    def _fetch_token(self) -> tuple[str, float]:
        self.token_requests += 1
        try:
            response = self.http.post("/Token", headers={"X-Tenant": self.tenant},
                                      json_body={"username": self._username, "password": self._password},
                                      what="POST /Token", expect_json=True).response
        except AuthError as exc:
            raise _TokenRefused(self.name, f"token request refused: {CHECK_SETTINGS}",
                            status_code=exc.status_code, response_body=exc.response_body) from exc
        try:
            data = response.json()
            token, lifetime = data["accessToken"], float(data.get("expiresIn") or 0)
            if not isinstance(token, str) or not token:
                raise ValueError("empty accessToken")
        except (ValueError, KeyError, TypeError) as exc:
            raise PartnerError(self.name, f"POST /Token answered 200 without a usable token ({exc})",
                               status_code=response.status_code) from exc
        redact.register(token)  # a token Wallie issued is a secret too: never printed, logged or saved
        return token, max(lifetime, 1.0)

    def stats(self) -> dict[str, int]:
        return {**self.http.stats(), "token_requests": self.token_requests}

    def abort(self) -> None:
        self.http.abort()

    def close(self) -> None:
        self.http.close()
