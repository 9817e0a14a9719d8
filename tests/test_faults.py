"""Fault suite: partners and storage misbehaving for real (sandboxes, Azurite), never a hang or a silent loss.

Every test ends with `assert_accounted`: each catalog image is delivered, skipped or failed per partner,
and every failure names the record (item and blob) that was not delivered.
"""
import io
import json
import threading
import time
from datetime import timedelta

import pytest

from devtools.azurite import Azurite, free_port
from devtools.images import png
from shared.app.cli import main as cli_main
from shared.app.factory import Components
from shared.catalog.container import Catalog
from shared.catalog.layout import PathLayout
from shared.catalog.records import image_id_for
from shared.config.settings import HttpSettings, Settings
from shared.engine.sync import SyncEngine
from shared.partners.traede import TraedeClient
from shared.partners.wallie import WallieClient
from shared.storage.clients import blob_service
from shared.storage.sas import SasSigner
from tests.conftest import TRAEDE_CREDENTIALS, WALLIE_CREDENTIALS

pytestmark = pytest.mark.timeout(120)


def upload(container, products=4, per_product=3):
    names = []
    for p in range(products):
        for kind in ["front", "back", "detail", "zoom"][:per_product]:
            name = f"{7000 + p}/BLK/{kind}.png"
            container.upload_blob(name, png(note=name))
            names.append(name)
    container.upload_blob("7000/notes.txt", b"not an image")  # one skip, to account for too
    return names


def run(env, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    path = tmp_path / "report.json"
    started = time.monotonic()
    code = cli_main(["sync", "--report", str(path)], env=env, stdout=out, stderr=err)
    return code, err.getvalue(), json.loads(path.read_text()), time.monotonic() - started


def assert_accounted(report, names, partners=("wallie", "traede")):
    """Every image: delivered, or named in a failure/rejection; every product likewise at TRAEDE."""
    acc = report["accounting"]
    for partner in partners:
        assert acc[partner]["unaccounted"] == 0, acc
    assert acc["storage"]["skipped"] == len(report["skipped"])
    products = {n.split("/")[0] for n in names}
    if "wallie" in partners:
        assert acc["wallie"]["expected"] == len(names)
        failed_blobs = [p["blob"] for p in report["failed"] + report["rejected"] if p["partner"] == "wallie"]
        assert len(failed_blobs) == len(set(failed_blobs)) == acc["wallie"]["failed"] + acc["wallie"]["rejected"]
        assert set(failed_blobs) <= set(names)
    if "traede" in partners:
        assert acc["traede"]["expected"] == len(products)
        failed_items = [p["item"] for p in report["failed"] + report["rejected"] if p["partner"] == "traede"]
        assert set(failed_items) <= products and len(failed_items) == len(set(failed_items))


def test_partner_refusing_connections_fails_its_records_and_the_other_partner_gets_everything(
        container, sync_env, traede, tmp_path):
    names = upload(container)
    env = {**sync_env, "WALLIE_BASE_URL": f"http://127.0.0.1:{free_port()}", "HTTP_MAX_RETRIES": "2",
           "WALLIE_BATCH_SIZE": "2", "SYNC_CONCURRENCY": "1"}
    code, err, report, seconds = run(env, tmp_path)
    assert code == 1 and seconds < 30
    assert_accounted(report, names)
    assert report["accounting"]["wallie"]["failed"] == len(names)
    reasons = [p["reason"] for p in report["failed"] if p["partner"] == "wallie"]
    assert sum("no answer from" in r and "connection refused" in r for r in reasons) == 6  # 3 calls of 2
    assert sum("not sent: 3 calls in a row failed" in r for r in reasons) == 6  # the breaker: no more calls
    assert report["delivered"]["traede"] == 4 and len(traede.products) == 4
    # one line per cause, not one per image
    assert "stopped: wallie: 3 calls in a row failed after their retries" in err and "6 images not sent" in err
    assert len([line for line in err.splitlines() if line.startswith(("failed: wallie", "stopped: wallie"))]) == 2


def test_partner_slower_than_the_timeout_ends_in_bounded_time(container, sync_env, wallie, traede, tmp_path):
    names = upload(container, products=2, per_product=2)
    traede.configure_faults(latency_ms=2500)
    env = {**sync_env, "HTTP_TIMEOUT_SECONDS": "1", "HTTP_MAX_RETRIES": "1"}
    code, err, report, seconds = run(env, tmp_path)
    assert code == 1 and seconds < 30
    assert_accounted(report, names)
    assert report["accounting"]["traede"]["failed"] == 2 and len(wallie.images) == len(names)
    assert "failed: traede: 2 products" in err and "item '7000', item '7001'" in err and "timed out" in err.lower()


def test_storms_that_outlast_the_retries_name_every_undelivered_record(container, sync_env, wallie, traede, tmp_path):
    names = upload(container, products=12, per_product=3)
    for sandbox in (wallie, traede):
        sandbox.configure_faults(error_rate=0.5, throttle_rate=0.3, retry_after=0, seed=3)
    env = {**sync_env, "WALLIE_BATCH_SIZE": "2", "HTTP_MAX_RETRIES": "1"}
    code, err, report, seconds = run(env, tmp_path)
    assert seconds < 60
    assert_accounted(report, names)
    acc = report["accounting"]
    assert acc["wallie"]["failed"] > 0 and acc["wallie"]["delivered"] > 0  # the seed gives a mix
    delivered = {n for n in names if image_id_for(n) in wallie.images}
    failed = {p["blob"] for p in report["failed"] if p["partner"] == "wallie"}
    # The sandbox injects faults before it stores, so what it holds and what we report failed split the
    # catalog exactly: nothing lost, nothing reported failed that arrived.
    assert delivered | failed == set(names) and not delivered & failed
    assert code == 1 and ("HTTP 500" in err or "HTTP 429" in err)


def test_token_endpoint_failing_fails_wallie_records_with_the_reason(container, sync_env, wallie, traede, tmp_path):
    names = upload(container, products=2, per_product=2)
    wallie.configure_faults(outage=True)
    code, err, report, seconds = run({**sync_env, "HTTP_MAX_RETRIES": "2"}, tmp_path)
    assert code == 1 and seconds < 30
    assert_accounted(report, names)
    assert wallie.stats["token_requests"] >= 3 and wallie.stats["image_requests"] == 0
    assert all("POST /Token" in p["reason"] for p in report["failed"])
    assert len(traede.products) == 2


def test_401_in_the_middle_of_a_run_renews_the_token_and_delivers_everything(container, sync_env, wallie, traede):
    names = upload(container, products=6, per_product=3)
    settings = Settings.from_env({**sync_env, "WALLIE_BATCH_SIZE": "3", "SYNC_CONCURRENCY": "1"})
    revoked = []
    wallie.configure_faults(latency_ms=150)  # time for the watcher to step in between two batches

    def revoke_after_first_batch():
        while wallie.stats["images_received"] < 3:
            time.sleep(0.005)
        wallie.revoke_tokens()
        revoked.append(True)

    watcher = threading.Thread(target=revoke_after_first_batch, daemon=True)
    watcher.start()
    with Components(settings) as parts:
        report = parts.engine.full_sync()
    assert revoked and report.ok, report.to_dict()
    assert wallie.stats["responses"].get(401) == 1 and wallie.stats["token_requests"] == 2
    assert set(wallie.images) == {image_id_for(n) for n in names}
    assert_accounted(report.to_dict(), names)


@pytest.mark.parametrize("partner", ["wallie", "traede"])
def test_malformed_answers_are_never_taken_for_a_delivery(container, sync_env, wallie, traede, tmp_path, partner):
    names = upload(container, products=2, per_product=2)
    sandbox = {"wallie": wallie, "traede": traede}[partner]
    sandbox.configure_faults(malformed=True)
    code, err, report, seconds = run(sync_env, tmp_path)
    assert code == 1 and seconds < 30
    assert_accounted(report, names)
    assert report["delivered"][partner] == 0
    assert all("not JSON" in p["reason"] for p in report["failed"])
    assert {p["partner"] for p in report["failed"]} == {partner}


def test_storage_stopping_mid_listing_withholds_only_the_product_not_listed_whole(wallie, traede):
    """A separate Azurite, stopped for real between listing pages. Products whose folder was listed to the
    end went to TRAEDE while the listing went on; the one being listed is withheld (a partial set would
    delete images at TRAEDE); every listed image went to Wallie."""
    with Azurite() as az:
        settings = Settings.from_env({"IMAGES_STORAGE": az.connection_string, "IMAGES_CONTAINER": "faults"})
        service = blob_service(settings.storage, retry_total=1, initial_backoff=0, increment_base=1,
                               connection_timeout=2)
        container = service.create_container("faults")
        names = upload(container, products=5, per_product=3)  # 15 images + 1 skipped, 16 pages of 1
        # One blob a page: the listing thread is at most PAGES_AHEAD + 1 pages ahead of the engine, so when
        # storage stops at the 6th image, pages 10 and later cannot have been fetched.
        catalog = Catalog(container, PathLayout(settings.path_pattern), page_size=1)
        signer = SasSigner(service, "faults", ttl=timedelta(hours=1), start_skew=timedelta(minutes=5))
        signed = []

        def sign_then_stop_storage(name):
            signed.append(name)
            if len(signed) == 6:  # the sixth page is being read: the tenth will not come
                az.process.terminate()
                az.process.wait(10)
            return signer.url(name)

        http = HttpSettings(timeout_seconds=5, max_retries=1, backoff_seconds=0.01)
        wallie_client = WallieClient(wallie.url, **WALLIE_CREDENTIALS, http=http)
        traede_client = TraedeClient(traede.url, **TRAEDE_CREDENTIALS, http=http)
        engine = SyncEngine(catalog, sign_then_stop_storage, wallie=wallie_client, traede=traede_client)
        started = time.monotonic()
        report = engine.full_sync()
        assert time.monotonic() - started < 30
        service.close()
    data = report.to_dict()
    assert not report.ok
    assert data["accounting"]["storage"]["complete"] is False
    assert 6 <= report.images < len(names)
    assert data["accounting"]["wallie"] == {"expected": report.images, "delivered": report.images,
                                            "rejected": 0, "failed": 0, "deferred": 0, "unaccounted": 0}
    assert {r["itemId"] for r in wallie.images.values()} <= {n.split("/")[0] for n in names}
    listed = {n.split("/")[0] for n in signed}
    complete = sorted(traede.products)
    assert complete and len(complete) == len(listed) - 1  # the folders listed to the end
    for item in complete:
        assert len(traede.products[item]) == 3  # each whole: nothing partial ever reached TRAEDE
    withheld = [p for p in data["failed"] if p["partner"] == "traede"]
    assert [p["item"] for p in withheld] == sorted(listed - set(complete))
    assert "partial set would delete images" in withheld[0]["reason"]
    assert data["accounting"]["traede"]["unaccounted"] == 0
    storage = [p for p in data["failed"] if p["partner"] == "storage"]
    assert len(storage) == 1 and "listing the container stopped after" in storage[0]["reason"]
    # storage went away: refused on the next request, or the answer in flight broke off (a busy machine)
    assert "ServiceRequestError" in storage[0]["reason"] or "ServiceResponseError" in storage[0]["reason"]


@pytest.fixture
def truncating_partner():
    """Answers 200 with a Content-Length it never delivers, then hangs up (a dying proxy)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(1 << 20)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"st")

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_an_answer_that_breaks_off_is_a_named_failure_not_a_crash(container, sync_env, wallie, truncating_partner,
                                                                   tmp_path):
    names = upload(container, products=3, per_product=2)
    code, err, report, seconds = run({**sync_env, "TRAEDE_BASE_URL": truncating_partner}, tmp_path)
    assert code == 1 and seconds < 30
    assert_accounted(report, names)
    assert report["accounting"]["traede"]["failed"] == 3 and len(wallie.images) == len(names)
    assert all("answer broke off" in p["reason"] for p in report["failed"])


class BreaksAfterFirstPage:
    """The real listing, broken after its first page by an error that is no storage error: a spill file that
    cannot be written (OSError), a body cut off mid-XML (ParseError), a bug."""

    def __init__(self, listing, error):
        self.listing, self.error = listing, error

    def pages(self, prefix=None, marker=None):
        for number, page in enumerate(self.listing.pages(prefix, marker)):
            if number == 1:
                raise self.error
            yield page


@pytest.mark.parametrize("prefix", ["", "shots/"])  # a folder per product; products held until the listing ends
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), ValueError("a bug")])
def test_an_error_that_is_no_storage_error_mid_listing_sends_no_partial_set(container, traede, prefix, error):
    """Page 1 holds A's two images and B's first: B must not reach TRAEDE with one image, whatever broke the run
    off, with a folder-per-product layout or one where products are held until the listing ends."""
    for name in ("A/1.png", "A/2.png", "B/1.png", "B/2.png", "C/1.png"):
        container.upload_blob(prefix + name, png(note=name))
    catalog = Catalog(container, PathLayout(prefix + "{item_id}/{name}"), page_size=3)
    catalog.listing = BreaksAfterFirstPage(catalog.listing, error)
    http = HttpSettings(timeout_seconds=5, max_retries=0, backoff_seconds=0.01)
    engine = SyncEngine(catalog, lambda name: f"{container.url}/{name}",
                        traede=TraedeClient(traede.url, **TRAEDE_CREDENTIALS, http=http))
    with pytest.raises(type(error)):
        engine.full_sync()
    for entry in traede.history:  # nothing partial ever reached TRAEDE
        assert entry["item_number"] == "A" and len(entry["keys"]) == 2, entry
    assert prefix or traede.history  # with a folder per product, A was complete and went while listing


def test_an_error_that_is_no_storage_error_while_listing_asked_for_products_sends_no_empty_set(container, traede):
    """The product queue's path (send_products, empty sets allowed): a product not listed because the run broke
    off is not an empty product, and must not be sent as one (that would delete all its images at TRAEDE)."""
    for name in ("A/1.png", "A/2.png", "B/1.png", "C/1.png"):
        container.upload_blob(name, png(note=name))
    catalog = Catalog(container, PathLayout("{item_id}/{name}"))

    class BreaksOnB:  # the real listing, but listing B's folder fails with an error that is no storage error
        def __init__(self, listing):
            self.listing = listing

        def pages(self, prefix=None, marker=None):
            if prefix == "B/":
                raise OSError(5, "Input/output error")
            return self.listing.pages(prefix, marker)

    catalog.listing = BreaksOnB(catalog.listing)
    http = HttpSettings(timeout_seconds=5, max_retries=0, backoff_seconds=0.01)
    engine = SyncEngine(catalog, lambda name: f"{container.url}/{name}",
                        traede=TraedeClient(traede.url, **TRAEDE_CREDENTIALS, http=http))
    with pytest.raises(OSError):
        engine.send_products(["A", "B", "C"], empty_sets=True)
    assert {e["item_number"]: len(e["keys"]) for e in traede.history} in ({}, {"A": 2})  # never B:0 or C:0
