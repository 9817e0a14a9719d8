"""Shared sandbox machinery: fault injection, control API, downloads, keep-alive concurrency."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from devtools.sandboxes import Faults, TraedeSandbox, WallieSandbox

pytestmark = pytest.mark.timeout(20)

WALLIE_HEADERS = {"X-Tenant": "TENANT"}
TRAEDE_HEADERS = {"Authorization": "Bearer traede-token", "X-Traede-App-Key": "traede-app-key"}
IMAGE_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@pytest.fixture
def image_server():
    """A tiny origin the sandboxes download from: /img.png serves bytes, anything else is 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/img.png"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(IMAGE_BYTES)))
                self.end_headers()
                self.wfile.write(IMAGE_BYTES)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def wallie_token(http, wallie):
    response = http.post(f"{wallie.url}/Token", json={"username": "wallie-user", "password": "wallie-pass"},
                         headers=WALLIE_HEADERS)
    return response.json()["accessToken"]


def wallie_images(http, wallie, token, *records):
    headers = {**WALLIE_HEADERS, "Authorization": f"Bearer {token}"}
    return http.post(f"{wallie.url}/Images/urls", json={"images": list(records)}, headers=headers)


def wallie_record(image_id, url):
    return {"imageId": image_id, "itemId": "100001", "url": url}


def traede_sync(http, traede, *images, item_number="p1"):
    body = {"products": [{"item_number": item_number, "images": list(images)}]}
    return http.post(f"{traede.url}/products/images/sync", json=body, headers=TRAEDE_HEADERS)


def call_api(http, sandbox):
    """One request to the partner's data endpoint (valid apart from any injected fault)."""
    if isinstance(sandbox, WallieSandbox):
        return http.post(f"{sandbox.url}/Token", json={"username": "wallie-user", "password": "wallie-pass"},
                         headers=WALLIE_HEADERS)
    return traede_sync(http, sandbox, {"url": "https://img.example.com/a.jpg", "sort": 1})


@pytest.fixture(params=["wallie", "traede"])
def sandbox(request):
    cls = WallieSandbox if request.param == "wallie" else TraedeSandbox
    with cls(download=False) as sandbox:
        yield sandbox


# --- faults


def test_error_rate_answers_500_with_json_body(http, sandbox):
    sandbox.configure_faults(error_rate=1.0)
    response = call_api(http, sandbox)
    assert response.status_code == 500 and response.json()["message"]
    assert sandbox.stats["injected_500"] == 1 and sandbox.stats["responses"] == {500: 1}


def test_throttle_answers_429_with_retry_after(http, sandbox):
    sandbox.configure_faults(throttle_rate=1.0, retry_after=7)
    response = call_api(http, sandbox)
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert sandbox.stats["injected_429"] == 1


def test_throttle_is_decided_before_error(http, sandbox):
    sandbox.configure_faults(throttle_rate=1.0, error_rate=1.0)
    assert call_api(http, sandbox).status_code == 429


def test_outage_answers_500_to_everything_but_control(http, sandbox):
    sandbox.faults.outage = True
    assert call_api(http, sandbox).status_code == 500
    assert http.get(f"{sandbox.url}/_sandbox/state").status_code == 200
    sandbox.faults.outage = False
    assert call_api(http, sandbox).status_code == 200


def test_malformed_answers_200_with_non_json_and_stores_nothing(http, sandbox):
    sandbox.faults.malformed = True
    response = call_api(http, sandbox)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert sandbox.received == [] and sandbox.stats["injected_malformed"] == 1


def test_latency_delays_every_api_request(http, sandbox):
    sandbox.configure_faults(latency_ms=200)
    started = time.monotonic()
    assert call_api(http, sandbox).status_code == 200
    assert time.monotonic() - started >= 0.19
    started = time.monotonic()
    http.get(f"{sandbox.url}/_sandbox/state")
    assert time.monotonic() - started < 0.15  # control endpoints are never delayed


def test_fault_sequence_is_reproducible_per_seed(http, sandbox):
    def run():
        sandbox.configure_faults(error_rate=0.3, throttle_rate=0.3, seed=42)
        return [call_api(http, sandbox).status_code for _ in range(30)]

    first = run()
    assert run() == first
    assert {200, 429, 500} <= set(first)


def test_invalid_fault_settings_are_refused():
    faults = Faults()
    for name, value in [("error_rate", 1.5), ("throttle_rate", "0.5"), ("outage", 1), ("reject", "id-1"),
                        ("retry_after", 1.5), ("latency_ms", -1)]:
        with pytest.raises(ValueError):
            setattr(faults, name, value)
    with pytest.raises(ValueError):
        faults.update(error_rate=0.5, no_such_fault=True)
    assert faults.error_rate == 0.0  # an invalid update changes nothing


# --- control API


def test_control_api_sets_faults_and_reports_state(http):
    with WallieSandbox(download=False) as wallie:
        response = http.post(f"{wallie.url}/_sandbox/faults", json={"throttle_rate": 1.0, "reject": ["x"]})
        assert response.status_code == 200 and response.json()["reject"] == ["x"]
        assert wallie.faults.throttle_rate == 1.0 and wallie.faults.reject == {"x"}
        assert call_api(http, wallie).status_code == 429

        state = http.get(f"{wallie.url}/_sandbox/state").json()
        assert state["stats"]["injected_429"] == 1 and state["stats"]["responses"] == {"429": 1}
        assert state["faults"]["throttle_rate"] == 1.0 and state["images"] == {}

        assert http.post(f"{wallie.url}/_sandbox/faults", json={"error_rate": 2}).status_code == 400
        assert http.post(f"{wallie.url}/_sandbox/faults", json={"bogus": 1}).status_code == 400
        assert http.get(f"{wallie.url}/_sandbox/nope").status_code == 404


def test_reset_clears_data_stats_and_faults_but_keeps_credentials(http):
    with WallieSandbox(download=False) as wallie:
        token = wallie_token(http, wallie)
        assert wallie_images(http, wallie, token, wallie_record("a", "https://x.example/a.jpg")).status_code == 200
        wallie.configure_faults(latency_ms=5, reject={"z"}, seed=3)
        assert http.post(f"{wallie.url}/_sandbox/reset").status_code == 200
        assert wallie.images == {} and wallie.received == [] and wallie.stats["requests"] == 0
        assert wallie.faults == Faults()
        # credentials and issued tokens survive: a client mid-session does not see a surprise 401
        assert wallie_images(http, wallie, token, wallie_record("b", "https://x.example/b.jpg")).status_code == 200
        assert wallie_token(http, wallie)


def test_traede_state_shows_products(http):
    with TraedeSandbox(download=False) as traede:
        traede_sync(http, traede, {"url": "https://img.example.com/a.jpg", "sort": 1})
        state = http.get(f"{traede.url}/_sandbox/state").json()
        assert state["products"]["p1"][0]["key"] == "https://img.example.com/a.jpg"
        assert state["stats"]["images_new"] == 1 and len(state["received"]) == 1
        traede.reset()
        assert traede.products == {} and traede.stats["images_new"] == 0


# --- downloads


def test_wallie_downloads_new_urls_and_records_sha256(http, image_server):
    with WallieSandbox() as wallie:
        token = wallie_token(http, wallie)
        url = f"{image_server}/img.png?v=1"
        assert wallie_images(http, wallie, token, wallie_record("a", url)).status_code == 200
        got = wallie.downloaded["a"]
        assert {k: got[k] for k in ("url", "sha256", "size")} == {
            "url": url, "sha256": hashlib.sha256(IMAGE_BYTES).hexdigest(), "size": len(IMAGE_BYTES)}
        # and what a browser would make of it: a PNG signature over garbage, served untyped, shows nothing
        assert got["web_image"] is False and got["format"] is None and "does not decode" in got["problem"]
        wallie_images(http, wallie, token, wallie_record("a", url))  # same url: no second download
        assert wallie.stats["downloads"] == 1
        wallie_images(http, wallie, token, wallie_record("a", f"{image_server}/img.png?v=2"))
        assert wallie.stats["downloads"] == 2


def test_failed_download_is_counted_but_the_request_succeeds(http, image_server):
    with WallieSandbox() as wallie:
        token = wallie_token(http, wallie)
        response = wallie_images(http, wallie, token, wallie_record("a", f"{image_server}/missing.png"))
        assert response.status_code == 200 and "a" in wallie.images
        assert wallie.stats["download_failures"] == 1 and wallie.stats["downloads"] == 0
        assert "404" in wallie.download_errors[0]["reason"] and wallie.download_errors[0]["imageId"] == "a"
        assert "a" not in wallie.downloaded


def test_traede_downloads_only_new_keys(http, image_server):
    with TraedeSandbox() as traede:
        image = {"url": f"{image_server}/img.png?sig=1", "sort": 1, "existance_key": "a@v1"}
        assert traede_sync(http, traede, image).status_code == 200
        assert traede.downloaded["p1"]["a@v1"]["sha256"] == hashlib.sha256(IMAGE_BYTES).hexdigest()
        # a second identical request, and one with a fresh SAS url for the same key, download nothing
        traede_sync(http, traede, image)
        traede_sync(http, traede, {**image, "url": f"{image_server}/img.png?sig=2"})
        assert traede.stats["downloads"] == 1 and traede.stats["images_kept"] == 2
        traede_sync(http, traede, {"url": f"{image_server}/gone.png", "sort": 1})
        stats = traede.stats
        assert stats["download_failures"] == 1 and stats["images_deleted"] == 1 and stats["responses"] == {200: 4}
        assert traede.downloaded == {"p1": {}}


def test_download_false_fetches_nothing(http, image_server):
    with TraedeSandbox(download=False) as traede:
        traede_sync(http, traede, {"url": f"{image_server}/img.png", "sort": 1})
        assert traede.stats["downloads"] == 0 and traede.downloaded == {}


# --- HTTP behaviour


def test_concurrent_keep_alive_sessions_all_succeed():
    with WallieSandbox(download=False) as wallie, TraedeSandbox(download=False) as traede:

        def client(worker: int) -> list[int]:
            with requests.Session() as session:
                session.trust_env = False
                token = wallie_token(session, wallie)
                codes = []
                for n in range(5):
                    record = wallie_record(f"w{worker}-{n}", f"https://img.example.com/{worker}/{n}.jpg")
                    codes.append(wallie_images(session, wallie, token, record).status_code)
                    image = {"url": f"https://img.example.com/{worker}/{n}.jpg", "sort": n}
                    codes.append(traede_sync(session, traede, image, item_number=f"p{worker}").status_code)
                return codes

        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(client, range(20)))
    assert all(code == 200 for codes in results for code in codes)
    assert len(wallie.images) == 100 and wallie.stats["image_requests"] == 100
    assert traede.stats["images_new"] == 100 and traede.stats["images_deleted"] == 80


def test_connection_is_reused_and_responses_carry_content_length(http):
    with WallieSandbox(download=False) as wallie:
        sockets = set()
        for _ in range(3):
            response = http.post(f"{wallie.url}/Token", json={"username": "wallie-user", "password": "wallie-pass"},
                                 headers=WALLIE_HEADERS, stream=True)
            sockets.add(id(response.raw._connection.sock))  # noqa: SLF001 - proving keep-alive
            assert response.raw.version == 11 and "Content-Length" in response.headers
            assert response.content is not None  # read the body: the connection goes back to the pool
        assert len(sockets) == 1


def test_stop_returns_promptly_with_idle_keep_alive_connections(http):
    wallie = WallieSandbox(download=False).start()
    wallie_token(http, wallie)  # leaves a pooled idle connection open
    started = time.monotonic()
    wallie.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(requests.ConnectionError):
        wallie_token(http, wallie)
