"""The burst-safe upload path (issue "Product sets that never go backwards"), against real Azurite, the real
TRAEDE sandbox with random latency, real threads and real processes.

The oracle is the TRAEDE sandbox's history: every product set in the order TRAEDE applied it. With uploads
only, a product's set may only grow; a set that lacks an image an earlier set had is a stale set that
overtook a newer one, and deletes images at TRAEDE.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devtools.images import jpeg
from devtools.queue_host import QueueHost
from shared.app import jobs
from shared.app.cli import main as cli_main
from tests.host_objects import deleted_event, sdk_blob_client
from tests.workers import Workers

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def app_env(sync_env, monkeypatch):
    suffix = uuid.uuid4().hex[:10]
    env = {**sync_env, "PRODUCT_SYNC_QUEUE": f"products-{suffix}", "SYNC_STATE_CONTAINER": f"state-{suffix}",
           "PRODUCT_SYNC_DELAY_SECONDS": "1", "PRODUCT_LOCK_SECONDS": "15", "HTTP_RETRY_BACKOFF_SECONDS": "0.05"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def host_for(env, **options):
    return QueueHost.for_function("product_sync", env["PRODUCT_SYNC_QUEUE"], env["IMAGES_STORAGE"], **options)


def history_of(traede, item):
    return [set(entry["keys"]) for entry in traede.history if entry["item_number"] == item]


def assert_never_went_backwards(traede, item):
    sets = history_of(traede, item)
    assert sets, f"TRAEDE never received product {item}"
    for n, (before, after) in enumerate(zip(sets, sets[1:], strict=False), start=2):
        assert after >= before, (f"set #{n} of product {item} lacks {sorted(before - after)}: a stale set was "
                                 f"applied after a newer one")


def filenames(traede, item):
    return sorted(i["filename"] for i in traede.products.get(item, []))


# -- the burst ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("trial", [1, 2])
def test_a_burst_over_threads_and_processes_never_applies_a_stale_set(app_env, container, traede, trial):
    """Products of 24 images each, uploaded concurrently; each upload's trigger fires at once, half on
    threads of this process, half in two worker processes; product messages are served by this process
    and the workers together. TRAEDE answers in 20-120 ms, so requests overtake each other."""
    from functions.image_uploaded import image_uploaded

    traede.configure_faults(latency_ms=20, latency_jitter_ms=100, seed=trial)
    items = [f"{trial}00{p}" for p in range(3)]
    names = [f"{item}/{('BLK', 'WHT')[k % 2]}/shot-{k:02d}.jpg" for item in items for k in range(24)]
    random.Random(trial).shuffle(names)
    workers = Workers(app_env, count=2)
    host = host_for(app_env, batch_size=4, visibility_timeout=5).start()
    try:
        def upload_and_fire(n_name):
            n, name = n_name
            time.sleep(random.Random(n).uniform(0, 0.05))
            container.upload_blob(name, jpeg(note=name))
            if n % 2:
                workers.fire(name)
            else:
                image_uploaded(sdk_blob_client(container.container_name, name))

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(upload_and_fire, enumerate(names)))
        deadline = time.monotonic() + 60
        while any(len(filenames(traede, item)) < 24 for item in items) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        host.stop()
        counts = workers.stop()
    assert sum(c["invocations"] for c in counts) == len(names) // 2
    for item in items:
        assert filenames(traede, item) == sorted(n.rsplit("/", 1)[1] for n in names if n.startswith(item + "/"))
        assert_never_went_backwards(traede, item)
    sends = traede.stats["products_received"]
    assert sends <= len(names) // 4, f"{sends} product sends for {len(names)} uploads: the burst was not coalesced"
    assert traede.stats["images_deleted"] == 0


def test_products_of_one_burst_share_requests(app_env, container, traede):
    """Twelve products uploaded at once cost about two TRAEDE requests (ten products a request)."""
    from functions.image_uploaded import image_uploaded

    os.environ["PRODUCT_SYNC_DELAY_SECONDS"] = "2"  # long enough for the whole burst to be queued
    jobs.reset()
    items = [f"40{p:02d}" for p in range(12)]
    for item in items:
        for kind in ("front", "back"):
            name = f"{item}/BLK/{kind}.jpg"
            container.upload_blob(name, jpeg(note=name))
            image_uploaded(sdk_blob_client(container.container_name, name))
    host = host_for(app_env, batch_size=1)
    host.drain()
    assert sorted(traede.products) == items and all(len(traede.products[i]) == 2 for i in items)
    assert traede.stats["products_received"] == 12
    assert traede.stats["sync_requests"] <= 3, traede.stats


# -- crash, change during a send, deletes, duplicates ---------------------------------------------------

def test_a_sender_killed_mid_send_blocks_its_product_no_longer_than_its_lock(app_env, container, traede):
    from functions.image_uploaded import image_uploaded

    for kind in ("front", "back"):
        container.upload_blob(f"5000/BLK/{kind}.jpg", jpeg(note=kind))
    image_uploaded(sdk_blob_client(container.container_name, "5000/BLK/front.jpg"))
    traede.configure_faults(hang=True)
    workers = Workers({**app_env, "HTTP_TIMEOUT_SECONDS": "60"}, count=1, visibility=10)
    deadline = time.monotonic() + 30
    while traede.stats["injected_hang"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert traede.stats["injected_hang"] == 1, "the worker never started its send"
    workers.processes[0].kill()  # crash while holding the product's lock, mid-request
    workers.processes[0].wait(10)
    killed_at = time.monotonic()
    traede.configure_faults(hang=False)
    host = host_for(app_env, visibility_timeout=5).start()  # another instance; the message comes back
    try:
        while "5000" not in traede.products and time.monotonic() - killed_at < 60:
            time.sleep(0.2)
    finally:
        host.stop()
    recovered = time.monotonic() - killed_at
    assert filenames(traede, "5000") == ["back.jpg", "front.jpg"]
    # The message comes back after its visibility timeout (10 s here), and the dead holder's lease
    # (PRODUCT_LOCK_SECONDS=15) must run out before anyone sends the product again.
    assert 5 < recovered < 15 + 10 + 5, f"recovered after {recovered:.1f} s"
    assert len(history_of(traede, "5000")) == 1  # nothing was sent while the dead instance held the lock


def test_an_upload_during_a_send_keeps_the_product_pending_and_is_sent_next(app_env, container, traede):
    from functions.image_uploaded import image_uploaded

    container.upload_blob("5100/BLK/front.jpg", jpeg(note="front"))
    image_uploaded(sdk_blob_client(container.container_name, "5100/BLK/front.jpg"))
    traede.configure_faults(latency_ms=1500)
    host = host_for(app_env, visibility_timeout=5).start()
    try:
        deadline = time.monotonic() + 20
        while traede.stats["sync_requests"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        # the first send is in flight (listed before this upload): this image must not be lost
        container.upload_blob("5100/BLK/back.jpg", jpeg(note="back"))
        image_uploaded(sdk_blob_client(container.container_name, "5100/BLK/back.jpg"))
        traede.configure_faults(latency_ms=0)
        while filenames(traede, "5100") != ["back.jpg", "front.jpg"] and time.monotonic() < deadline + 20:
            time.sleep(0.1)
    finally:
        host.stop()
    assert filenames(traede, "5100") == ["back.jpg", "front.jpg"]
    assert [len(s) for s in history_of(traede, "5100")] == [1, 2]


def test_deletes_during_a_burst_and_the_last_delete_empties_the_product(app_env, container, traede):
    from functions.image_deleted import image_deleted
    from functions.image_uploaded import image_uploaded

    names = [f"5200/BLK/shot-{k}.jpg" for k in range(10)]
    host = host_for(app_env, visibility_timeout=5).start()
    try:
        def upload(name):
            container.upload_blob(name, jpeg(note=name))
            image_uploaded(sdk_blob_client(container.container_name, name))

        def delete(name):
            container.delete_blob(name)
            image_deleted(deleted_event(container.container_name, name))

        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(upload, names[:6]))
            list(pool.map(lambda pair: (upload if pair[0] == "up" else delete)(pair[1]),
                          [("up", n) for n in names[6:]] + [("del", n) for n in names[:3]]))
        expected = sorted(n.rsplit("/", 1)[1] for n in names[3:])
        deadline = time.monotonic() + 30
        while filenames(traede, "5200") != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert filenames(traede, "5200") == expected
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(delete, names[3:]))
        while traede.products.get("5200") != [] and time.monotonic() < deadline + 30:
            time.sleep(0.2)
    finally:
        host.stop()
    assert traede.products["5200"] == []


def test_repeated_events_for_one_blob_cost_at_most_one_extra_send(app_env, container, traede):
    """Event Grid may raise BlobCreated several times for one blob (block uploads, copies, ADLS)."""
    from functions.image_uploaded import image_uploaded

    container.upload_blob("5300/BLK/front.jpg", jpeg())
    for _ in range(5):  # a flurry of duplicates within the burst window
        image_uploaded(sdk_blob_client(container.container_name, "5300/BLK/front.jpg"))
    host = host_for(app_env)
    host.drain()
    assert traede.stats["products_received"] == 1
    image_uploaded(sdk_blob_client(container.container_name, "5300/BLK/front.jpg"))  # a late duplicate
    host.drain()
    assert traede.stats["products_received"] <= 2


# -- full syncs and the product path ----------------------------------------------------------------

def test_a_full_sync_leaves_a_product_being_sent_to_its_sender(app_env, container, traede, wallie):
    from shared.app.factory import Components
    from shared.config.settings import Settings

    for item in ("6000", "6001"):
        container.upload_blob(f"{item}/BLK/front.jpg", jpeg(note=item))
    with Components(Settings.from_env(app_env)) as sender:  # another instance, sending product 6000 now
        assert sender.product_queue.locks.try_acquire("6000")
        report = jobs.nightly()
        sender.product_queue.locks.release("6000")
    assert sorted(traede.products) == ["6001"]
    assert [(p.item_id, p.partner) for p in report.deferred] == [("6000", "traede")]
    assert report.ok and report.to_dict()["accounting"]["traede"]["unaccounted"] == 0
    assert len(wallie.images) == 2  # Wallie's records are independent: all of them went


def test_product_sends_wait_while_a_full_sync_runs(app_env, container, traede):
    from functions.image_uploaded import image_uploaded

    container.upload_blob("6100/BLK/front.jpg", jpeg())
    image_uploaded(sdk_blob_client(container.container_name, "6100/BLK/front.jpg"))
    parts = jobs.components()
    host = host_for(app_env, visibility_timeout=5)
    with parts.product_queue.full_sync_unit("a long full sync"):
        time.sleep(1.2)  # the message's delay has passed
        host.run_once()
        assert traede.stats["sync_requests"] == 0  # deferred, not sent, while the fence is up
        assert host.stats()["completed"] == 1 and host.pending() == 1  # and queued again
    host.drain(timeout=40)
    assert filenames(traede, "6100") == ["front.jpg"]


def test_a_second_full_sync_waits_for_the_first(app_env, container, traede):
    container.upload_blob("6200/BLK/front.jpg", jpeg())
    parts = jobs.components()
    order = []
    with parts.product_queue.full_sync_unit("first", run="run-a"):
        second = threading.Thread(target=lambda: order.append(("second", jobs.nightly().ok)))
        second.start()
        time.sleep(2.5)
        order.append(("first done", None))
    second.join(30)
    assert order == [("first done", None), ("second", True)]


def test_a_full_sync_settles_the_pending_products_it_delivered(app_env, container, traede):
    from functions.image_uploaded import image_uploaded

    container.upload_blob("6300/BLK/front.jpg", jpeg())
    image_uploaded(sdk_blob_client(container.container_name, "6300/BLK/front.jpg"))
    parts = jobs.components()
    assert list(parts.product_queue.pending()) == ["6300"]
    assert jobs.nightly().ok
    assert parts.product_queue.pending() == {}
    host = host_for(app_env)
    host.drain()  # the product's message finds nothing left to do
    assert traede.stats["products_received"] == 1


def test_a_product_traede_rejects_is_logged_with_the_reason_and_not_retried(app_env, container, traede, caplog):
    from functions.image_uploaded import image_uploaded

    container.upload_blob("5400/BLK/front.jpg", jpeg())
    container.upload_blob("5401/BLK/front.jpg", jpeg())
    traede.configure_faults(reject={"5400"})
    for item in ("5400", "5401"):
        image_uploaded(sdk_blob_client(container.container_name, f"{item}/BLK/front.jpg"))
    host = host_for(app_env)
    with caplog.at_level("ERROR"):
        host.drain()
    assert host.stats()["failures"] == 0 and host.stats()["poisoned"] == 0  # no retry: it cannot help
    assert sorted(traede.products) == ["5401"]
    assert any("rejected: traede: item '5400'" in r.getMessage() and "rejected by sandbox rule" in r.getMessage()
               for r in caplog.records)
    assert jobs.components().product_queue.pending() == {}  # settled: a retry would be rejected again


def test_the_host_polls_the_queues_often_enough_for_the_documented_delay():
    queues = json.loads((REPO / "host.json").read_text())["extensions"]["queues"]
    hours, minutes, seconds = (int(x) for x in queues["maxPollingInterval"].split(":"))
    assert hours * 3600 + minutes * 60 + seconds <= 5  # README: a product reaches TRAEDE within delay + 5 s


# -- the operator ----------------------------------------------------------------------------------

def test_flush_sends_every_pending_product_now(app_env, container, traede, capsys):
    from functions.image_uploaded import image_uploaded

    env = {**app_env, "PRODUCT_SYNC_DELAY_SECONDS": "300"}
    os.environ["PRODUCT_SYNC_DELAY_SECONDS"] = "300"
    jobs.reset()
    for item in ("7000", "7001"):
        container.upload_blob(f"{item}/BLK/front.jpg", jpeg(note=item))
        image_uploaded(sdk_blob_client(container.container_name, f"{item}/BLK/front.jpg"))
    assert cli_main(["flush", "--list"], env=env) == 0
    listed = capsys.readouterr()
    assert "7000\tpending for" in listed.out and "2 products pending" in listed.err
    assert traede.stats["sync_requests"] == 0
    assert cli_main(["flush"], env=env) == 0
    assert sorted(traede.products) == ["7000", "7001"] and traede.stats["sync_requests"] == 1
    assert cli_main(["flush", "--list"], env=env) == 0
    assert "0 products pending" in capsys.readouterr().err


def test_sync_item_goes_through_the_products_lock(app_env, container, traede, wallie):
    container.upload_blob("7100/BLK/front.jpg", jpeg())
    parts = jobs.components()
    assert parts.product_queue.locks.try_acquire("7100")
    result = {}
    thread = threading.Thread(target=lambda: result.update(code=cli_main(["sync", "--item", "7100"], env=app_env)))
    thread.start()
    time.sleep(1.5)
    assert traede.stats["sync_requests"] == 0  # waits for the holder
    parts.product_queue.locks.release("7100")
    thread.join(30)
    assert result["code"] == 0 and filenames(traede, "7100") == ["front.jpg"] and len(wallie.images) == 1
