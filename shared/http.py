"""The one HTTP path both partner clients use: pooled session, timeouts, retries, error mapping."""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .errors import AuthError, PartnerError, RejectedError, TransientError
from .settings import HttpSettings

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BODY_EXCERPT = 2000


class DeadlineRetry(Retry):
    """urllib3 Retry that also stops once a request has spent ``max_seconds`` (sleeps included).

    Honours Retry-After (429/503) and backs off exponentially with jitter. The deadline starts at the
    first failure of each request, so one template instance serves every request of a session.
    """

    def __init__(self, *args: Any, max_seconds: float = 120.0, deadline: float | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.max_seconds = max_seconds
        self.deadline = deadline

    def new(self, **kw: Any) -> "DeadlineRetry":
        kw.setdefault("max_seconds", self.max_seconds)
        kw.setdefault("deadline", self.deadline if self.deadline is not None
                      else time.monotonic() + self.max_seconds)
        return super().new(**kw)

    def is_exhausted(self) -> bool:
        return super().is_exhausted() or (self.deadline is not None and time.monotonic() >= self.deadline)

    def sleep(self, response: Any = None) -> None:
        wait = self.get_retry_after(response) if response is not None and self.respect_retry_after_header \
            else None
        if wait is None:
            wait = self.get_backoff_time()
        if self.deadline is not None:
            wait = min(wait, max(0.0, self.deadline - time.monotonic()))
        if wait > 0:
            time.sleep(wait)


def make_retry(http: HttpSettings) -> DeadlineRetry:
    # Both partners upsert by id, so retrying a POST is safe: allowed_methods=None retries every verb.
    return DeadlineRetry(
        total=http.max_retries, connect=http.max_retries, read=http.max_retries, status=http.max_retries,
        other=0, allowed_methods=None, status_forcelist=RETRY_STATUSES,
        backoff_factor=http.backoff_seconds, backoff_max=30, backoff_jitter=http.backoff_seconds / 2,
        respect_retry_after_header=True, raise_on_status=False, raise_on_redirect=False,
        max_seconds=http.max_retry_seconds,
    )


class PartnerHttp:
    """A partner's base URL and a pooled ``requests.Session`` with retries mounted on it."""

    def __init__(self, partner: str, base_url: str, http: HttpSettings, *, pool_size: int = 8,
                 session: requests.Session | None = None):
        self.partner = partner
        self.base_url = base_url.rstrip("/")
        self.timeout = http.timeout_seconds
        self.max_retries = http.max_retries
        self.session = session or requests.Session()
        adapter = HTTPAdapter(max_retries=make_retry(http), pool_connections=2, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0

    def post(self, path: str, *, headers: dict, json_body: Any = None, data: bytes | None = None,
             what: str, expect_json: bool = False) -> requests.Response:
        """POST and return a 2xx response; anything else raises the matching PartnerError.

        A 2xx whose body is not JSON (``expect_json``), or not JSON-or-empty, is an error too: a proxy or
        error page answering 200 must not pass for a delivery.
        """
        url = f"{self.base_url}{path}"
        if json_body is not None:
            headers = {**headers, "Content-Type": "application/json"}
            data = _dumps(json_body)
        try:
            response = self.session.post(url, data=data, headers=headers, timeout=self.timeout)
        except requests.exceptions.RetryError as exc:
            self._count(1 + self.max_retries)
            raise TransientError(self.partner, f"{what}: gave up after retries ({_reason(exc)})") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            # urllib3 does not hand back its last Retry: a request that gave up made up to 1 + max tries.
            self._count(1 + self.max_retries)
            raise TransientError(self.partner, f"{what}: no answer from {self.base_url} "
                                               f"after retries ({_reason(exc)})") from None
        except requests.exceptions.RequestException as exc:
            # e.g. the connection broke mid-answer (ChunkedEncodingError): no verdict from the partner.
            self._count(1)
            raise TransientError(self.partner, f"{what}: the answer broke off ({_reason(exc)})") from None
        history = getattr(getattr(response.raw, "retries", None), "history", ()) or ()
        self._count(1 + len(history))
        if not response.ok:
            raise self.error_for(response, what)
        if (response.content or expect_json) and not _is_json(response):
            raise TransientError(self.partner, f"{what}: HTTP {response.status_code} with a body that is not "
                                               "JSON (a proxy or error page?)", status_code=response.status_code,
                                 response_body=response.text[:200])
        return response

    def error_for(self, response: requests.Response, what: str) -> PartnerError:
        code, body = response.status_code, response.text[:BODY_EXCERPT]
        message = f"{what}: HTTP {code}"
        if code in (401, 403):
            return AuthError(self.partner, message, status_code=code, response_body=body)
        if code in (400, 422):
            return RejectedError(self.partner, message, status_code=code, response_body=body)
        if code in RETRY_STATUSES or code >= 500:
            return TransientError(self.partner, f"{message} after retries", status_code=code,
                                  response_body=body)
        return PartnerError(self.partner, message, status_code=code, response_body=body)

    def _count(self, attempts: int) -> None:
        with self._lock:
            self.requests += 1
            self.retries += max(0, attempts - 1)

    def stats(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "retries": self.retries}

    def close(self) -> None:
        self.session.close()


def _is_json(response: requests.Response) -> bool:
    try:
        json.loads(response.content)
    except ValueError:
        return False
    return True


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _reason(exc: Exception) -> str:
    text = str(exc)
    # urllib3 messages embed the URL; keep the cause readable and short.
    for marker in ("Caused by ", "(Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()")[:300]
