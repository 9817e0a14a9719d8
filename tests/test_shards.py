"""Fan-out of the nightly sync: the timer enqueues shards to a real Azurite queue, the queue handler runs
each one, and the partners end up exactly as after a single-process full sync."""
import json
import logging
import os
import uuid

import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from devtools.images import jpeg
from shared.app import jobs
from shared.app.jobs import SyncFailed
from shared.config.settings import Settings
from shared.coordination.shards import Shard, group_key
from shared.errors import ConfigError


@pytest.fixture
def shard_env(sync_env, monkeypatch):
    """The host passes settings as environment variables; a queue of its own per test."""
    env = {**sync_env, "SYNC_SHARD_PRODUCTS": "4", "SYNC_SHARD_QUEUE": f"shards-{uuid.uuid4().hex[:10]}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def queue_of(env):
    return QueueClient.from_connection_string(env["IMAGES_STORAGE"], env["SYNC_SHARD_QUEUE"],
                                              message_decode_policy=TextBase64DecodePolicy())


def drain(env):
    """What the Functions host does with the queue: every message, decoded, to the handler."""
    from functions.sync_shard import sync_shard

    queue = queue_of(env)
    handled = []
    for message in queue.receive_messages(max_messages=32, visibility_timeout=60):
        sync_shard(QueueMessage(id=message.id, body=message.content.encode("utf-8"),
                                dequeue_count=message.dequeue_count, pop_receipt=message.pop_receipt))
        queue.delete_message(message)
        handled.append(json.loads(message.content))
    queue.close()
    return handled


def seed(container):
    """Products whose folders sort tricky ("100-a/" < "100/" < "1000/"), uneven image counts, junk, and
    and blobs whose itemid metadata disagrees with their folder (skipped by the catalog, in both runs)."""
    names = []
    items = ["100", "100-a", "1000", "101"] + [f"2{n:02d}" for n in range(22)]
    for n, item in enumerate(items):
        for c, colour in enumerate(("BLK", "WHT")[: 1 + n % 2]):
            for kind in ("front", "back", "detail")[: 1 + (n + c) % 3]:
                names.append(f"{item}/{colour}/{kind}.jpg")
    names.append("205/lifestyle model.jpg")  # no colour folder
    for name in names:
        container.upload_blob(name, jpeg(note=name))
    container.upload_blob("203/notes.txt", b"not an image")
    container.upload_blob("stray-upload.jpg", jpeg(note="stray"))  # no metadata: skipped
    # itemid metadata naming another product: skipped alike by the single-process and the sharded run
    container.upload_blob("210/BLK/extra.jpg", jpeg(note="moved"), metadata={"itemid": "101"})
    container.upload_blob("flat-100a.jpg", jpeg(note="flat"), metadata={"itemid": "100-a", "colorid": "RED"})
    return len(items), len(names)


def partner_state(wallie, traede):
    """Everything the partners hold, minus the SAS query (signed at a different second per run)."""
    images = {i: {**r, "url": r["url"].split("?")[0]} for i, r in wallie.images.items()}
    products = {p: [{**i, "url": i["url"].split("?")[0]} for i in imgs] for p, imgs in traede.products.items()}
    return images, products


def test_fan_out_yields_exactly_the_single_process_result(container, shard_env, wallie, traede, caplog):
    from functions.nightly_sync import nightly_sync

    products, images = seed(container)
    shards = -(-(products + 2) // 4)  # two top-level blobs are groups of their own; 4 groups a shard
    assert jobs.nightly({**os.environ, "SYNC_SHARD_PRODUCTS": "0"}).ok  # the reference: one process, whole container
    reference = partner_state(wallie, traede)
    assert len(reference[0]) == images and len(reference[1]) == products
    wallie.reset()
    traede.reset()

    jobs.components().catalog.page_size = 7  # many pages: shards start mid-page, products straddle pages
    with caplog.at_level(logging.INFO):
        nightly_sync(TimerRequest())
    assert f"{shards} shards enqueued" in caplog.text
    assert wallie.stats["requests"] == 0 and traede.stats["requests"] == 0  # the timer only plans

    caplog.clear()
    with caplog.at_level(logging.INFO):
        handled = drain(shard_env)
    assert len(handled) == shards and {m["shard"] for m in handled} == set(range(shards))
    assert all(len(json.dumps(m)) < 1000 for m in handled)
    assert partner_state(wallie, traede) == reference
    # each image and each product was sent by exactly one shard
    assert wallie.stats["images_received"] == images
    assert traede.stats["products_received"] == products
    skipped = [line for line in caplog.text.splitlines() if "metadata itemid" in line and "disagrees" in line]
    assert len(skipped) == 2  # the shards that listed them said why


def test_shard_ranges_partition_every_key(container, shard_env):
    seed(container)
    jobs.components().catalog.page_size = 5
    from shared.coordination.shards import plan

    parts = jobs.components()
    shards, groups, listed = plan(parts.catalog, 3, container.container_name)
    assert groups == len({group_key(b.name, "/") for b in container.list_blobs()})
    for key in ["", "0/", "100-a/", "100/", "1000/", "101/", "150/", "299/", "zzz/", "stray-upload.jpg"]:
        assert sum(s.owns(key) for s in shards) == 1, key
    for shard in shards:
        assert Shard.from_json(shard.to_json()) == shard


def test_small_catalog_syncs_in_the_timer_and_enqueues_nothing(container, shard_env, wallie, traede, caplog,
                                                               monkeypatch):
    from functions.nightly_sync import nightly_sync

    monkeypatch.setenv("SYNC_SHARD_PRODUCTS", "2000")
    products, images = seed(container)
    with caplog.at_level(logging.INFO):
        nightly_sync(TimerRequest())
    assert f"full sync: {images} images, {products} products" in caplog.text
    from azure.core.exceptions import ResourceNotFoundError

    with pytest.raises(ResourceNotFoundError):
        queue_of(shard_env).get_queue_properties()


def test_a_layout_not_led_by_the_item_id_is_synced_in_one_process(container, shard_env, wallie, traede,
                                                                   monkeypatch, caplog):
    from functions.nightly_sync import nightly_sync

    monkeypatch.setenv("IMAGE_PATH_PATTERN", "{color_id}/{item_id}/{name}")
    for n in range(9):
        container.upload_blob(f"BLK/{300 + n}/front.jpg", jpeg(note=str(n)))
    with caplog.at_level(logging.INFO):
        nightly_sync(TimerRequest())
    assert "full sync: 9 images, 9 products" in caplog.text and len(traede.products) == 9


def test_a_failing_shard_raises_so_the_host_retries_it_then_poisons_it(container, shard_env, wallie, traede):
    from functions.nightly_sync import nightly_sync

    seed(container)
    nightly_sync(TimerRequest())
    traede.configure_faults(outage=True)
    queue = queue_of(shard_env)
    message = next(iter(queue.receive_messages(max_messages=1)))
    from functions.sync_shard import sync_shard

    with pytest.raises(SyncFailed, match="failed after retries"):
        sync_shard(QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=5))
    with open("host.json") as f:
        assert json.load(f)["extensions"]["queues"]["maxDequeueCount"] == 5  # then <queue>-poison


def test_a_rejected_record_in_a_shard_does_not_retry(container, shard_env, wallie, traede):
    from functions.nightly_sync import nightly_sync

    seed(container)
    nightly_sync(TimerRequest())
    traede.configure_faults(reject={"100"})
    handled = drain(shard_env)  # does not raise: a retry would be rejected again
    assert len(handled) == 7 and "100" not in traede.products and "1000" in traede.products


def test_the_queue_trigger_binding():
    import azure.functions as func

    from functions.sync_shard import bp

    app = func.FunctionApp()  # get_functions() may run once per app: not function_app.app's turn here
    app.register_functions(bp)
    (function,) = app.get_functions()
    assert function.get_function_name() == "sync_shard"
    trigger = function.get_trigger()
    assert trigger.type == "queueTrigger"
    data = trigger.get_dict_repr()
    assert data["queueName"] == "%SYNC_SHARD_QUEUE%" and data["connection"] == "IMAGES_STORAGE"


def test_shard_settings_are_checked():
    base = {"IMAGES_STORAGE": "UseDevelopmentStorage=true"}
    settings = Settings.from_env(base)
    assert (settings.sync_shard_products, settings.sync_shard_queue) == (2000, "image-sync-shards")
    with pytest.raises(ConfigError, match="SYNC_SHARD_PRODUCTS='-1' is invalid: expected a whole number"):
        Settings.from_env({**base, "SYNC_SHARD_PRODUCTS": "-1"})
    for bad in ("Shards", "a", "x--y", "-shards", "s" * 57):
        with pytest.raises(ConfigError, match="SYNC_SHARD_QUEUE=.* is not a valid queue name"):
            Settings.from_env({**base, "SYNC_SHARD_QUEUE": bad})


class NoToken:
    """A token credential that is never asked for a token (no request is made)."""

    def get_token(self, *scopes, **kwargs):
        raise AssertionError("no request expected")


def test_identity_mode_needs_the_queue_endpoint_to_fan_out():
    from shared.storage.clients import queue_client

    storage = Settings.from_env({"IMAGES_STORAGE__blobServiceUri": "https://acct.blob.core.windows.net"}).storage
    with pytest.raises(ConfigError, match="IMAGES_STORAGE__queueServiceUri is not set"):
        queue_client(storage, "image-sync-shards", credential=NoToken())
    by_account = Settings.from_env({"IMAGES_STORAGE__accountName": "acct"}).storage
    client = queue_client(by_account, "image-sync-shards", credential=NoToken())
    assert client.url == "https://acct.queue.core.windows.net/image-sync-shards"


def test_a_bad_message_fails_loudly():
    with pytest.raises(ValueError, match="not a shard message"):
        Shard.from_json('{"hello": 1}')
