"""Client for TRAEDE's ``POST /products/images/sync`` (full image set per product, 10 products a call)."""
from __future__ import annotations

import requests

from .errors import RejectedError
from .http import PartnerHttp
from .settings import HttpSettings, TraedeSettings

MAX_PRODUCTS_PER_REQUEST = 10  # TRAEDE's documented limit


class TraedeClient:
    name = "traede"
    batch_size = MAX_PRODUCTS_PER_REQUEST

    def __init__(self, base_url: str, access_token: str, app_key: str, *, payload_key: str = "products",
                 http: HttpSettings = HttpSettings(), pool_size: int = 8,
                 session: requests.Session | None = None):
        self.http = PartnerHttp(self.name, base_url, http, pool_size=pool_size, session=session)
        self.payload_key = payload_key
        self._headers = {"Authorization": f"Bearer {access_token}", "X-Traede-App-Key": app_key}

    @classmethod
    def from_settings(cls, s: TraedeSettings, http: HttpSettings, *, pool_size: int = 8) -> "TraedeClient":
        return cls(s.base_url, s.access_token, s.app_key, payload_key=s.payload_key, http=http,
                   pool_size=pool_size)

    def sync_products(self, products: list[dict]) -> None:
        """Replace the image sets of up to 10 products (each must carry ALL its images)."""
        if not 1 <= len(products) <= MAX_PRODUCTS_PER_REQUEST:
            raise ValueError(f"TRAEDE takes 1 to {MAX_PRODUCTS_PER_REQUEST} products a request, "
                             f"not {len(products)}")
        self.http.post("/products/images/sync", headers=self._headers,
                       json_body={self.payload_key: products},
                       what=f"POST /products/images/sync ({len(products)} products)", expect_json=True)

    def check_credentials(self) -> int:
        """Prove the token and app key without changing anything (used by ``doctor``); returns the status.

        TRAEDE has no read endpoint, so this sends an empty product list: it names no product, so no
        image set can be replaced or deleted. TRAEDE authenticates before it validates, so the expected
        answer is 422 (an empty list is invalid), not 401; a 2xx would prove the credentials as well.
        """
        try:
            response = self.http.post("/products/images/sync", headers=self._headers,
                                      json_body={self.payload_key: []},
                                      what="POST /products/images/sync (empty list, credentials check)")
        except RejectedError as exc:
            return exc.status_code or 422
        return response.status_code

    def stats(self) -> dict:
        return self.http.stats()

    def close(self) -> None:
        self.http.close()
