"""Fault containment (issue "a bad partner, answer or signal costs no more than itself"): one test per
misbehaviour, against real Azurite and the sandboxes misbehaving at the socket level.

Every test also checks that each image is accounted for (delivered, rejected, failed or deferred, by name)
and that no secret appears in any output or file.
"""
from __future__ import annotations

import http.client
import http.server
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path

import pytest
import requests

from devtools.images import jpeg, png
from shared.app import jobs
from shared.app.cli import main as cli_main
from shared.catalog.records import image_id_for
from tests.conftest import TRAEDE_CREDENTIALS, WALLIE_CREDENTIALS

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)
SIG = re.compile(r"(?i)sig(=|%3D)(?!REDACTED)")


def upload(container, products=5, per_product=2, item0=8000):
    names = []
    for p in range(products):
        for kind in ("front", "back", "detail", "zoom")[:per_product]:
            name = f"{item0 + p}/BLK/{kind}.png"
            container.upload_blob(name, png(note=name))
            names.append(name)
    return names


def run(env, tmp_path, *args, stdout=None):
    out, err = stdout or io.StringIO(), io.StringIO()
    path = tmp_path / "report.json"
    started = time.monotonic()
    code = cli_main(["sync", "--report", str(path), *args], env=env, stdout=out, stderr=err)
    return code, err.getvalue(), json.loads(path.read_text()), time.monotonic() - started


def accounted(report, names):
    """Each image at Wallie and each product at TRAEDE: delivered, or named as rejected/failed/deferred."""
    acc = report["accounting"]
    assert acc["wallie"]["unaccounted"] == 0 and acc["traede"]["unaccounted"] == 0, acc
    named = {p["blob"] for p in report["failed"] + report["rejected"] if p["partner"] == "wallie"}
    assert acc["wallie"]["delivered"] + len(named) == len(names)
    items = {n.split("/")[0] for n in names}
    named_items = [p["item"] for p in report["failed"] + report["rejected"] + report["deferred"]
                   if p["partner"] == "traede"]
    assert acc["traede"]["delivered"] + len(named_items) == len(items)


def no_secrets(text, wallie=None):
    values = [WALLIE_CREDENTIALS["password"], *TRAEDE_CREDENTIALS.values()]
    values += list(wallie._tokens) if wallie is not None else []  # every token Wallie issued in the run
    leaked = [v for v in values if v in text] + SIG.findall(text)
    assert leaked == [], f"secrets leaked: {leaked}"


# -- 1. partners are independent ------------------------------------------------------------------------

def test_a_wallie_that_never_answers_does_not_delay_traede(container, sync_env, wallie, traede, tmp_path):
    names = upload(container, products=6)
    wallie.configure_faults(hang=True)  # its /Token hangs too
    env = {**sync_env, "HTTP_TIMEOUT_SECONDS": "2", "HTTP_MAX_RETRIES": "1", "WALLIE_BATCH_SIZE": "2"}
    started = time.time()
    code, err, report, seconds = run(env, tmp_path)
    first_traede = min(entry["at"] for entry in traede.history) - started
    assert first_traede < 1.5, f"TRAEDE's first request came {first_traede:.1f} s after the start"
    assert sorted(traede.products) == sorted({n.split("/")[0] for n in names})
    assert code == 1 and seconds < 20  # the dead partner's calls end at their deadline, then its lane stops
    assert "stopped: wallie: 3 calls in a row failed after their retries" in err
    accounted(report, names)
    no_secrets(err + json.dumps(report), wallie)


def test_a_slow_wallie_does_not_slow_traede_down(container, sync_env, wallie, traede, tmp_path):
    names = upload(container, products=15)
    wallie.configure_faults(latency_ms=300)
    env = {**sync_env, "WALLIE_BATCH_SIZE": "1", "SYNC_CONCURRENCY": "2"}  # 30 calls, 2 at a time: ~4.5 s
    started = time.time()
    code, err, report, seconds = run(env, tmp_path)
    traede_done = max(entry["at"] for entry in traede.history) - started
    assert code == 0 and len(wallie.images) == 30 and len(traede.products) == 15
    assert traede_done < 1.5 < 3.0 < seconds, (traede_done, seconds)  # TRAEDE finished long before Wallie
    accounted(report, names)


# -- 2. an answer that broke off is retried --------------------------------------------------------------

def test_a_reset_after_the_partner_applied_is_retried_not_failed(container, sync_env, wallie, traede, tmp_path):
    names = upload(container)
    wallie.configure_faults(reset_after_apply=1)
    traede.configure_faults(reset_after_apply=1)
    code, err, report, seconds = run(sync_env, tmp_path)
    assert code == 0 and report["failed"] == [] and report["retries"] >= 2
    assert len(wallie.images) == len(names) and len(traede.products) == 5
    assert wallie.stats["injected_reset"] == 1 and traede.stats["injected_reset"] == 1
    accounted(report, names)


# -- 3. a real deadline per attempt -----------------------------------------------------------------------

def test_an_answer_dripping_one_byte_a_second_is_cut_at_the_deadline(container, sync_env, wallie, traede, tmp_path):
    names = upload(container)
    traede.configure_faults(drip_bytes_per_s=1)
    env = {**sync_env, "HTTP_TIMEOUT_SECONDS": "3", "HTTP_RETRY_MAX_SECONDS": "5", "HTTP_MAX_RETRIES": "5"}
    code, err, report, seconds = run(env, tmp_path)
    assert seconds < 12, f"the run took {seconds:.1f} s"  # before: 60 s for one call
    assert code == 1 and "timed out" in err and len(wallie.images) == len(names)
    accounted(report, names)


# -- 4. 413 splits the batch -------------------------------------------------------------------------

def test_413_splits_a_batch_until_it_fits_and_a_record_too_large_alone_is_rejected(
        container, sync_env, wallie, traede, tmp_path):
    names = upload(container, products=10, per_product=4)  # 40 images: one Wallie batch
    huge = "8100/BLK/" + "x" * 900 + ".png"
    container.upload_blob(huge, png(note="huge"))
    wallie.configure_faults(max_body_bytes=1000)  # two normal records fit; the huge one never does
    code, err, report, seconds = run(sync_env, tmp_path)
    assert code == 1 and len(wallie.images) == 40 and wallie.stats["injected_413"] >= 5
    rejected = [p for p in report["rejected"] if p["partner"] == "wallie"]
    assert [p["blob"] for p in rejected] == [huge]
    assert "too large for wallie even on its own" in rejected[0]["reason"] and rejected[0]["status_code"] == 413
    accounted(report, names + [huge])


# -- 5. refused credentials stop that partner once ---------------------------------------------------------

def test_refused_credentials_stop_that_partner_once_and_the_other_carries_on(
        container, sync_env, wallie, traede, tmp_path):
    names = upload(container, products=12, per_product=2)
    env = {**sync_env, "WALLIE_PASSWORD": "wrong-pw-5150", "WALLIE_BATCH_SIZE": "2"}
    code, err, report, seconds = run(env, tmp_path)
    assert code == 1 and wallie.stats["token_requests"] == 1 and wallie.stats["image_requests"] == 0
    assert len(traede.products) == 12  # the other partner carries on
    stopped = [line for line in err.splitlines() if line.startswith("stopped: wallie")]
    assert len(stopped) == 1 and "WALLIE_PASSWORD" in stopped[0] and "24 images not sent" in stopped[0]
    assert not [line for line in err.splitlines() if line.startswith("failed: wallie")]
    assert len(err.encode()) < 2000  # before: 1,200 lines (221 KB)
    assert report["stopped_partners"]["wallie"].startswith("token request refused")
    accounted(report, names)
    assert "wrong-pw-5150" not in err + json.dumps(report)


def test_a_trigger_refused_its_credentials_is_parked_not_retried_in_vain(container, sync_env, wallie, monkeypatch):
    """The host would retry a failed blob invocation 5 times; with refused credentials that cannot help."""
    from functions.image_uploaded import image_uploaded
    from tests.host_objects import sdk_blob_client

    for key, value in {**sync_env, "WALLIE_PASSWORD": "wrong-pw-5151"}.items():
        monkeypatch.setenv(key, value)
    container.upload_blob("8200/BLK/front.png", png())
    image_uploaded(sdk_blob_client(container.container_name, "8200/BLK/front.png"))  # returns: not retried
    from azure.storage.queue import QueueClient

    poison = QueueClient.from_connection_string(sync_env["IMAGES_STORAGE"], "webjobs-blobtrigger-poison")
    messages = [json.loads(__import__("base64").b64decode(m.content)) for m in poison.peek_messages(max_messages=32)]
    assert {"BlobName": "8200/BLK/front.png", "ContainerName": container.container_name}.items() <= \
        next(m for m in messages if m["BlobName"] == "8200/BLK/front.png").items()
    assert wallie.stats["token_requests"] == 1


def test_a_product_message_whose_credentials_are_refused_goes_to_the_poison_queue_at_once(
        container, sync_env, traede, monkeypatch, caplog):
    import uuid

    from devtools.queue_host import QueueHost
    from functions.image_uploaded import image_uploaded
    from tests.host_objects import sdk_blob_client

    queue = f"products-{uuid.uuid4().hex[:8]}"
    env = {**sync_env, "TRAEDE_ACCESS_TOKEN": "expired-token-42", "PRODUCT_SYNC_QUEUE": queue,
           "SYNC_STATE_CONTAINER": f"state-{uuid.uuid4().hex[:8]}", "PRODUCT_SYNC_DELAY_SECONDS": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    container.upload_blob("8210/BLK/front.png", png())
    image_uploaded(sdk_blob_client(container.container_name, "8210/BLK/front.png"))
    host = QueueHost.for_function("product_sync", queue, env["IMAGES_STORAGE"])
    with caplog.at_level(logging.ERROR):
        host.drain()
    assert host.stats()["failures"] == 0  # not retried in vain...
    assert [json.loads(m)["item"] for m in host.poisoned()] == ["8210"]  # ...but parked, naming the product
    assert traede.stats["sync_requests"] == 1
    # ...and logged in the words of the host's own line, which the deploy's poison alert looks for
    from deploy.monitoring import POISON_LOG_TEXT
    assert any(f"{POISON_LOG_TEXT} '{queue}-poison'" in r.getMessage() for r in caplog.records)


# -- 6. graceful stop ----------------------------------------------------------------------------------------

def test_sigterm_stops_the_cli_with_a_summary_and_a_report_that_names_what_was_not_sent(
        container, sync_env, wallie, traede, tmp_path):
    names = upload(container, products=40, per_product=2)
    wallie.configure_faults(latency_ms=700)
    traede.configure_faults(latency_ms=700)
    env = {**os.environ, **sync_env, "WALLIE_BATCH_SIZE": "4", "SYNC_CONCURRENCY": "2", "PYTHONPATH": str(REPO)}
    report_path = tmp_path / "stopped.json"
    process = subprocess.Popen([sys.executable, "-m", "shared", "sync", "--report", str(report_path)], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while wallie.stats["image_requests"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    out, err = process.communicate(timeout=30)
    assert time.monotonic() - signalled < 8, "the CLI must end within the grace period"
    assert process.returncode == 143, err
    report = json.loads(report_path.read_text())
    assert report["interrupted"] == "SIGTERM" and "STOPPED by SIGTERM" in err.splitlines()[-1]
    not_sent = [p for p in report["failed"] if "the run was stopped (SIGTERM)" in p["reason"]]
    assert not_sent and "not sent: the run was stopped (SIGTERM)" in err
    assert report["accounting"]["wallie"]["unaccounted"] == 0 and report["accounting"]["traede"]["unaccounted"] == 0
    assert report["accounting"]["wallie"]["delivered"] < len(names)  # it really stopped early
    no_secrets(err + out + report_path.read_text(), wallie)


TRIGGER_UNDER_SIGTERM = r"""
import json, os, sys
import function_app  # as the worker does, on its main thread: the stop handler is installed here
from azure.functions.timer import TimerRequest
from functions.nightly_sync import nightly_sync
print("ready", flush=True)
try:
    nightly_sync(TimerRequest())
    print(json.dumps({"raised": None}), flush=True)
except Exception as exc:
    print(json.dumps({"raised": type(exc).__name__, "message": str(exc)}), flush=True)
import time
time.sleep(60)  # the worker stays until the grace period ends and the signal takes it down
"""


def test_sigterm_in_a_functions_worker_fails_the_invocation_and_names_what_was_not_sent(
        container, sync_env, wallie, traede):
    upload(container, products=40, per_product=2)
    wallie.configure_faults(latency_ms=700)
    traede.configure_faults(latency_ms=700)
    env = {**os.environ, **sync_env, "FUNCTIONS_WORKER_RUNTIME": "python", "WALLIE_BATCH_SIZE": "4",
           "SYNC_CONCURRENCY": "2", "PYTHONPATH": str(REPO), "SYNC_STATE_CONTAINER": "state-sigterm"}
    process = subprocess.Popen([sys.executable, "-c", TRIGGER_UNDER_SIGTERM], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 20
    while wallie.stats["image_requests"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    out, err = process.communicate(timeout=30)
    assert time.monotonic() - signalled < 10  # the grace period, then the worker goes away
    assert process.returncode == -signal.SIGTERM
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["raised"] == "SyncFailed" and "STOPPED by SIGTERM" in outcome["message"]
    assert "not sent: the run was stopped (SIGTERM)" in err


# -- 7. no credential leaves for another origin -----------------------------------------------------------

class Capture(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Capture.seen.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
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
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_redirect_to_another_origin_takes_no_credential_there(container, sync_env, wallie, traede, other_origin,
                                                                 tmp_path):
    names = upload(container)
    wallie.configure_faults(redirect_to=other_origin)
    traede.configure_faults(redirect_to=other_origin)
    code, err, report, seconds = run(sync_env, tmp_path)
    assert Capture.seen == []  # no header, token, password or body went there
    assert code == 1 and wallie.stats["requests"] == 1 and traede.stats["requests"] == 1  # each stopped at once
    assert f"redirect to {other_origin}/Token was not followed" in err and "set WALLIE_BASE_URL" in err
    assert f"{other_origin}/products/images/sync" in err and "set TRAEDE_BASE_URL" in err
    accounted(report, names)


# -- 8. secrets nowhere ---------------------------------------------------------------------------------------

def test_error_bodies_that_echo_our_credentials_and_tokens_are_redacted_everywhere(
        container, sync_env, wallie, traede, tmp_path, caplog):
    names = upload(container, products=6)
    # a rejected record: Wallie's 400 quotes our request back, bearer token included
    wallie.configure_faults(echo_credentials=True, reject={image_id_for("8002/BLK/front.png")})
    traede.configure_faults(echo_credentials=True, reject={"8001", "8003"})  # 422 + our token and app key
    env = {**sync_env, "HTTP_MAX_RETRIES": "1", "LOG_LEVEL": "DEBUG", "WALLIE_BATCH_SIZE": "3"}
    with caplog.at_level(logging.DEBUG):
        code, err, report, seconds = run(env, tmp_path)
    text = err + json.dumps(report) + (tmp_path / "report.json").read_text() + caplog.text
    assert code == 1 and "echo" in text  # the echoes did reach our output...
    assert wallie._tokens, "Wallie must have issued a token for this test to mean anything"
    no_secrets(text, wallie)  # ...with every secret value replaced
    assert "Authorization" in text and "REDACTED" in text  # only the value is replaced: still readable
    accounted(report, names)


def test_redaction_replaces_the_value_only():
    from shared.redact import redact

    assert redact('{"message": "Unauthenticated: missing or wrong Authorization bearer token"}') == \
        '{"message": "Unauthenticated: missing or wrong Authorization bearer token"}'
    assert redact("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345") == "Authorization: Bearer REDACTED"


# -- 9. every valid blob name yields a URL that common clients fetch ------------------------------------------

AWKWARD = ["8300/BLK/50% off #1?.jpg", "8300/BLK/space and ünïcödé 画像.jpg", "8300/" + "n" * 1010 + ".jpg",
           "8300/BLK/plus+and&amp;=.jpg", "8300/BLK/tilde~quote'.jpg"]
DOTTED = {"8301/../front.jpg": "8301/front.jpg", "8301/./side.jpg": "8301/side.jpg"}


def _curl(url):
    result = subprocess.run(["curl", "-sS", "--fail", "-o", "-", url], capture_output=True, timeout=20)
    return result.stdout if result.returncode == 0 else f"curl exit {result.returncode}: {result.stderr[:200]}"


def _urllib(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def _requests(url):
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return response.content


class RawUploader:
    """Uploads as a client that sends the name exactly as given (the SDK, through requests, would let
    dot segments be collapsed), over one keep-alive connection."""

    def __init__(self, azurite, container):
        from datetime import datetime, timedelta
        from urllib.parse import urlsplit

        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        from devtools.azurite import ACCOUNT, ACCOUNT_KEY

        self.prefix = f"/{ACCOUNT}/{container}/"
        self.sas = generate_container_sas(ACCOUNT, container, account_key=ACCOUNT_KEY,
                                          permission=ContainerSasPermissions(write=True, create=True),
                                          expiry=datetime.now(UTC) + timedelta(minutes=10))
        endpoint = urlsplit(azurite.blob_endpoint)
        self.connection = http.client.HTTPConnection(endpoint.hostname, endpoint.port)

    def put(self, name, data):
        from urllib.parse import quote

        self.connection.request("PUT", f"{self.prefix}{quote(name, safe='/')}?{self.sas}", body=data,
                                headers={"x-ms-blob-type": "BlockBlob"})
        response = self.connection.getresponse()
        response.read()
        assert response.status == 201


def put_raw(azurite, container, name, data):
    RawUploader(azurite, container).put(name, data)


def test_every_awkward_name_downloads_with_requests_curl_and_urllib_or_is_skipped_with_a_rename(
        azurite, container, sync_env, wallie, traede, tmp_path):
    bodies = {}
    for name in AWKWARD:
        bodies[name] = jpeg(note=name)
        container.upload_blob(name, bodies[name])
    for name in DOTTED:
        put_raw(azurite, container.container_name, name, jpeg(note=name))
    out = io.StringIO()
    code, err, report, seconds = run(sync_env, tmp_path, "--dry-run", stdout=out)
    sent = {json.loads(line)["record"]["imageId"]: json.loads(line)["record"]["url"]
            for line in out.getvalue().splitlines() if '"record"' in line}
    for name in AWKWARD:
        url = sent[image_id_for(name)]
        for fetch in (_requests, _urllib, _curl):
            assert fetch(url) == bodies[name], (fetch.__name__, name)
    skipped = {s["blob"]: f"{s['reason']}: {s.get('detail')}" for s in report["skipped"]}
    for name, rename in DOTTED.items():
        assert f"rename it to {rename!r}" in skipped[name] and "web clients drop" in skipped[name]


def test_a_dot_segment_in_a_url_survives_every_client(azurite, container):
    """Names that reach a partner with a dot segment (a layout placed by metadata) still download."""
    from datetime import timedelta

    from shared.config.settings import Settings
    from shared.storage.clients import blob_service
    from shared.storage.sas import SasSigner

    put_raw(azurite, container.container_name, "shots/../9000_1.jpg", b"dotted-bytes")
    settings = Settings.from_env({"IMAGES_STORAGE": azurite.connection_string,
                                  "IMAGES_CONTAINER": container.container_name})
    service = blob_service(settings.storage)
    url = SasSigner(service, container.container_name, ttl=timedelta(hours=1),
                    start_skew=timedelta(minutes=5)).url("shots/../9000_1.jpg")
    assert "/shots/%2E%2E/9000_1.jpg?" in url
    for fetch in (_requests, _urllib, _curl):
        assert fetch(url) == b"dotted-bytes", fetch.__name__


# -- 10. log volume stays bounded -------------------------------------------------------------------------

def test_thousands_of_junk_blobs_cost_a_few_log_lines_and_the_report_keeps_them_all(
        azurite, container, sync_env, wallie, traede, monkeypatch, tmp_path):
    upload(container, products=2)
    junk = [f"8400/BLK/notes-{n:05d}.txt" for n in range(3_000)]

    def put(chunk):
        uploader = RawUploader(azurite, container.container_name)
        for name in chunk:
            uploader.put(name, b"x")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, [junk[i::16] for i in range(16)]))
    for key, value in sync_env.items():
        monkeypatch.setenv(key, value)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # stands in for the host's handler, which sees INFO
    logging.getLogger().addHandler(handler)
    logger = logging.getLogger("functions.nightly_sync")
    logger.setLevel(logging.INFO)
    try:
        report = jobs.nightly()
        jobs.log_report(report, logger)
    finally:
        logging.getLogger().removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    lines = [line for line in stream.getvalue().splitlines() if "skipped" in line]
    assert len(lines) == 2, lines[:5]  # one cause line, and the summary
    assert "skipped: 3000 blobs: not an image" in lines[0] and "and 2997 more" in lines[0]
    assert len(stream.getvalue().encode()) < 2000  # before: one line per blob, 957 KB for 10,000
    assert len(report.to_dict()["skipped"]) == 3_000  # the report names every one
