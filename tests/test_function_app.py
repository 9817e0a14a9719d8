"""The Functions app: indexing (what the host sees) and each handler called directly with real
azure.functions objects, against Azurite and the partner sandboxes."""
import json
import logging
import os
import subprocess
import sys
import uuid

import azurefunctions.extensions.bindings.blob as blob_ext
import pytest
from azure.functions.timer import TimerRequest
from azurefunctions.extensions.bindings.blob.blobClientConverter import BlobClientConverter

from devtools.images import jpeg
from shared.app.jobs import SyncFailed
from shared.catalog.records import image_id_for
from tests.host_objects import deleted_event, sdk_blob_client

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def binding(function, kind):
    return next(b for b in function.get_bindings() if b.type == kind)


def test_the_app_indexes_exactly_the_triggers(indexed):
    assert sorted(indexed) == ["contact_sheet", "image_deleted", "image_uploaded", "nightly_sync", "product_sync",
                               "resubmit", "resubmit_from_sheet", "sync_shard"]
    assert indexed["image_uploaded"].get_trigger().type == "blobTrigger"
    assert indexed["image_deleted"].get_trigger().type == "eventGridTrigger"
    assert indexed["nightly_sync"].get_trigger().type == "timerTrigger"
    assert indexed["product_sync"].get_trigger().type == "queueTrigger"


def test_product_queue_binding_reads_its_queue_name_from_a_setting(indexed):
    trigger = binding(indexed["product_sync"], "queueTrigger").get_dict_repr()
    assert trigger["queueName"] == "%PRODUCT_SYNC_QUEUE%" and trigger["connection"] == "IMAGES_STORAGE"


def test_blob_trigger_binding(indexed):
    trigger = binding(indexed["image_uploaded"], "blobTrigger").get_dict_repr()
    assert trigger["path"] == "%IMAGES_CONTAINER%/{name}"
    assert trigger["connection"] == "IMAGES_STORAGE"
    assert str(trigger["source"]) in ("EventGrid", "BlobSource.EVENT_GRID")
    # SDK-type binding: the worker hands over a BlobClient (deferred binding), never the image bytes.
    import inspect

    user_function = indexed["image_uploaded"].get_user_function()
    annotation = inspect.signature(user_function).parameters["client"].annotation
    assert annotation is blob_ext.BlobClient
    assert BlobClientConverter.check_input_type_annotation(annotation)


def test_timer_binding(indexed):
    timer = binding(indexed["nightly_sync"], "timerTrigger").get_dict_repr()
    assert timer["schedule"] == "%SYNC_SCHEDULE%"
    assert timer["useMonitor"] is True and timer.get("runOnStartup") in (False, None)


IMPORT_PROBE = r"""
import json, os, socket, sys, time
read = set()
class RecordingEnviron(type(os.environ)):
    def __getitem__(self, key):
        read.add(key); return super().__getitem__(key)
    def get(self, key, default=None):
        read.add(key); return super().get(key, default)
    def __contains__(self, key):
        read.add(key); return super().__contains__(key)
env = RecordingEnviron(os.environ._data, os.environ.encodekey, os.environ.decodekey,
                       os.environ.encodevalue, os.environ.decodevalue)
os.environ = env
def refuse(*a, **k): raise AssertionError("import opened a connection")
socket.socket.connect = refuse
socket.create_connection = refuse
started = time.perf_counter()
import function_app
seconds = time.perf_counter() - started
from shared.app import jobs
ours = sorted(k for k in read if isinstance(k, str) and k.startswith(("IMAGES_", "WALLIE_", "TRAEDE_", "SAS_", "SYNC_", "HTTP_",
                                               "LOG_LEVEL", "BLOB_TRIGGER", "IMAGE_PATH")))
source = [f for f in function_app.app.get_functions() if f.get_function_name() == "image_uploaded"][0]
trigger = [b for b in source.get_bindings() if b.type == "blobTrigger"][0].get_dict_repr()
print(json.dumps({"seconds": seconds, "settings_read": ours, "cached": jobs._cached is not None,
                  "source": str(getattr(trigger["source"], "value", trigger["source"]))}))
"""


def probe_import(extra_env):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IMAGES_", "WALLIE_", "TRAEDE_", "BLOB_TRIGGER"))}
    result = subprocess.run([sys.executable, "-c", IMPORT_PROBE], cwd=REPO, env={**env, **extra_env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_app_connects_nowhere_and_reads_only_the_trigger_source():
    probe = probe_import({})
    assert probe["settings_read"] == ["BLOB_TRIGGER_SOURCE"]
    assert probe["cached"] is False and probe["source"] == "EventGrid"
    print(f"cold import of function_app: {probe['seconds']:.2f}s")


def test_polling_source_is_a_setting():
    assert probe_import({"BLOB_TRIGGER_SOURCE": "LogsAndContainerScan"})["source"] == "LogsAndContainerScan"
    assert probe_import({"BLOB_TRIGGER_SOURCE": "nonsense"})["source"] == "EventGrid"


# -- the handlers, called directly --------------------------------------------------------------------

@pytest.fixture
def app_env(sync_env, monkeypatch):
    """The host passes settings as environment variables; so do these tests. A product queue and a
    state container of its own per test, and no waiting for the rest of a burst."""
    suffix = uuid.uuid4().hex[:10]
    env = {**sync_env, "PRODUCT_SYNC_QUEUE": f"products-{suffix}", "SYNC_STATE_CONTAINER": f"state-{suffix}",
           "PRODUCT_SYNC_DELAY_SECONDS": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def host(app_env):
    """The Functions host serving product_sync on the test's product queue."""
    from devtools.queue_host import QueueHost

    return QueueHost.for_function("product_sync", app_env["PRODUCT_SYNC_QUEUE"], visibility_timeout=2)


def seed_product(container, item="700", colours=("BLK",), kinds=("front", "back")):
    names = [f"{item}/{c}/{k}.jpg" for c in colours for k in kinds]
    for name in names:
        container.upload_blob(name, jpeg(note=name))
    return names


def test_image_uploaded_sends_the_image_now_and_queues_its_products_full_set(app_env, container, wallie, traede,
                                                                              host):
    from functions.image_uploaded import image_uploaded

    existing = seed_product(container)
    container.upload_blob("700/BLK/zoom.jpg", jpeg(note="new"))
    client = sdk_blob_client(container.container_name, "700/BLK/zoom.jpg")
    assert client.blob_name == "700/BLK/zoom.jpg"
    image_uploaded(client)
    assert list(wallie.images) == [image_id_for("700/BLK/zoom.jpg")]
    assert traede.products == {} and host.pending() == 1  # the product waits in the queue
    host.drain()
    assert sorted(i["filename"] for i in traede.products["700"]) == sorted(
        [n.rsplit("/", 1)[1] for n in existing] + ["zoom.jpg"])
    assert host.stats()["completed"] == 1


def test_image_uploaded_ignores_junk_without_raising(app_env, container, wallie, traede, caplog):
    from functions.image_uploaded import image_uploaded

    container.upload_blob("700/BLK/notes.txt", b"hello")
    with caplog.at_level(logging.INFO):
        image_uploaded(sdk_blob_client(container.container_name, "700/BLK/notes.txt"))
    assert wallie.stats["requests"] == 0 and traede.stats["requests"] == 0
    assert "not an image" in caplog.text


def test_image_uploaded_raises_on_a_wallie_outage_so_the_host_retries(app_env, container, wallie, monkeypatch):
    from functions.image_uploaded import image_uploaded

    monkeypatch.setenv("HTTP_MAX_RETRIES", "1")
    seed_product(container)
    wallie.configure_faults(outage=True)
    with pytest.raises(SyncFailed, match="failed after retries"):
        image_uploaded(sdk_blob_client(container.container_name, "700/BLK/front.jpg"))


def test_a_traede_outage_retries_the_product_message_then_poisons_it_naming_the_product(
        app_env, container, traede, host, monkeypatch):
    from functions.image_uploaded import image_uploaded

    monkeypatch.setenv("HTTP_MAX_RETRIES", "0")
    seed_product(container)
    traede.configure_faults(outage=True)
    image_uploaded(sdk_blob_client(container.container_name, "700/BLK/front.jpg"))
    host.max_dequeue_count = 3
    host.drain(timeout=30)
    assert host.stats()["failures"] == 3 and host.stats()["poisoned"] == 1
    assert [json.loads(m)["item"] for m in host.poisoned()] == ["700"]
    assert traede.stats["sync_requests"] == 3


def test_image_uploaded_logs_a_rejection_and_does_not_retry(app_env, container, wallie, caplog):
    from functions.image_uploaded import image_uploaded

    seed_product(container)
    wallie.configure_faults(reject={image_id_for("700/BLK/front.jpg")})
    with caplog.at_level(logging.INFO):
        image_uploaded(sdk_blob_client(container.container_name, "700/BLK/front.jpg"))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("rejected: wallie: item '700'" in r.getMessage() and "rejected by sandbox rule" in r.getMessage()
               for r in errors)


def test_image_deleted_resyncs_the_product_without_the_image(app_env, container, traede, host):
    from functions.image_deleted import image_deleted

    seed_product(container, kinds=("front", "back", "detail"))
    from shared.app.cli import main
    assert main(["sync"], env=app_env) == 0
    assert len(traede.products["700"]) == 3
    container.delete_blob("700/BLK/back.jpg")
    image_deleted(deleted_event(container.container_name, "700/BLK/back.jpg"))
    host.drain()
    assert sorted(i["filename"] for i in traede.products["700"]) == ["detail.jpg", "front.jpg"]


def test_deleting_the_last_image_empties_the_product_at_traede(app_env, container, traede, host):
    from functions.image_deleted import image_deleted

    container.upload_blob("701/front.jpg", jpeg())
    image_deleted(deleted_event(container.container_name, "701/front.jpg"))  # not yet deleted: full set of 1
    host.drain()
    assert len(traede.products["701"]) == 1
    container.delete_blob("701/front.jpg")
    image_deleted(deleted_event(container.container_name, "701/front.jpg"))
    host.drain()
    assert traede.products["701"] == []


def test_image_deleted_ignores_other_containers_and_event_types(app_env, container, traede):
    from functions.image_deleted import image_deleted

    image_deleted(deleted_event("someone-elses", "700/BLK/back.jpg"))
    image_deleted(deleted_event(container.container_name, "700/BLK/back.jpg",
                                event_type="Microsoft.Storage.BlobCreated"))
    assert traede.stats["requests"] == 0


def test_nightly_sync_runs_the_full_sync(app_env, container, wallie, traede, caplog):
    from functions.nightly_sync import nightly_sync

    seed_product(container, item="800")
    seed_product(container, item="801", colours=("RED", "BLU"))
    with caplog.at_level(logging.INFO):
        nightly_sync(TimerRequest(past_due=True))
    assert len(wallie.images) == 6 and sorted(traede.products) == ["800", "801"]
    assert "past due" in caplog.text and "full sync: 6 images, 2 products" in caplog.text


def test_nightly_sync_with_a_rejected_record_ends_as_a_failed_invocation(app_env, container, wallie, traede):
    from functions.nightly_sync import nightly_sync

    seed_product(container, item="800")
    seed_product(container, item="801")
    traede.configure_faults(reject={"801"})
    with pytest.raises(SyncFailed, match="1 rejected"):
        nightly_sync(TimerRequest())
    assert sorted(traede.products) == ["800"] and len(wallie.images) == 4
