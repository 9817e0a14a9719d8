"""The sandboxes' network-level misbehaviour, seen from a plain client: hangs, resets after applying,
dripping answers, 413 above a body size, redirects to another origin, and error bodies that echo us."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from devtools.sandboxes import TraedeSandbox, WallieSandbox
from devtools.sandboxes.base import Faults

pytestmark = pytest.mark.timeout(30)

TRAEDE_HEADERS = {"Authorization": "Bearer traede-token", "X-Traede-App-Key": "traede-app-key"}


def traede_body(item="p1"):
    return {"products": [{"item_number": item, "images": [{"url": "https://img.example.com/a.jpg", "sort": 1}]}]}


@pytest.fixture
def traede():
    with TraedeSandbox(download=False) as sandbox:
        yield sandbox


def test_hang_never_answers_until_the_sandbox_stops(http):
    sandbox = TraedeSandbox(download=False).start()
    sandbox.configure_faults(hang=True)
    outcome = {}

    def call():
        started = time.monotonic()
        try:
            http.post(f"{sandbox.url}/products/images/sync", json=traede_body(), headers=TRAEDE_HEADERS, timeout=20)
            outcome["error"] = None
        except requests.RequestException as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(1.5)
    assert thread.is_alive(), "a hung partner must not answer"
    sandbox.stop()
    thread.join(10)
    assert outcome["error"] is not None and outcome["seconds"] >= 1.5
    assert sandbox.stats["injected_hang"] == 1 and sandbox.products == {}


def test_reset_after_apply_stores_the_request_but_the_client_sees_a_reset(http, traede):
    traede.configure_faults(reset_after_apply=1)
    with pytest.raises(requests.ConnectionError) as exc:
        http.post(f"{traede.url}/products/images/sync", json=traede_body("p1"), headers=TRAEDE_HEADERS)
    assert "reset" in str(exc.value).lower() or "aborted" in str(exc.value).lower()
    assert "p1" in traede.products  # applied, although the client never heard
    response = http.post(f"{traede.url}/products/images/sync", json=traede_body("p2"), headers=TRAEDE_HEADERS)
    assert response.status_code == 200  # only the next N requests are reset
    assert traede.stats["injected_reset"] == 1 and traede.faults.reset_after_apply == 0


def test_drip_sends_the_answer_one_byte_at_a_time(traede):
    traede.configure_faults(drip_bytes_per_s=50)
    with socket.create_connection(("127.0.0.1", traede.port), timeout=5) as sock:
        body = b'{"products":[{"item_number":"p1","images":[{"url":"https://img.example.com/a.jpg","sort":1}]}]}'
        head = (f"POST /products/images/sync HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer traede-token\r\nX-Traede-App-Key: traede-app-key\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        sock.sendall(head + body)
        started = time.monotonic()
        first = sock.recv(100)
        assert len(first) <= 2  # a byte (or two) at a time, not the answer in one piece
        received = first
        while b"\r\n\r\n" not in received:
            received += sock.recv(100)
        assert received.startswith(b"HTTP/1.1 200") and time.monotonic() - started > 0.3
    assert traede.stats["injected_drip"] == 1


def test_max_body_bytes_answers_413_above_the_size_only(http, traede):
    traede.configure_faults(max_body_bytes=200)
    small = http.post(f"{traede.url}/products/images/sync", json=traede_body(), headers=TRAEDE_HEADERS)
    big = traede_body()
    big["products"][0]["images"][0]["alt"] = "x" * 300
    large = http.post(f"{traede.url}/products/images/sync", json=big, headers=TRAEDE_HEADERS)
    assert small.status_code == 200 and large.status_code == 413
    assert "at most 200 bytes" in large.json()["message"] and traede.stats["injected_413"] == 1


def test_redirect_points_elsewhere_before_checking_credentials(http, traede):
    traede.configure_faults(redirect_to="http://127.0.0.1:9/elsewhere")
    response = http.post(f"{traede.url}/products/images/sync", json=traede_body(), headers={},
                         allow_redirects=False)
    assert response.status_code == 307
    assert response.headers["Location"] == "http://127.0.0.1:9/elsewhere/products/images/sync"
    assert traede.products == {} and traede.stats["injected_redirect"] == 1


def test_echo_quotes_the_request_credentials_in_error_bodies(http):
    with WallieSandbox(download=False) as wallie:
        wallie.configure_faults(echo_credentials=True)
        refused = http.post(f"{wallie.url}/Token", json={"username": "u", "password": "hunter2-pw"},
                            headers={"X-Tenant": "TENANT"})
        assert refused.status_code == 401 and "hunter2-pw" in refused.json()["echo"]["body"]
        ok = http.post(f"{wallie.url}/Token", json={"username": "wallie-user", "password": "wallie-pass"},
                       headers={"X-Tenant": "TENANT"})
        assert ok.status_code == 200 and "echo" not in ok.json()  # only errors echo


def test_new_fault_settings_are_validated():
    faults = Faults()
    for name, value in [("hang", 1), ("reset_after_apply", -1), ("reset_after_apply", True),
                        ("drip_bytes_per_s", -2), ("max_body_bytes", 1.5), ("redirect_to", "ftp://x"),
                        ("echo_credentials", "yes"), ("latency_jitter_ms", -1)]:
        with pytest.raises(ValueError):
            setattr(faults, name, value)
