"""Wallie sandbox: `POST /Token` and `POST /Images/urls` as documented by Wair.

Strict on purpose: whatever this sandbox accepts, the real Wallie should accept too, so a client that passes
here does not discover a contract mistake in production.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from .base import Reply, Request, Route, Sandbox, empty_reply, is_http_url, is_int, is_nonempty_str, json_reply

IMAGE_FIELDS = ("imageId", "itemId", "colorId", "type", "url")
IMAGE_TYPES = (0, 1, 2, 3, 4, 5, 99)  # front, back, alternate, zoom, lifestyle, packaging, unknown
MAX_IMAGES = 1000
MAX_IMAGE_ID = 100


class WallieSandbox(Sandbox):
    """Wallie's token and image-url endpoints with upsert-by-imageId storage.

    Issued tokens stay valid until their own expiry, also across `reset()` (a client holding a token should
    not see a surprise 401 because a test cleared data); `revoke_tokens()` forces that 401 deliberately.
    `.received` holds the accepted /Images/urls bodies only: token bodies are credentials, not data.
    A url is downloaded when it differs from the last *successful* download of that imageId, so a failed
    download is retried when the image is sent again.
    """

    name = "wallie"
    counters = ("token_requests", "image_requests", "images_received")

    def __init__(
        self,
        tenant: str = "TENANT",
        username: str = "wallie-user",
        password: str = "wallie-pass",
        token_lifetime: float = 3600.0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        download: bool = True,
    ) -> None:
        if token_lifetime <= 0:
            raise ValueError("token_lifetime must be > 0 seconds")
        self.tenant = tenant
        self.username = username
        self.password = password
        self.token_lifetime = float(token_lifetime)
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        super().__init__(host=host, port=port, download=download)

    def routes(self) -> dict[str, Route]:
        return {
            "/Token": Route(self._post_token, "token_requests"),
            "/Images/urls": Route(self._post_images, "image_requests"),
        }

    # --- inspection

    @property
    def images(self) -> dict[str, dict[str, Any]]:
        """imageId -> the record as last sent."""
        with self._lock:
            return {image_id: dict(record) for image_id, record in self._images.items()}

    @property
    def downloaded(self) -> dict[str, dict[str, Any]]:
        """imageId -> {"url", "sha256", "size"} of its last successful download."""
        with self._lock:
            return {image_id: dict(info) for image_id, info in self._downloaded.items()}

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def _clear_state(self) -> None:
        self._images: dict[str, dict[str, Any]] = {}
        self._downloaded: dict[str, dict[str, Any]] = {}

    def _partner_state(self) -> dict[str, Any]:
        return {"images": self._images, "downloaded": self._downloaded}

    # --- endpoints

    def _post_token(self, request: Request) -> Reply:
        if request.header("X-Tenant") != self.tenant:
            return self._refuse(request, 401, {"message": "Unknown or missing X-Tenant header"})
        try:
            body = request.json()
        except ValueError:
            return self._refuse(request, 400, {"message": "Request body is not valid JSON"})
        if not isinstance(body, dict) or (body.get("username"), body.get("password")) != (self.username, self.password):
            return self._refuse(request, 401, {"message": "Invalid username or password"})
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: expiry for t, expiry in self._tokens.items() if expiry > now}
            self._tokens[token] = now + self.token_lifetime
        return json_reply(
            200,
            {
                "accessToken": token,
                "expiresIn": max(1, int(self.token_lifetime)),
                "tokenType": "Bearer",
                "scope": "api",
            },
        )

    def _post_images(self, request: Request) -> Reply:
        if request.header("X-Tenant") != self.tenant:
            return self._refuse(request, 401, {"message": "Unknown or missing X-Tenant header"})
        token_problem = self._token_problem(request.header("Authorization"))
        if token_problem:
            return self._refuse(request, 401, {"message": token_problem})
        if not request.is_json:
            return self._refuse(request, 415, {"message": "Content-Type must be application/json"})
        try:
            body = request.json()
        except ValueError:
            return self._refuse(request, 400, {"errors": [_error(None, None, None, "Request body is not valid JSON")]})
        errors = self._validate(body)
        if errors:
            return self._refuse(request, 400, {"errors": errors})

        records = body["images"]
        with self._lock:
            self._received.append(body)
            self._stats["images_received"] += len(records)
            to_download = [
                (r["imageId"], r["url"])
                for r in records
                if self.download and self._downloaded.get(r["imageId"], {}).get("url") != r["url"]
            ]
            for record in records:
                self._images[record["imageId"]] = dict(record)
        for image_id, url in to_download:
            result = self._fetch(url, imageId=image_id)
            if result is not None:
                with self._lock:
                    self._downloaded[image_id] = result
        return empty_reply(200)

    # --- contract

    def _token_problem(self, authorization: str | None) -> str | None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "Missing bearer token"
        with self._lock:
            expiry = self._tokens.get(token.strip())
        if expiry is None:
            return "Invalid token"
        if expiry <= time.monotonic():
            return "Token expired"
        return None

    def _validate(self, body: Any) -> list[dict[str, Any]]:
        """Every problem in the request, so a client fixes them all at once (Wallie lists them in the 400)."""
        if not isinstance(body, dict):
            return [_error(None, None, None, 'Body must be a JSON object {"images": [...]}')]
        errors = [_error(None, None, key, "Unknown field") for key in body if key != "images"]
        images = body.get("images")
        if not isinstance(images, list):
            return errors + [_error(None, None, "images", "Required: a list of images")]
        if not images:
            return errors + [_error(None, None, "images", "Must contain at least one image")]
        if len(images) > MAX_IMAGES:
            message = f"At most {MAX_IMAGES} images per request, got {len(images)}"
            return errors + [_error(None, None, "images", message)]
        seen: set[str] = set()
        for index, record in enumerate(images):
            errors.extend(self._record_errors(index, record, seen))
        return errors

    def _record_errors(self, index: int, record: Any, seen: set[str]) -> list[dict[str, Any]]:
        if not isinstance(record, dict):
            return [_error(index, None, None, "Image must be a JSON object")]
        image_id = record.get("imageId")
        reported_id = image_id if isinstance(image_id, str) else None
        errors = []

        def problem(field: str, message: str) -> None:
            errors.append(_error(index, reported_id, field, message))

        for key in record:
            if key not in IMAGE_FIELDS:
                problem(key, "Unknown field")
        if "imageId" not in record:
            problem("imageId", "Required")
        elif not is_nonempty_str(image_id):
            problem("imageId", "Must be a non-empty string")
        elif len(image_id) > MAX_IMAGE_ID:
            problem("imageId", f"At most {MAX_IMAGE_ID} characters")
        elif image_id in seen:
            problem("imageId", "Duplicate imageId in this request")
        elif image_id in self.faults.reject:
            problem("imageId", "rejected by sandbox rule")
        if isinstance(image_id, str):
            seen.add(image_id)
        if "itemId" not in record:
            problem("itemId", "Required")
        elif not is_nonempty_str(record["itemId"]):
            problem("itemId", "Must be a non-empty string")
        if "colorId" in record and not is_nonempty_str(record["colorId"]):
            problem("colorId", "Must be a non-empty string when present")
        if "type" in record and not (is_int(record["type"]) and record["type"] in IMAGE_TYPES):
            problem("type", f"Must be one of {', '.join(map(str, IMAGE_TYPES))}")
        if "url" not in record:
            problem("url", "Required")
        elif not is_http_url(record["url"]):
            problem("url", "Must be an absolute http(s) URL")
        return errors


def _error(index: int | None, image_id: str | None, field: str | None, message: str) -> dict[str, Any]:
    return {"index": index, "imageId": image_id, "field": field, "message": message}
