"""The shared HTTP path against partners that misbehave at the socket level: every attempt has a hard
deadline, an answer that broke off is retried, redirects are never followed, and the call as a whole
stops at HTTP_RETRY_MAX_SECONDS."""
from __future__ import annotations

import http.server
import threading
import time

import pytest

from devtools.sandboxes import TraedeSandbox
from shared.config.settings import HttpSettings
from shared.errors import RedirectError, TooLargeError, TransientError
from shared.partners.traede import TraedeClient
from tests.conftest import TRAEDE_CREDENTIALS

pytestmark = pytest.mark.timeout(60)


def product(n, images=1, alt=""):
    return {"item_number": f"P{n}", "images": [
        {"url": f"https://images.example/{n}/{i}.jpg", "sort": i + 1, "existance_key": f"k{n}-{i}", "alt": alt}
        for i in range(images)]}


def client(sandbox_url, **http):
    settings = HttpSettings(**{"timeout_seconds": 5, "max_retries": 2, "backoff_seconds": 0.01,
                               "max_retry_seconds": 30, **http})
    return TraedeClient(sandbox_url, TRAEDE_CREDENTIALS["access_token"], TRAEDE_CREDENTIALS["app_key"],
                        http=settings)


@pytest.fixture
def traede():
    with TraedeSandbox(**TRAEDE_CREDENTIALS, download=False) as sandbox:
        yield sandbox


class Capture(http.server.BaseHTTPRequestHandler):
    """Another origin: records whatever reaches it."""

    seen: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Capture.seen.append({"headers": dict(self.headers), "body": body})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def other_origin():
    Capture.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Capture.seen
    server.shutdown()
    server.server_close()


def test_a_dripping_answer_is_cut_at_the_attempt_deadline(traede):
    traede.configure_faults(drip_bytes_per_s=1)
    started = time.monotonic()
    with pytest.raises(TransientError, match="timed out") as exc:
        client(traede.url, timeout_seconds=1, max_retries=1).sync_products([product(1)])
    seconds = time.monotonic() - started
    assert seconds < 4, f"two 1-second attempts took {seconds:.1f} s"
    assert "2 attempts" in str(exc.value) and traede.stats["injected_drip"] == 2


def test_a_hung_partner_costs_one_deadline_per_attempt(traede):
    traede.configure_faults(hang=True)
    started = time.monotonic()
    with pytest.raises(TransientError, match="no answer"):
        client(traede.url, timeout_seconds=1, max_retries=2).sync_products([product(1)])
    assert time.monotonic() - started < 5 and traede.stats["injected_hang"] == 3


def test_the_call_stops_at_retry_max_seconds_waits_included(traede):
    traede.configure_faults(hang=True)
    started = time.monotonic()
    with pytest.raises(TransientError):
        client(traede.url, timeout_seconds=2, max_retries=20, max_retry_seconds=3).sync_products([product(1)])
    assert time.monotonic() - started < 4.5


def test_a_retry_after_longer_than_the_call_budget_is_not_waited_for(traede):
    traede.configure_faults(throttle_rate=1.0, retry_after=30)
    started = time.monotonic()
    with pytest.raises(TransientError, match="HTTP 429") as exc:
        client(traede.url, max_retries=5, max_retry_seconds=5).sync_products([product(1)])
    assert time.monotonic() - started < 2 and exc.value.status_code == 429
    assert traede.stats["injected_429"] == 1


def test_a_reset_after_the_partner_applied_is_retried_and_counted_as_a_retry(traede):
    traede.configure_faults(reset_after_apply=1)
    c = client(traede.url)
    c.sync_products([product(1, images=2)])
    assert [i["key"] for i in traede.products["P1"]] == ["k1-0", "k1-1"]
    assert traede.stats["sync_requests"] == 2 and traede.stats["injected_reset"] == 1
    assert c.stats() == {"requests": 1, "retries": 1}


def test_a_truncated_answer_is_retried():
    """An answer whose body is shorter than its Content-Length, then a good one."""
    calls = []

    class Truncating(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            calls.append(1)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}' if len(calls) > 1 else b'{"sta')
            if len(calls) == 1:
                self.close_connection = True
            else:
                self.wfile.write(b" " * 84)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Truncating)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        c = client(f"http://127.0.0.1:{server.server_address[1]}")
        c.sync_products([product(1)])
        assert len(calls) == 2 and c.stats()["retries"] == 1
    finally:
        server.shutdown()
        server.server_close()


def test_413_is_its_own_error_so_the_batch_can_be_split(traede):
    traede.configure_faults(max_body_bytes=300)
    with pytest.raises(TooLargeError) as exc:
        client(traede.url).sync_products([product(1, alt="x" * 400)])
    assert exc.value.status_code == 413 and "too large" in str(exc.value).lower()
    assert traede.stats["injected_413"] == 1  # not retried: the same body would be refused again


def test_a_redirect_is_not_followed_and_names_the_setting(traede, other_origin):
    url, seen = other_origin
    traede.configure_faults(redirect_to=url)
    with pytest.raises(RedirectError) as exc:
        client(traede.url).sync_products([product(1)])
    message = str(exc.value)
    assert "TRAEDE_BASE_URL" in message and f"{url}/products/images/sync" in message
    assert seen == [] and traede.stats["injected_redirect"] == 1


def test_an_attempt_never_outlives_the_callers_lock(traede):
    traede.configure_faults(hang=True)
    lock_until = time.monotonic() + 3.5
    started = time.monotonic()
    with pytest.raises(TransientError):
        client(traede.url, timeout_seconds=30, max_retries=0).sync_products(
            [product(1)], guard=lambda: lock_until - time.monotonic())
    assert 1.0 < time.monotonic() - started < 2.5  # 3.5 s of lock minus the 2 s margin


def test_an_attempt_runs_past_the_lock_length_while_the_lock_keeps_being_renewed(traede):
    """The lock is renewed while a request is in flight: a partner slower than the lease is waited for (no
    abandoned request whose outcome nobody knows), as long as the renewals succeed."""
    traede.configure_faults(latency_ms=4000)
    started = time.monotonic()
    answer = client(traede.url, timeout_seconds=10, max_retries=0).sync_products(
        [product(1)], guard=lambda: 3.0)  # renewed all along: always 3 s certainly held, never more
    assert time.monotonic() - started >= 4 and not answer.unsure
    assert traede.stats["sync_requests"] == 1 and list(traede.products) == ["P1"]


def test_an_attempt_is_cut_as_soon_as_its_lock_cannot_be_renewed_and_says_its_outcome_is_unknown(traede):
    traede.configure_faults(latency_ms=4000)
    renewed_until = time.monotonic() + 1.0  # then the renewals fail: the lease runs out 3 s later
    started = time.monotonic()
    with pytest.raises(TransientError) as exc:
        client(traede.url, timeout_seconds=30, max_retries=0).sync_products(
            [product(1)], guard=lambda: 3.0 - max(0.0, time.monotonic() - renewed_until))
    assert 1.5 < time.monotonic() - started < 3.5  # lease left minus the 2 s margin
    assert "could not be renewed" in str(exc.value)
    assert exc.value.unsure  # TRAEDE had the whole request: it may still apply it


def test_which_outcomes_are_unknown(traede):
    """Unknown: TRAEDE had the whole request and gave no final answer (a reset after it applied, a timeout, a
    gateway's 502/504). Known: refused connections, 5xx/429 answers, rejections, deliveries."""
    assert not client(traede.url).sync_products([product(1)]).unsure
    traede.configure_faults(reset_after_apply=1)
    assert client(traede.url).sync_products([product(2)]).unsure  # applied, then reset: retried, delivered
    traede.configure_faults(throttle_rate=1.0, retry_after=0)
    with pytest.raises(TransientError) as throttled:
        client(traede.url, max_retries=1).sync_products([product(3)])
    assert not throttled.value.unsure
    traede.configure_faults(throttle_rate=0.0, hang=True)
    with pytest.raises(TransientError) as hung:
        client(traede.url, timeout_seconds=1, max_retries=1).sync_products([product(4)])
    assert hung.value.unsure
    traede.configure_faults(hang=False)
    with pytest.raises(TransientError) as refused:
        client("http://127.0.0.1:9", max_retries=1).sync_products([product(5)])
    assert not refused.value.unsure


def test_a_gateway_timeout_leaves_the_outcome_unknown():
    """A 504 from a gateway: the partner behind it may still apply the request."""
    calls = []

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            calls.append(1)
            status, body = (504, b"gateway timeout") if len(calls) == 1 else (200, b"{}")
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        answer = client(f"http://127.0.0.1:{server.server_address[1]}").sync_products([product(1)])
        assert answer.unsure and len(calls) == 2
    finally:
        server.shutdown()
        server.server_close()


def test_no_attempt_starts_without_enough_lock_left(traede):
    with pytest.raises(TransientError, match="lock"):
        client(traede.url).sync_products([product(1)], guard=lambda: 1.0)
    assert traede.stats["requests"] == 0


def test_abort_cuts_an_attempt_in_flight(traede):
    traede.configure_faults(hang=True)
    c = client(traede.url, timeout_seconds=30, max_retries=3)
    threading.Timer(0.5, c.http.abort).start()
    started = time.monotonic()
    with pytest.raises(TransientError, match="stopped"):
        c.sync_products([product(1)])
    assert time.monotonic() - started < 2
