"""The one HTTP path both partner clients use: pooled session, hard deadlines, retries, error mapping.

Every call goes through ``PartnerHttp.post``:

- **A real deadline per attempt.** ``HTTP_TIMEOUT_SECONDS`` bounds a whole attempt: connecting, sending
  and reading the complete answer. A socket timeout alone would not (an answer that trickles in one byte a
  second never trips it), so a watchdog shuts the attempt's socket down when its time is up.
- **Retries that are safe.** Both partners upsert, so a POST is retried after a connection error, a
  timeout, an answer that broke off (reset, truncated body, protocol error), 429 and 5xx, honouring
  ``Retry-After``, with exponential backoff and jitter. ``HTTP_RETRY_MAX_SECONDS`` bounds the whole call,
  waits included: a wait that would end past it is not started.
- **Credentials stay home.** Redirects are never followed: a 3xx is a failure naming ``Location`` and the
  base-URL setting, so no header, token or body ever goes to another origin.
- **Errors say what to do next** (see ``errors.py``): transient, rejected (isolate the record), too large
  (split the batch), or stop the partner (credentials refused, redirected).
"""
from __future__ import annotations

import heapq
import http.client
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ..config.settings import HttpSettings
from ..errors import AuthError, PartnerError, RedirectError, RejectedError, TooLargeError, TransientError
from ..redact import redact

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BODY_EXCERPT = 2000
EXCERPT_SCAN = 64 * 1024  # an answer is redacted this far before it is cut, so no cut leaves half a signature
BACKOFF_MAX_SECONDS = 30.0
CONNECT_TIMEOUT_MAX = 10.0
# A lock-guarded attempt needs at least this much of the lock left, or it is not started.
GUARD_MARGIN_SECONDS = 2.0
GUARD_CHECK_SECONDS = 1.0

_local = threading.local()
log = logging.getLogger(__name__)


class _Attempt:
    """One attempt's deadline: when time is up, the watchdog shuts the attempt's socket down.

    The connection registers itself here when urllib3 sends the request on it (``_TrackedConnection``),
    from the attempt's own thread, so the watchdog knows which socket to close. ``guard`` (optional) says
    for how many more seconds the caller's lock is certainly held: the attempt runs as long as the lock keeps
    being renewed, and is cut only when the lock is about to be lost (or at its own deadline).
    ``sent`` becomes true once the whole request was written: from then on, an attempt without a complete
    answer may still be applied by the partner, later.
    """

    def __init__(self, seconds: float, guard: Callable[[], float] | None = None):
        self.deadline = time.monotonic() + max(seconds, 0.0)
        self.guard = guard
        self.fired = False
        self.lock_lost = False
        self.done = False
        self.sent = False
        self._connection: Any = None
        self._lock = threading.Lock()

    def next_check(self) -> float:
        """When the watchdog must look at this attempt again (monotonic time): at its deadline, or, under a
        lock, at least every ``GUARD_CHECK_SECONDS`` (a lock can be lost at once, when its blob is deleted)."""
        if self.guard is None:
            return self.deadline
        held = max(self.guard() - GUARD_MARGIN_SECONDS, 0.0)
        return min(self.deadline, time.monotonic() + min(held, GUARD_CHECK_SECONDS))

    def bind(self, connection: Any) -> None:
        with self._lock:
            self._connection = connection
            fired = self.fired
        if fired:
            _shut(connection)

    def fire(self, *, lock_lost: bool = False) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            self.lock_lost = lock_lost
            connection = self._connection
        if connection is not None:
            _shut(connection)

    def __enter__(self) -> _Attempt:
        _local.attempt = self
        _WATCHDOG.watch(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.done = True
        _local.attempt = None


class _Watchdog:
    """One thread for every attempt's deadline (a thread per attempt cost more than the request)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._thread: threading.Thread | None = None

    def watch(self, attempt: _Attempt, at: float | None = None) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (attempt.next_check() if at is None else at, self._seq, attempt))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, attempt = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if time.monotonic() >= attempt.deadline:
                attempt.fire()
            elif (again := attempt.next_check()) > time.monotonic():
                self.watch(attempt, again)  # the lock was renewed meanwhile: look again later
            else:
                attempt.fire(lock_lost=True)


_WATCHDOG = _Watchdog()


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Tracked:
    def request(self, *args: Any, **kwargs: Any) -> Any:
        attempt = getattr(_local, "attempt", None)
        if attempt is not None:
            attempt.bind(self)
        result = super().request(*args, **kwargs)  # type: ignore[misc]
        if attempt is not None:
            attempt.sent = True  # the partner has the whole request: it may apply it, whatever we hear next
        return result


class _TrackedHTTPConnection(_Tracked, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _Adapter(HTTPAdapter):
    """No retries of its own (``PartnerHttp`` decides) and connections the watchdog can find."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


# Gateway answers: the gateway gave up waiting, the partner behind it may still apply the request.
GATEWAY_STATUSES = frozenset({502, 504})


class _Retry(Exception):
    """An attempt that may be repeated: why, and the answer's status and body if there was one. ``unsure``:
    the partner may still apply this attempt later (it had the whole request and gave no final answer)."""

    def __init__(self, why: str, status: int | None = None, body: str | None = None,
                 retry_after: float | None = None, *, unsure: bool = False):
        super().__init__(why)
        self.why, self.status, self.body, self.retry_after = why, status, body, retry_after
        self.unsure = unsure or status in GATEWAY_STATUSES


@dataclass(frozen=True, slots=True)
class Answer:
    """A 2xx answer read in full, and whether an earlier attempt of the same call may still be applied by
    the partner later (``unsure``: it was cut off or reset after the whole request was sent). A caller whose
    partner replaces state with each request (TRAEDE's product sets) sends again once such an attempt must
    have been applied or dropped: see ``product_queue``."""

    response: requests.Response
    unsure: bool = False


class PartnerHttp:
    """A partner's base URL and a pooled ``requests.Session``; ``post`` is the only way out."""

    def __init__(self, partner: str, base_url: str, http: HttpSettings, *, pool_size: int = 8,
                 base_url_setting: str = "the base URL setting", session: requests.Session | None = None,
                 stop: threading.Event | None = None):
        self.partner = partner
        self.base_url = base_url.rstrip("/")
        self.base_url_setting = base_url_setting
        self.http = http
        self.stop = stop or threading.Event()
        self.session = session or requests.Session()
        self.session.trust_env = False  # no proxy or .netrc credentials from the environment
        adapter = _Adapter(max_retries=0, pool_connections=2, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._lock = threading.Lock()
        self._attempts: set[_Attempt] = set()
        self.requests = 0
        self.retries = 0

    def post(self, path: str, *, headers: Mapping[str, str] | None = None, auth: requests.auth.AuthBase | None = None,
             json_body: Any = None, what: str, expect_json: bool = False,
             guard: Callable[[], float] | None = None) -> Answer:
        """POST and return a 2xx answer whose body was read in full; anything else raises.

        ``guard`` (optional) returns the seconds for which the caller's lock is still certainly held: no
        attempt starts with less than ``GUARD_MARGIN_SECONDS`` left, and one in flight is cut when the lock
        is about to be lost (while it keeps being renewed, the attempt runs until its own deadline).
        Whether an attempt's outcome stayed unknown is in the answer (``Answer.unsure``) or in the
        ``PartnerError`` raised (``unsure``).
        """
        url = f"{self.base_url}{path}"
        body = _dumps(json_body)
        send_headers = {**(headers or {}), "Content-Type": "application/json"}
        started = time.monotonic()
        call_deadline = started + self.http.max_retry_seconds
        attempt = 0
        unsure = False
        try:
            while True:
                attempt += 1
                budget = min(self.http.timeout_seconds, call_deadline - time.monotonic())
                if guard is not None and guard() - GUARD_MARGIN_SECONDS <= 0:
                    lost = "not sent: the lock that makes this send safe could not be kept (storage unreachable?); " \
                           "it is retried later"
                    raise TransientError(self.partner, f"{what}: {lost}", cause=f"POST {path}: {lost}")
                try:
                    return Answer(self._checked(self._logged_attempt(url, body, send_headers, auth, budget, guard,
                                                                     what, attempt), what, expect_json,
                                                f"POST {path}"), unsure)
                except _Retry as retry:
                    unsure = unsure or retry.unsure
                    wait = self._wait(attempt, retry)
                    if attempt > self.http.max_retries or time.monotonic() + wait >= call_deadline:
                        raise self._gave_up(what, f"POST {path}", retry, attempt,
                                            time.monotonic() - started) from retry
                    if self.stop.wait(wait):
                        raise TransientError(self.partner, f"{what}: not sent: the run was stopped while "
                                                           f"waiting to retry ({retry.why})") from retry
        except PartnerError as exc:
            exc.unsure = exc.unsure or unsure
            raise
        finally:
            with self._lock:
                self.requests += 1
                self.retries += attempt - 1

    # -- one attempt --------------------------------------------------------------------------------

    def _logged_attempt(self, url: str, body: bytes, headers: dict[str, Any], auth: Any, budget: float,
                        guard: Callable[[], float] | None, what: str, attempt: int) -> requests.Response:
        """``_attempt``, with one DEBUG line per attempt: partner, request, outcome, milliseconds."""
        sent = time.monotonic()
        try:
            response = self._attempt(url, body, headers, auth, budget, guard)
        except (_Retry, PartnerError) as exc:
            why = exc.why if isinstance(exc, _Retry) else exc.message
            log.debug("%s: %s: %s after %.0f ms (attempt %d)", self.partner, what, why, _ms(sent), attempt)
            raise
        log.debug("%s: %s: HTTP %d in %.0f ms (attempt %d)", self.partner, what, response.status_code, _ms(sent),
                  attempt)
        return response

    def _attempt(self, url: str, body: bytes, headers: dict[str, Any], auth: Any, budget: float,
                 guard: Callable[[], float] | None) -> requests.Response:
        if self.stop.is_set():
            raise TransientError(self.partner, "not sent: the run was stopped")
        watchdog = _Attempt(budget, guard)
        with self._lock:
            self._attempts.add(watchdog)
        try:
            with watchdog:
                response = self.session.post(url, data=body, headers=headers, auth=auth, allow_redirects=False,
                                             stream=True, timeout=(min(CONNECT_TIMEOUT_MAX, budget), budget))
                try:
                    _ = response.content  # the whole answer, within the same deadline
                finally:
                    response.close()
        except requests.exceptions.RequestException as exc:
            unsure = watchdog.sent  # the partner had the whole request, and we never heard the end of it
            if self.stop.is_set() and watchdog.fired:
                raise TransientError(self.partner, "not sent: the run was stopped mid-request (the partner may "
                                                   "or may not have applied it)", unsure=unsure) from exc
            if watchdog.lock_lost:
                raise _Retry("cut off: the lock that makes this send safe could not be renewed (storage "
                             "unreachable?)", unsure=unsure) from exc
            if watchdog.fired:
                raise _Retry(f"timed out: no complete answer within {budget:g} s (HTTP_TIMEOUT_SECONDS)",
                             unsure=unsure) from exc
            raise _Retry(_describe(exc, self.base_url), unsure=unsure) from exc
        except (OSError, ValueError, http.client.HTTPException) as exc:  # below requests: a transport oddity
            raise _Retry(f"the connection failed ({type(exc).__name__}: {str(exc)[:200]})",
                         unsure=watchdog.sent) from exc
        finally:
            with self._lock:
                self._attempts.discard(watchdog)
        return response

    def _checked(self, response: requests.Response, what: str, expect_json: bool,
                 label: str | None = None) -> requests.Response:
        """A 2xx answer, or the error it means. ``label`` names the request without what differs from call to
        call (``what`` says "POST /Images/urls (500 images)"; ``label`` "POST /Images/urls"): errors keep it
        as their ``cause``."""
        code = response.status_code
        if 300 <= code < 400:
            location = response.headers.get("Location", "(no Location header)")
            raise RedirectError(self.partner, f"{what}: HTTP {code} redirect to {location} was not followed "
                                              f"(credentials never leave for another address): set "
                                              f"{self.base_url_setting} to the address that answers",
                                status_code=code)
        if code in RETRY_STATUSES or code >= 500:
            raise _Retry(f"HTTP {code}", code, _excerpt(response), _retry_after(response))
        if code >= 400:
            raise self.error_for(response, what, label)
        if (response.content or expect_json) and not _is_json(response.content):
            raise _Retry(f"HTTP {code} with a body that is not JSON (a proxy or error page?)", code,
                         _excerpt(response, 200))
        return response

    def error_for(self, response: requests.Response, what: str, label: str | None = None) -> PartnerError:
        code, body = response.status_code, _excerpt(response)
        message, cause = f"{what}: HTTP {code}", f"{label or what}: HTTP {code}"
        if code in (401, 403):
            return AuthError(self.partner, message, status_code=code, response_body=body, cause=cause)
        if code == 413:
            return TooLargeError(self.partner, f"{message} (payload too large)", status_code=code,
                                 response_body=body, cause=f"{cause} (payload too large)")
        if code in (400, 422):
            return RejectedError(self.partner, message, status_code=code, response_body=body, cause=cause)
        return PartnerError(self.partner, message, status_code=code, response_body=body, cause=cause)

    # -- retries ------------------------------------------------------------------------------------

    def _wait(self, attempt: int, retry: _Retry) -> float:
        if retry.retry_after is not None:
            return retry.retry_after
        backoff = self.http.backoff_seconds
        return float(min(BACKOFF_MAX_SECONDS, backoff * 2 ** (attempt - 1)) + random.uniform(0, backoff / 2))

    def _gave_up(self, what: str, label: str, retry: _Retry, attempts: int, seconds: float) -> TransientError:
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''} in {seconds:.1f} s"
        if retry.status is None:
            why = re.sub(r"within [0-9.]+ s", "within the time allowed", retry.why)  # the budget shrinks
            return TransientError(self.partner, f"{what}: no answer from {self.base_url} after retries "
                                                f"({retry.why}; {tries})",
                                  cause=f"{label}: no answer from {self.base_url} after retries ({why})",
                                  detail=tries)
        return TransientError(self.partner, f"{what}: {retry.why} after retries ({tries})",
                              status_code=retry.status, response_body=retry.body,
                              cause=f"{label}: {retry.why} after retries", detail=tries)

    # -- lifecycle ----------------------------------------------------------------------------------

    def abort(self) -> None:
        """Cut every attempt in flight now (the run is stopping and its grace period is over)."""
        self.stop.set()
        with self._lock:
            attempts = list(self._attempts)
        for attempt in attempts:
            attempt.fire()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"requests": self.requests, "retries": self.retries}

    def close(self) -> None:
        self.session.close()


def _ms(since: float) -> float:
    return (time.monotonic() - since) * 1000


def _is_json(content: bytes) -> bool:
    try:
        json.loads(content)
    except ValueError:
        return False
    return True


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _excerpt(response: requests.Response, limit: int = BODY_EXCERPT) -> str:
    """The start of a partner's answer, redacted before it is cut: a signature the cut went through would
    be too short for ``redact`` to know it afterwards."""
    return redact(response.content[:EXCERPT_SCAN].decode("utf-8", errors="replace"))[:limit]


def _retry_after(response: requests.Response) -> float | None:
    """Seconds the partner asked us to wait (``Retry-After`` as seconds or an HTTP date), if any."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _describe(exc: requests.exceptions.RequestException, base_url: str) -> str:
    """A short cause without the URL (urllib3 repeats it) and without the exception's nesting."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the answer broke off mid-body"
    text = str(exc)
    for marker in ("Caused by ", "(Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = text.replace(base_url, "").strip("()")
    refused = re.search(r"Failed to establish a new connection: \[Errno -?\d+\] ([^\"')]+)", text)
    if refused:
        return refused.group(1).strip().lower()
    if "RemoteDisconnected" in text or "Connection aborted" in text or "reset" in text.lower():
        return f"the connection broke before the answer was complete ({text[:200]})"
    return text[:300]
