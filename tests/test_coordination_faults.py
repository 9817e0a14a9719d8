"""Our own coordination under its own faults (issue "Coordination that survives its own faults"): a partner
slower than the lock, a full sync killed with SIGKILL, a state container that vanishes, storage that dies
mid-listing. Real Azurite, the real sandboxes, real processes.

The oracle is the TRAEDE sandbox: its ``history`` is every product set in the order TRAEDE applied it, its
``products`` what it holds now. Once everything is quiet, TRAEDE must hold every product's current complete
set, whatever happened on the way.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from devtools.azurite import Azurite
from devtools.images import jpeg
from devtools.queue_host import QueueHost
from shared.app import jobs
from shared.app.cli import main as cli_main
from shared.app.output import EXIT_OK, EXIT_PROBLEMS
from shared.catalog.records import image_id_for
from shared.catalog.web import TAG as WEB_TAG
from shared.catalog.web import Verdict
from shared.coordination.leases import FullSyncFences
from shared.coordination.state import StateContainer
from tests.conftest import TRAEDE_CREDENTIALS, WALLIE_CREDENTIALS
from tests.host_objects import sdk_blob_client
from tests.storage_proxy import StorageProxy

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def app_env(sync_env, monkeypatch):
    suffix = uuid.uuid4().hex[:10]
    env = {**sync_env, "PRODUCT_SYNC_QUEUE": f"products-{suffix}", "SYNC_STATE_CONTAINER": f"state-{suffix}",
           "PRODUCT_SYNC_DELAY_SECONDS": "1", "PRODUCT_LOCK_SECONDS": "15", "FULL_SYNC_FENCE_SECONDS": "15",
           "PRODUCT_RESEND_SECONDS": "20", "HTTP_RETRY_BACKOFF_SECONDS": "0.05", "RUN_HISTORY_CONTAINER": ""}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def upload(container, name):
    from functions.image_uploaded import image_uploaded

    container.upload_blob(name, jpeg(note=name), overwrite=True)
    image_uploaded(sdk_blob_client(container.container_name, name))


def filenames(traede, item):
    return sorted(i["filename"] for i in traede.products.get(item, []))


def sets_of(traede, item):
    return [sorted(k.split(":")[0] for k in entry["keys"]) for entry in traede.history if entry["item_number"] == item]


def wait_until(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.2)


def cli_process(env, *args, page_size=None):
    """``image-sync`` in a process of its own (so it can be killed), optionally listing ``page_size`` blobs a page."""
    code = "import sys\n"
    if page_size:
        code += f"import shared.catalog.listing as listing\nlisting.LIST_PAGE_SIZE = {page_size}\n"
    code += "from shared.app.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


# -- a partner slower than the lock -------------------------------------------------------------------------

def test_a_traede_answer_slower_than_the_lock_ends_with_the_newest_full_set(app_env, container, traede):
    """TRAEDE sits on a send for longer than PRODUCT_LOCK_SECONDS, then applies it. The client gave up on that
    attempt (HTTP_TIMEOUT_SECONDS), its retry was delivered, the mark was settled, and a newer upload was sent
    meanwhile: the late request lands after the newer set and deletes an image at TRAEDE. Its outcome was
    unknown, so the product is sent again after PRODUCT_RESEND_SECONDS, and TRAEDE ends with the newest set."""
    env = {**app_env, "HTTP_TIMEOUT_SECONDS": "3"}
    os.environ["HTTP_TIMEOUT_SECONDS"] = "3"
    jobs.reset()
    host = QueueHost.for_function("product_sync", env["PRODUCT_SYNC_QUEUE"], env["IMAGES_STORAGE"],
                                  visibility_timeout=5).start()
    try:
        traede.configure_faults(slow_next=1, slow_ms=17_000)  # longer than the 15 s lock
        upload(container, "8100/BLK/front.jpg")
        wait_until(lambda: filenames(traede, "8100") == ["front.jpg"], 20, "the retry's delivery")
        first_sent = time.monotonic()
        upload(container, "8100/BLK/back.jpg")  # newer than the request TRAEDE still sits on
        wait_until(lambda: filenames(traede, "8100") == ["back.jpg", "front.jpg"], 15, "the newer set")
        wait_until(lambda: traede.stats["injected_slow"] == 1 and filenames(traede, "8100") == ["front.jpg"], 25,
                   "the late request landing after the newer set")  # the fault happened: an image deleted
        wait_until(lambda: filenames(traede, "8100") == ["back.jpg", "front.jpg"], 40, "the resend")
        resent_after = time.monotonic() - first_sent
        time.sleep(3)
    finally:
        host.stop()
    assert filenames(traede, "8100") == ["back.jpg", "front.jpg"]
    sets = [len(s) for s in sets_of(traede, "8100")]
    assert sets[-1] == 2 and 1 in sets[2:], sets  # a smaller set was applied late, and a full one after it
    assert resent_after >= 15, f"sent again after {resent_after:.1f} s: before the late request could land"
    assert host.stats()["failures"] == 0 and host.stats()["poisoned"] == 0


def test_a_sender_killed_while_traede_sits_on_its_request_is_followed_by_a_resend(app_env, container, traede):
    """``kill -9`` of the instance whose request TRAEDE is sitting on: the request still lands, late. The next
    holder of the product's lock inherits it from a dead holder, so it cannot know what is still in flight: it
    sends the current set and, once the dead one's request may have landed, sends it again."""
    from tests.workers import Workers

    env = {**app_env, "HTTP_TIMEOUT_SECONDS": "60"}
    container.upload_blob("8150/BLK/front.jpg", jpeg(note="front"))
    traede.configure_faults(slow_next=1, slow_ms=28_000)  # lands after the lock runs out and a new holder sent
    workers = Workers(env, count=1, visibility=10)
    try:
        workers.fire("8150/BLK/front.jpg")
        wait_until(lambda: traede.stats["injected_slow"] == 1, 30, "the send TRAEDE sits on")
        workers.crash(0)  # kill -9 mid-request: the lock is left behind, the request is still at TRAEDE
        killed_at = time.monotonic()
        container.upload_blob("8150/BLK/back.jpg", jpeg(note="back"))
        workers.fire("8150/BLK/back.jpg")
        wait_until(lambda: filenames(traede, "8150") == ["back.jpg", "front.jpg"], 40, "the inheritor's send")
        wait_until(lambda: filenames(traede, "8150") == ["front.jpg"], 30,
                   "the dead sender's request landing late")  # the fault really happened: an image deleted
        landed_at = time.monotonic()
        wait_until(lambda: filenames(traede, "8150") == ["back.jpg", "front.jpg"], 45, "the resend")
        repaired_after = time.monotonic() - landed_at
        time.sleep(2)
    finally:
        counts = workers.stop()
    assert filenames(traede, "8150") == ["back.jpg", "front.jpg"]
    sets = [len(s) for s in sets_of(traede, "8150")]
    assert sets[-1] == 2 and sets.index(2) < len(sets) - 1 - sets[::-1].index(1), sets  # full, late small, full
    assert counts[-1]["resend_invocations"] >= 1, counts
    assert landed_at - killed_at < 30 and repaired_after < 30, (landed_at - killed_at, repaired_after)


# -- a full sync killed mid-run ----------------------------------------------------------------------------

def test_a_killed_full_sync_blocks_product_sends_briefly_and_the_next_sync_names_it_and_proceeds(
        app_env, container, traede):
    for item in ("8200", "8201", "8202"):
        container.upload_blob(f"{item}/BLK/front.jpg", jpeg(note=item))
    traede.configure_faults(hang=True)  # the full sync sits in TRAEDE's lane with its fence up
    crashed = cli_process(app_env, "sync")
    state = StateContainer(_service(app_env), app_env["SYNC_STATE_CONTAINER"])
    fences = FullSyncFences(state, 15)
    wait_until(lambda: fences.active() and traede.stats["injected_hang"] >= 1, 30, "the full sync's fence")
    holder = fences.active()[0]
    os.killpg(crashed.pid, signal.SIGKILL)  # kill -9: no fence removed, no lease released
    crashed.wait(10)
    killed_at = time.monotonic()
    traede.configure_faults(hang=False)
    upload(container, "8203/BLK/front.jpg")  # a product send now meets the dead sync's fence
    host = QueueHost.for_function("product_sync", app_env["PRODUCT_SYNC_QUEUE"], app_env["IMAGES_STORAGE"],
                                  visibility_timeout=5).start()
    try:
        out, err = io.StringIO(), io.StringIO()
        code = cli_main(["sync", "--wait", "120"], env=app_env, stdout=out, stderr=err)
        waited = time.monotonic() - killed_at
        wait_until(lambda: filenames(traede, "8203") == ["front.jpg"], 30, "the product send")
        product_sent_after = time.monotonic() - killed_at
    finally:
        host.stop()
    text = err.getvalue()
    assert code == EXIT_OK, text
    assert f"run {holder.run} on host {holder.host} (pid {crashed.pid})" in text, text
    assert "started " in text and "last renewed " in text
    assert waited < 15 + 10, f"the next sync waited {waited:.0f} s on a dead fence"
    assert product_sent_after < 15 + 25, f"a product waited {product_sent_after:.0f} s on a dead fence"
    assert all(filenames(traede, i) == ["front.jpg"] for i in ("8200", "8201", "8202", "8203"))


def test_a_full_sync_stops_waiting_for_a_live_one_after_wait_and_names_it(app_env, container, traede):
    container.upload_blob("8300/BLK/front.jpg", jpeg())
    parts = jobs.components()
    with parts.product_queue.full_sync_unit("the nightly sync", run="nightly-live"):
        err = io.StringIO()
        started = time.monotonic()
        code = cli_main(["sync", "--wait", "3"], env=app_env, stdout=io.StringIO(), stderr=err)
        took = time.monotonic() - started
    assert code == 75, err.getvalue()
    last = err.getvalue().strip().splitlines()[-1]
    assert last.startswith("sync not done: another full sync is still running after waiting 3 s: the nightly "
                           "sync, run nightly-live on host "), last
    assert "nothing was sent" in last and took < 20
    assert traede.stats["sync_requests"] == 0


# -- lost state --------------------------------------------------------------------------------------------

def test_the_state_container_deleted_with_messages_queued_loses_no_product(app_env, container, traede,
                                                                           blob_service, caplog):
    items = ("8400", "8401", "8402")
    for item in items:
        upload(container, f"{item}/BLK/front.jpg")
    blob_service.delete_container(app_env["SYNC_STATE_CONTAINER"])  # a lifecycle rule, or a person
    host = QueueHost.for_function("product_sync", app_env["PRODUCT_SYNC_QUEUE"], app_env["IMAGES_STORAGE"])
    with caplog.at_level("WARNING"):
        host.drain()
    assert all(filenames(traede, item) == ["front.jpg"] for item in items)
    assert host.stats()["failures"] == 0
    assert sum("has no pending mark in SYNC_STATE_CONTAINER" in r.getMessage() for r in caplog.records) >= 1


def test_a_message_whose_own_mark_was_settled_is_dropped_and_any_other_is_sent(app_env, container, traede):
    """The settled record proves that a late duplicate is obsolete, so a healthy queue costs no extra sends;
    a message it does not prove obsolete is sent."""
    from shared.coordination.product_queue import ProductMessage

    host = QueueHost.for_function("product_sync", app_env["PRODUCT_SYNC_QUEUE"], app_env["IMAGES_STORAGE"])
    upload(container, "8500/BLK/front.jpg")
    host.drain()
    upload(container, "8500/BLK/front.jpg")  # a second burst: a newer generation of the mark
    time.sleep(1.2)  # PRODUCT_SYNC_DELAY_SECONDS: the message becomes visible
    queued = ProductMessage.from_json(host.queue.peek_messages(1)[0].content)
    assert queued.gen == 2 and not queued.resend
    host.drain()
    assert traede.stats["products_received"] == 2
    parts = jobs.components()
    parts.product_queue.enqueue(queued, 0)  # the same message again (the host delivers at least once)
    host.drain()
    assert traede.stats["products_received"] == 2  # dropped: its own mark was settled
    parts.product_queue.enqueue(ProductMessage(queued.container, "8500", gen=queued.gen - 1), 0)
    host.drain()
    assert traede.stats["products_received"] == 2  # an older generation (a message queued again late): too
    parts.product_queue.enqueue(ProductMessage(queued.container, "8500", gen=queued.gen + 1), 0)
    host.drain()
    assert traede.stats["products_received"] == 3  # newer than anything settled (state lost?): sent, harmless
    assert filenames(traede, "8500") == ["front.jpg"]


def test_a_state_container_this_identity_may_not_write_is_named_with_what_to_check(app_env, container, azurite):
    """Credentials that reach the images container but not SYNC_STATE_CONTAINER (a SAS for one container)."""
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from devtools.azurite import ACCOUNT, ACCOUNT_KEY

    sas = generate_container_sas(ACCOUNT, container.container_name, account_key=ACCOUNT_KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    env = {**app_env, "IMAGES_STORAGE": f"BlobEndpoint={azurite.blob_endpoint};QueueEndpoint="
                                        f"{azurite.queue_endpoint};SharedAccessSignature={sas}"}
    container.upload_blob("8600/BLK/front.jpg", jpeg())
    with pytest.raises(Exception) as caught:
        jobs.new_image("8600/BLK/front.jpg", env)
    message = str(caught.value)
    assert type(caught.value).__name__ == "StateError"
    assert f"SYNC_STATE_CONTAINER {app_env['SYNC_STATE_CONTAINER']!r}" in message
    assert "marking product '8600' pending failed" in message and "Storage Blob Data Contributor" in message
    assert "sig=" not in message and sas.split("sig=")[1][:10] not in message


def test_a_sender_whose_lock_vanishes_with_the_container_stops_and_sends_again_later(app_env, container, traede,
                                                                                   blob_service, caplog):
    """The state container is deleted while a product is being sent: its lock is gone, so another instance
    may send the product at the same time. The sender notices at its next renewal, cuts its request, and the
    product is sent again after PRODUCT_RESEND_SECONDS, when whatever overlapped has landed."""
    host = QueueHost.for_function("product_sync", app_env["PRODUCT_SYNC_QUEUE"], app_env["IMAGES_STORAGE"],
                                  visibility_timeout=5).start()
    try:
        traede.configure_faults(slow_next=1, slow_ms=8000)
        with caplog.at_level("WARNING"):
            upload(container, "8700/BLK/front.jpg")
            wait_until(lambda: traede.stats["injected_slow"] == 1, 20, "the send")
            blob_service.delete_container(app_env["SYNC_STATE_CONTAINER"])
            wait_until(lambda: any("lost the lock of product '8700'" in r.getMessage() for r in caplog.records), 10,
                       "the sender noticing")
            lost_at = time.time()
            wait_until(lambda: any(e["at"] > lost_at + 15 for e in traede.history), 45, "the set sent again")
    finally:
        host.stop()
    assert filenames(traede, "8700") == ["front.jpg"]
    late = [e for e in traede.history if e["at"] > lost_at + 15]
    assert len(late) == 1  # the resend, after whatever overlapped must have landed


def test_a_product_queue_that_cannot_be_reached_is_named_and_leaves_no_mark_without_a_message(
        app_env, container, azurite):
    """No message, no mark: the host retries the upload's invocation, which marks and queues again."""
    env = {**app_env, "IMAGES_STORAGE": app_env["IMAGES_STORAGE"].replace(
        f"QueueEndpoint={azurite.queue_endpoint}", "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1")}
    container.upload_blob("8650/BLK/front.jpg", jpeg())
    with pytest.raises(Exception) as caught:
        jobs.new_image("8650/BLK/front.jpg", env)
    assert type(caught.value).__name__ == "StateError"
    assert "PRODUCT_SYNC_QUEUE " in str(caught.value) and "queueing product '8650' failed" in str(caught.value)
    assert jobs.components(env).product_queue.pending() == {}


# -- storage dies mid-listing --------------------------------------------------------------------------------

def test_storage_dying_during_page_2_ends_the_run_in_bounded_time_and_the_next_run_completes(
        tmp_path, wallie, traede):
    images = {f"88{p:02d}": [f"88{p:02d}/BLK/{k}.jpg" for k in ("back", "front")] for p in range(3)}
    azurite = Azurite(persist_dir=tmp_path / "azurite").start()
    proxy = None
    try:
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        images_container = service.create_container("images")
        for names in images.values():
            for name in names:
                data = jpeg(note=name)
                # as any night after the first: each image's web verdict kept in its tag, so the web stage reads
                # nothing and the listing alone talks to storage (an image without one is looked at with a
                # ranged read, which storage dying would fail too, keeping complete products back with it)
                verdict = Verdict("md5:" + hashlib.md5(data).hexdigest(), "JPEG", 16, 16, "RGB").encode()
                images_container.upload_blob(name, data, tags={WEB_TAG: verdict})
        service.close()
        azurite.stop()  # saved to disk; the next start has the catalog
        azurite.start()
        lists = []

        def second_listing_page(line):
            if line.startswith("GET /devstoreaccount1/images?") and "comp=list" in line:
                lists.append(line)
            return len(lists) == 3  # the preflight lists one blob, then the sync's page 1 and page 2

        proxy = StorageProxy(azurite, die_at=second_listing_page)
        env = {**os.environ, "IMAGES_STORAGE": proxy.connection_string, "IMAGES_CONTAINER": "images",
               "WALLIE_BASE_URL": wallie.url, "WALLIE_TENANT": WALLIE_CREDENTIALS["tenant"],
               "WALLIE_USERNAME": WALLIE_CREDENTIALS["username"], "WALLIE_PASSWORD": WALLIE_CREDENTIALS["password"],
               "TRAEDE_BASE_URL": traede.url, "TRAEDE_ACCESS_TOKEN": TRAEDE_CREDENTIALS["access_token"],
               "TRAEDE_APP_KEY": TRAEDE_CREDENTIALS["app_key"], "FULL_SYNC_FENCE_SECONDS": "15"}
        started = time.monotonic()
        first = cli_process(env, "sync", "--report", str(tmp_path / "run1.json"), page_size=3)
        out, err = first.communicate(timeout=180)
        took = time.monotonic() - started
        assert proxy.died.is_set(), "storage never died: the listing had no page 2"
        assert first.returncode == EXIT_PROBLEMS, err
        assert took < 60, f"the run took {took:.0f} s to end after storage died"
        assert "failed: storage: item '*': listing the container stopped after 3 blobs" in err, err
        # Page 1 held 8800 whole and the first image of 8801: 8800 went to TRAEDE, 8801 was withheld (a
        # partial set would delete its other image there), and nothing partial ever reached TRAEDE.
        assert sorted(e["item_number"] for e in traede.history) == ["8800"]
        assert filenames(traede, "8800") == ["back.jpg", "front.jpg"]
        report = json.loads((tmp_path / "run1.json").read_text())
        withheld = [p for p in report["failed"] if p["partner"] == "traede"]
        assert [p["item"] for p in withheld] == ["8801"] and "partial set" in withheld[0]["reason"]
        assert report["accounting"]["traede"]["unaccounted"] == 0

        proxy.revive()
        second = cli_process(env, "sync", page_size=3)
        out, err = second.communicate(timeout=180)
        assert second.returncode == EXIT_OK, err
        for item, names in images.items():
            assert filenames(traede, item) == sorted(n.rsplit("/", 1)[1] for n in names)
    finally:
        if proxy is not None:
            proxy.close()
        azurite.persist_dir = None  # remove its folder on stop
        azurite.stop()


def _service(env):
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(env["IMAGES_STORAGE"])


# -- every wait has a deadline ---------------------------------------------------------------------------

def test_every_storage_call_gives_up_within_its_budget_when_storage_is_gone():
    """Storage that refuses connections: each call (blob or queue) fails within about CALL_BUDGET_SECONDS,
    not after the SDK's 4 + 10 + 28 s of back-off."""
    from devtools.azurite import ACCOUNT, ACCOUNT_KEY
    from shared.config.settings import Settings
    from shared.storage.clients import CALL_BUDGET_SECONDS, blob_service, queue_client

    gone = (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:9/{ACCOUNT};QueueEndpoint=http://127.0.0.1:9/{ACCOUNT};")
    storage = Settings.from_env({"IMAGES_STORAGE": gone}).storage
    for call in (lambda: blob_service(storage).get_container_client("c").get_blob_client("b").get_blob_properties(),
                 lambda: queue_client(storage, "q").send_message("x")):
        started = time.monotonic()
        with pytest.raises(Exception, match="Connection refused"):
            call()
        assert time.monotonic() - started < CALL_BUDGET_SECONDS + 2


def test_a_listing_that_storage_stops_answering_ends_at_the_stall_limit():
    """Storage that accepts the request and never answers: the listing ends with a storage failure after
    ``stall_seconds``, instead of waiting on the listing thread for ever."""
    import socket
    import threading

    from devtools.azurite import ACCOUNT, ACCOUNT_KEY
    from shared.catalog.listing import ContainerListing, ListingStalled
    from shared.config.settings import Settings
    from shared.storage.clients import blob_service

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    held = []
    threading.Thread(target=lambda: held.append(silent.accept()), daemon=True).start()
    port = silent.getsockname()[1]
    storage = Settings.from_env({"IMAGES_STORAGE": f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};"
                                                   f"AccountKey={ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:{port}/"
                                                   f"{ACCOUNT};"}).storage
    listing = ContainerListing(blob_service(storage).get_container_client("images"), stall_seconds=2)
    started = time.monotonic()
    with pytest.raises(ListingStalled, match="made no progress for 2 s"):
        list(listing.pages())
    assert time.monotonic() - started < 5
    silent.close()


# -- everything at once ------------------------------------------------------------------------------------

# PROPERTY_SEEDS=3,4,5 runs more interleavings (each about a minute); CI runs two.
@pytest.mark.parametrize("seed", [int(s) for s in os.environ.get("PROPERTY_SEEDS", "1,2").split(",")])
def test_once_quiet_traede_holds_every_products_current_set_whatever_happened(app_env, container, traede, seed):
    """Uploads, overwrites and deletes in random order over four products, fired at two worker processes
    (Functions instances) that also serve the product queue; TRAEDE sits on a third of the requests for longer
    than the client waits (then applies them); one instance is killed with SIGKILL mid-run and replaced.
    Once nothing is queued or pending any more, TRAEDE holds every product's current complete set."""
    import random

    from functions.image_deleted import image_deleted
    from tests.host_objects import deleted_event
    from tests.workers import Workers

    env = {**app_env, "HTTP_TIMEOUT_SECONDS": "2", "PRODUCT_RESEND_SECONDS": "10"}
    os.environ.update({"HTTP_TIMEOUT_SECONDS": "2", "PRODUCT_RESEND_SECONDS": "10"})
    jobs.reset()
    rng = random.Random(seed)
    items = [f"9{seed}0{p}" for p in range(4)]
    traede.configure_faults(slow_rate=0.35, slow_ms=5000, seed=seed)
    workers = Workers(env, count=2, parallel=3, visibility=10)
    present: set[str] = set()
    try:
        for step in range(36):
            item = rng.choice(items)
            name = f"{item}/{rng.choice(('BLK', 'WHT'))}/{rng.choice(('front', 'back', 'detail'))}.jpg"
            if name in present and rng.random() < 0.4:
                container.delete_blob(name)
                present.discard(name)
                image_deleted(deleted_event(container.container_name, name))
            else:
                container.upload_blob(name, jpeg(note=f"{name} {step}"), overwrite=True)
                present.add(name)
                workers.fire(name)
            if step == 18:
                workers.crash(0)
            time.sleep(rng.uniform(0, 0.3))
        traede.configure_faults(slow_rate=0.0)  # the partner recovers; what it sits on still lands later
        host = QueueHost.for_function("product_sync", env["PRODUCT_SYNC_QUEUE"], env["IMAGES_STORAGE"])
        marks = jobs.components().product_queue.marks
        quiet_checks, deadline = 0, time.monotonic() + 150
        while quiet_checks < 3:
            assert time.monotonic() < deadline, f"never quiet: {host.pending()} messages, {marks.snapshot()}"
            quiet_checks = quiet_checks + 1 if host.pending() == 0 and not marks.snapshot() else 0
            time.sleep(1)
        time.sleep(6)  # longer than TRAEDE sits on a request: anything late has landed, and queued its resend
        assert host.pending() == 0 and not marks.snapshot()
    finally:
        workers.stop()
    for item in items:
        current = sorted(image_id_for(n) for n in present if n.startswith(item + "/"))
        holds = sorted(i["key"].split(":")[0] for i in traede.products.get(item, []))
        assert holds == current, f"product {item}: TRAEDE holds {len(holds)} images, the container {len(current)}"
    assert traede.stats["injected_slow"] > 0  # the fault really happened
