"""The run history: every run keeps its report in RUN_HISTORY_CONTAINER (real Azurite, real partner
sandboxes), ``image-sync runs`` lists and shows them, ``runs --item`` tells a product's story, old days are
pruned, and a history that cannot be written never fails a sync."""
from __future__ import annotations

import io
import json
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobServiceClient

from devtools.azurite import ACCOUNT_KEY
from devtools.images import jpeg
from shared.app import jobs
from shared.app.cli import main as cli_main
from shared.runs import parts
from shared.runs.history import RunHistory
from shared.runs.report import SyncReport
from tests.conftest import own_state
from tests.host_objects import deleted_event, sdk_blob_client

pytestmark = pytest.mark.timeout(180)
SECRETS = ("wallie-secret-pw", "traede-secret-token", "traede-secret-appkey", ACCOUNT_KEY)


@pytest.fixture
def env(sync_env, monkeypatch):
    """Settings as the host passes them, with a run-history container (and queue, state) of this test's own."""
    return own_state(sync_env, monkeypatch, queue=True)


@pytest.fixture
def runs(env, blob_service):
    return blob_service.get_container_client(env["RUN_HISTORY_CONTAINER"])


def run(argv, env):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(argv, env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def upload(container, *names):
    for name in names:
        container.upload_blob(name, jpeg(note=name), overwrite=True)


def stored_text(runs) -> str:
    """Everything the history container holds: every blob's bytes and metadata."""
    parts = []
    for blob in runs.list_blobs(include=["metadata"]):
        parts.append(blob.name + json.dumps(blob.metadata))
        parts.append(runs.download_blob(blob.name).readall().decode("utf-8"))
    return "\n".join(parts)


# -- every run keeps its report ---------------------------------------------------------------------------

def test_a_cli_sync_keeps_its_report_and_runs_lists_shows_and_exports_it(env, container, runs, traede, tmp_path):
    upload(container, "100001/BLK/front.jpg", "100001/BLK/back.jpg", "100002/front.jpg")
    container.upload_blob("100001/notes.txt", b"not an image")
    traede.configure_faults(reject={"100002"})
    code, _, err = run(["sync", "--report", str(tmp_path / "run.json")], env)
    assert code == 1 and "rejected: traede: item '100002'" in err
    run_id = re.search(r"run report kept: image-sync runs show (\S+)", err).group(1)
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{3}Z-cli-sync-[0-9a-f]{6}", run_id)

    code, out, err = run(["runs"], env)
    assert code == 0 and out.startswith(run_id)
    assert "cli-sync full" in out and "FAILED" in out and "images=3 products=2" in out
    assert "delivered: wallie=3 traede=1" in out and "rejected=1" in out and "skipped=1" in out
    assert "1 runs, newest first" in err

    code, out, _ = run(["runs", "show", "latest"], env)
    assert code == 0 and out.startswith(f"run {run_id}")
    assert "rejected: traede: item '100002'" in out and "rejected by sandbox rule" in out
    assert "skipped: '100001/notes.txt': not an image" in out and "extension '.txt'" in out

    # --json is the --report file again: same counts, same entries per partner (parts may reorder them)
    code, out, _ = run(["runs", "show", run_id, "--json"], env)
    kept, written = json.loads(out), json.loads((tmp_path / "run.json").read_text())
    assert code == 0 and kept["run"] == run_id and kept["kind"] == "cli-sync"
    for key in ("mode", "ok", "images", "products", "delivered", "rejected", "skipped", "accounting"):
        assert kept[key] == written[key], key
    assert {p: sorted(map(json.dumps, e)) for p, e in kept["sent"].items()} == \
        {p: sorted(map(json.dumps, e)) for p, e in written["sent"].items()}

    stored = stored_text(runs)
    assert "sig=" not in stored and "se=" not in stored
    assert not [s for s in SECRETS if s in stored]


def test_every_trigger_invocation_keeps_its_report(env, container, runs, wallie, traede):
    from devtools.queue_host import QueueHost
    from functions.image_deleted import image_deleted
    from functions.image_uploaded import image_uploaded
    from functions.nightly_sync import nightly_sync

    upload(container, "200/BLK/front.jpg", "200/BLK/back.jpg", "201/front.jpg")
    image_uploaded(sdk_blob_client(container.container_name, "200/BLK/front.jpg"))
    QueueHost.for_function("product_sync", env["PRODUCT_SYNC_QUEUE"], env["IMAGES_STORAGE"]).drain()
    container.delete_blob("200/BLK/back.jpg")
    image_deleted(deleted_event(container.container_name, "200/BLK/back.jpg"))
    nightly_sync(_timer())

    kinds = [r.kind for r in RunHistory(BlobServiceClient.from_connection_string(env["IMAGES_STORAGE"]),
                                        env["RUN_HISTORY_CONTAINER"], days=30).recent(10)]
    assert sorted(kinds) == ["delete", "nightly", "product", "upload"], kinds
    code, out, _ = run(["runs", "--item", "200"], env)
    assert code == 0
    story = out.split("\n20")  # newest first: one block per run
    assert "-nightly-" in story[0] and "traede: delivered" in story[0] and "a set of 1 images" in story[0]
    assert "-delete-" in story[1] and "traede: queued" in story[1]
    assert "-product-" in story[2] and "a set of 2 images" in story[2]
    assert "-upload-" in story[3] and "wallie: delivered: '200/BLK/front.jpg' as imageId" in story[3]
    assert "traede: queued" in story[3]


def _timer():
    from azure.functions.timer import TimerRequest

    return TimerRequest(past_due=False)


def test_the_nightly_fan_out_and_each_shard_keep_their_reports(env, container, runs, monkeypatch):
    from tests.test_shards import drain

    shard_env = {**env, "SYNC_SHARD_PRODUCTS": "2", "SYNC_SHARD_QUEUE": f"shards-{uuid.uuid4().hex[:10]}"}
    for key in ("SYNC_SHARD_PRODUCTS", "SYNC_SHARD_QUEUE"):
        monkeypatch.setenv(key, shard_env[key])
    upload(container, *[f"30{n}/front.jpg" for n in range(5)])
    jobs.conclude_nightly(jobs.nightly(), logging.getLogger("test"))
    drain(shard_env)
    code, out, _ = run(["runs", "--limit", "10"], env)
    assert code == 0
    assert out.count(" fan-out ") == 1 and out.count("-shard-") == 3, out
    code, out, _ = run(["runs", "--item", "304"], env)
    assert "-shard-" in out and "traede: delivered" in out and "-nightly-" not in out


def test_runs_item_reads_a_wide_run_by_its_parts_and_range(env, container, runs, monkeypatch):
    monkeypatch.setattr(parts, "ENTRIES_PER_PART", 10)  # a small run split like a large one
    items = [f"{4000 + n}" for n in range(parts.INDEX_LIMIT + 5)]
    upload(container, *[f"{item}/front.jpg" for item in items])
    assert run(["sync"], env)[0] == 0
    assert run(["sync", "--item", items[7]], env)[0] == 0
    names = [b.name for b in runs.list_blobs()]
    assert len([n for n in names if n.startswith("sent/") and "-cli-sync-" in n]) > 2  # split into parts
    assert len([n for n in names if n.startswith("wide/")]) == 1  # the full sync: one marker, not 55
    assert len([n for n in names if n.startswith("items/")]) == 1  # the --item sync: its one product
    code, out, _ = run(["runs", "--item", items[7]], env)
    assert code == 0 and out.count("traede: delivered") == 2 and out.count("wallie: delivered") == 2
    code, out, err = run(["runs", "--item", "9999"], env)  # outside the wide run's range, in no marker
    assert code == 0 and out == "" and "no kept run touched product '9999'" in err


def test_an_upload_that_is_skipped_is_in_the_products_history(env, container, runs):
    from functions.image_uploaded import image_uploaded

    container.upload_blob("500/notes.txt", b"not an image")
    image_uploaded(sdk_blob_client(container.container_name, "500/notes.txt"))
    code, out, _ = run(["runs", "--item", "500"], env)
    assert code == 0 and "storage: skipped '500/notes.txt': not an image" in out


# -- never a failed sync for the history's sake -----------------------------------------------------------

BAD_NAMES = ["-runs-", "runs--x"]  # names our settings let through, and Azure (and Azurite) refuse


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_history_that_cannot_be_written_never_fails_a_cli_sync(env, container, traede, bad):
    upload(container, "600/front.jpg")
    code, _, err = run(["sync"], {**env, "RUN_HISTORY_CONTAINER": bad})
    assert code == 0 and "600" in traede.products
    lines = [line for line in err.splitlines() if "run report not kept" in line]
    assert len(lines) == 1, err
    assert f"RUN_HISTORY_CONTAINER {bad!r}" in lines[0] and "the sync itself is not affected" in lines[0]
    assert "HttpResponseError" in lines[0]  # the reason, on the same line


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_history_that_cannot_be_written_never_fails_a_trigger(env, container, wallie, bad, monkeypatch, caplog):
    from functions.image_uploaded import image_uploaded

    upload(container, "610/front.jpg")
    monkeypatch.setenv("RUN_HISTORY_CONTAINER", bad)
    with caplog.at_level(logging.INFO):
        image_uploaded(sdk_blob_client(container.container_name, "610/front.jpg"))  # raises if the sync failed
    assert len(wallie.images) == 1
    lines = [r.getMessage() for r in caplog.records if "run report not kept" in r.getMessage()]
    assert len(lines) == 1 and bad in lines[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_empty_run_history_container_keeps_nothing(env, container, blob_service):
    upload(container, "700/front.jpg")
    off = {**env, "RUN_HISTORY_CONTAINER": ""}
    code, _, err = run(["sync"], off)
    assert code == 0 and "run report" not in err
    assert env["RUN_HISTORY_CONTAINER"] not in [c.name for c in blob_service.list_containers()]
    code, _, err = run(["runs"], off)
    assert code == 2 and err.startswith("configuration error: RUN_HISTORY_CONTAINER is empty")


def test_a_dry_run_keeps_no_report(env, container, runs):
    upload(container, "710/front.jpg")
    assert run(["sync", "--dry-run"], env)[0] == 0
    code, out, err = run(["runs"], env)
    assert code == 0 and out == "" and "no runs kept" in err


# -- the operator's mistakes: one line, exit 2 -------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    (["runs", "show", "20260101T000000.000Z-nightly-abcdef"], "no run '20260101T000000.000Z-nightly-abcdef' is kept"),
    (["runs", "show", "yesterday"], "'yesterday' is not a run id: expected one like"),
    (["runs", "sheet", "latest"], "no run is kept in RUN_HISTORY_CONTAINER"),
    (["runs", "sheet"], "runs sheet: give a RUN_ID (or latest) or --item ID"),
    (["runs", "sheet", "latest", "--item", "1"], "runs sheet: give a RUN_ID (or latest) or --item ID"),
    (["runs", "--limit", "0"], "--limit 0: expected a whole number of runs >= 1"),
    (["runs", "show", "20261399T020000.123Z-nightly-1a2b3c"], "is not a run id: month must be in 1..12"),
    (["runs", "sheet", "20260230T020000.123Z-nightly-1a2b3c", "-o", "s.html"], "is not a run id: day is out of"),
    (["runs", "--kind", "nightlly"], "--kind 'nightlly': expected one of nightly, shard"),
    (["runs", "sheet", "--item", "1", "-o", "/no/such/folder/sheet.html"], "-o /no/such/folder/sheet.html: the folder"),
])
def test_runs_mistakes_are_one_line_and_exit_2(env, argv, expected):
    code, out, err = run(argv, env)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err, err


def test_a_product_named_dot_keeps_its_index_and_the_report(env, blob_service):
    """'.' and '..' are dropped from URLs by web clients: the index entry encodes them; and an index entry
    storage refuses never costs the run its report."""
    store = RunHistory(blob_service, env["RUN_HISTORY_CONTAINER"], days=30)
    report = SyncReport(mode="product", queued=[".", "..", "ok"], context={"container": "product-images"}).finish()
    run_id = store.save(report, None, kind="product")
    assert [r.run_id for r in store.recent(5)] == [run_id]
    for item in (".", "..", "ok"):
        assert [h.run_id for h in store.item_runs(item)] == [run_id], item


# -- retention --------------------------------------------------------------------------------------------

def test_retention_deletes_whole_days_older_than_run_history_days_and_runs_at_most_hourly(env, blob_service):
    name = env["RUN_HISTORY_CONTAINER"]
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    ages = {"old-year": 400, "old-month": 45, "edge-out": 31, "edge-in": 30, "new": 0}
    for label, days in ages.items():
        report = SyncReport(mode="full", queued=[label], context={"container": "product-images"}).finish()
        RunHistory(blob_service, name, days=30, clock=lambda d=days: now - timedelta(days=d)).save(
            report, None, kind=label)
    store = RunHistory(blob_service, name, days=30, clock=lambda: now)
    before = [b.name for b in store.client.list_blobs()]
    assert store.prune(force=True) == 3 * 3  # head, part and marker of the 400-, 45- and 31-day-old runs
    left = [b.name for b in store.client.list_blobs()]
    assert sorted(r.kind for r in store.recent(10)) == ["edge-in", "new"]
    assert len(left) == len(before) - 9
    assert store.prune() == 0  # pruned in this process less than an hour ago: not again
