"""Client for TRAEDE's ``POST /products/images/sync`` (full image set per product, 10 products a call)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import requests

from ..config.settings import DEFAULT_HTTP, HttpSettings, TraedeSettings
from ..domain import Partner
from ..errors import AuthError, RejectedError
from .http import Answer, PartnerHttp

MAX_PRODUCTS_PER_REQUEST = 10  # TRAEDE's documented limit
CHECK_SETTINGS = "check TRAEDE_ACCESS_TOKEN and TRAEDE_APP_KEY"


class _TraedeAuth(requests.auth.AuthBase):
    """The bearer token and the app key, attached by the session to each request it sends."""

    def __init__(self, access_token: str, app_key: str):
        self._headers = {"Authorization": f"Bearer {access_token}", "X-Traede-App-Key": app_key}

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.update(self._headers)
        return request


class TraedeClient:
    name = Partner.TRAEDE
    unit = Partner.TRAEDE.unit  # one record per product: its complete image set
    batch_size = MAX_PRODUCTS_PER_REQUEST

    def __init__(self, base_url: str, access_token: str, app_key: str, *, payload_key: str = "products",
                 http: HttpSettings = DEFAULT_HTTP, pool_size: int = 8,
                 session: requests.Session | None = None, stop: threading.Event | None = None):
        self.http = PartnerHttp(self.name, base_url, http, pool_size=pool_size, base_url_setting="TRAEDE_BASE_URL",
                                session=session, stop=stop)
        self.payload_key = payload_key
        self._auth = _TraedeAuth(access_token, app_key)

    @classmethod
    def from_settings(cls, s: TraedeSettings, http: HttpSettings, *, pool_size: int = 8,
                      stop: threading.Event | None = None) -> TraedeClient:
        return cls(s.base_url, s.access_token, s.app_key, payload_key=s.payload_key, http=http,
                   pool_size=pool_size, stop=stop)

    def sync_products(self, products: list[dict[str, Any]], guard: Callable[[], float] | None = None) -> Answer:
        """Replace the image sets of up to 10 products (each must carry ALL its images). ``Answer.unsure``: an
        earlier attempt may still be applied later, after a newer set (``product_queue`` sends them again)."""
        if not 1 <= len(products) <= MAX_PRODUCTS_PER_REQUEST:
            raise ValueError(f"TRAEDE takes 1 to {MAX_PRODUCTS_PER_REQUEST} products a request, "
                             f"not {len(products)}")
        return self._post({self.payload_key: products}, f"POST /products/images/sync ({len(products)} products)",
                          guard=guard)

    send = sync_products  # the engine's name for it (see ``sync.Target``)

    def check_credentials(self) -> int:
        """Prove the token and app key without changing anything (used by ``doctor``); returns the status.

        TRAEDE has no read endpoint, so this sends an empty product list: it names no product, so no
        image set can be replaced or deleted. TRAEDE authenticates before it validates, so the expected
        answer is 422 (an empty list is invalid), not 401; a 2xx would prove the credentials as well.
        """
        try:
            self._post({self.payload_key: []}, "POST /products/images/sync (empty list, credentials check)",
                       expect_json=False)
        except RejectedError as exc:
            return exc.status_code or 422
        return 200

    def _post(self, body: dict[str, Any], what: str, *, expect_json: bool = True,
              guard: Callable[[], float] | None = None) -> Answer:
        try:
            return self.http.post("/products/images/sync", auth=self._auth, json_body=body, what=what,
                           expect_json=expect_json, guard=guard)
        except AuthError as exc:
            raise AuthError(self.name, f"{exc.message}: TRAEDE refused the credentials: {CHECK_SETTINGS}",
                            status_code=exc.status_code, response_body=exc.response_body,
                            unsure=exc.unsure) from exc

    def stats(self) -> dict[str, int]:
        return self.http.stats()

    def abort(self) -> None:
        self.http.abort()

    def close(self) -> None:
        self.http.close()
