"""A history that answers at any size (real Azurite): the newest run is found through ``index/latest`` in two
requests however many runs a day keeps, ``runs`` lists only the newest hours, the pointer is repaired when it
is missing, damaged or names a run that is gone, concurrent saves leave it on the newest run, and ``runs``
filters by kind, failure and time. Requests are counted by the SDK's hooks (``bench.history.Counter``): a count
of requests is exact, never a timing."""
from __future__ import annotations

import io
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from bench.history import counted_service, keep_runs
from shared.app.cli import main as cli_main
from shared.domain import Partner
from shared.runs.history import RunHistory
from shared.runs.names import FAILED, day_of, day_report_name, new_run_id, report_name
from shared.runs.report import Problem, SyncReport

pytestmark = pytest.mark.timeout(180)
DAY = datetime(2026, 5, 4, tzinfo=UTC)
END_OF_DAY = DAY + timedelta(days=1) - timedelta(seconds=1)


@pytest.fixture
def counted(azurite):
    service, counter = counted_service(azurite.connection_string)
    yield service, counter
    service.close()


@pytest.fixture
def day_of_runs(counted):
    """120 runs kept on one day, evenly (5 an hour), one in 20 failed, through ``RunHistory.save``."""
    service, counter = counted
    name = f"runs-{uuid.uuid4().hex[:10]}"
    ids = keep_runs(service, name, 120, day=DAY, failed_every=20)
    history = RunHistory(service, name, days=30, clock=lambda: END_OF_DAY)
    yield history, ids, counter
    service.delete_container(name)


def pointed(history: RunHistory) -> str | None:
    return history.pointer.read().run_id


def test_the_newest_run_costs_two_requests_and_runs_lists_only_the_newest_hours(day_of_runs):
    history, ids, counter = day_of_runs
    assert pointed(history) == ids[-1]  # eight threads saved them, in any order: the pointer is on the newest
    counter.reset()
    assert history.resolve("latest") == ids[-1]
    assert counter.requests == 2, counter.lines  # the pointer's HEAD and its report's HEAD
    counter.reset()
    assert history.load("latest")["run"] == ids[-1]
    assert counter.requests <= 3, counter.lines  # the pointer, then the report read
    counter.reset()
    assert [r.run_id for r in history.recent(20)] == ids[::-1][:20]
    # one listing of the day's hours, the four newest hours (5 runs each), and the pointer looked at
    assert counter.requests == 1 + 4 + 1, counter.lines
    day = f"runs/{day_of(DAY)}/"
    listings = [parse_qs(urlsplit(line.split(" ", 1)[1]).query) for line in counter.lines if "comp=list" in line]
    assert [(q["prefix"][0], q.get("delimiter")) for q in listings] == [
        (day, ["/"]), *((f"{day}{hour}/", None) for hour in ("23", "22", "21", "20"))]  # never the whole day
    counter.reset()
    failed = history.recent(3, failed=True)
    assert [r.run_id for r in failed] == [ids[n] for n in (119, 99, 79)] and all(not r.ok for r in failed)
    assert counter.requests == 2, counter.lines  # the day's hours (runs kept under the day) and its failed/ markers


def test_a_missing_damaged_or_dangling_pointer_is_repaired_from_the_listing(day_of_runs, caplog):
    history, ids, counter = day_of_runs
    history.pointer.blob.delete_blob()  # missing
    assert history.resolve("latest") == ids[-1] and pointed(history) == ids[-1]
    counter.reset()
    assert history.resolve("latest") == ids[-1] and counter.requests == 2  # repaired: two requests again

    history.pointer.blob.set_blob_metadata({"run": "not-a-run-id"})  # damaged
    assert history.load("latest")["run"] == ids[-1] and pointed(history) == ids[-1]

    history.client.delete_blob(report_name(ids[-1]))  # names a run whose report is gone (pruned, deleted by hand)
    assert history.resolve("latest") == ids[-2]
    assert pointed(history) == ids[-2]  # repaired backwards: it names a kept run again

    history.pointer.blob.set_blob_metadata({"run": ids[50]})  # behind: a save died between report and pointer
    assert history.resolve("latest") == ids[50]  # an index, trusted while its run is kept...
    assert history.recent(1)[0].run_id == ids[-2]
    assert pointed(history) == ids[-2]  # ...and moved forward by the next listing


def test_concurrent_saves_in_any_order_leave_the_pointer_on_the_newest_run(counted):
    service, _ = counted
    name = f"runs-{uuid.uuid4().hex[:10]}"
    history = RunHistory(service, name, days=30, clock=lambda: END_OF_DAY)
    service.create_container(name)
    ids = [new_run_id("upload", DAY + timedelta(minutes=n)) for n in range(40)]
    order = ids[:]
    random.Random(24).shuffle(order)

    def save(run_id: str) -> None:
        history.save(SyncReport(mode="image", context={"container": "c"}).finish(), None, kind="upload",
                     run_id=run_id)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(save, order))
    assert pointed(history) == max(ids)
    service.delete_container(name)


def test_a_report_kept_under_its_day_by_an_older_version_is_still_listed_and_read(day_of_runs):
    history, ids, _ = day_of_runs
    old = new_run_id("nightly", END_OF_DAY - timedelta(seconds=5))  # newer than every run of the fixture
    history.save(SyncReport(mode="full", context={"container": "c"}).finish(), None, kind="nightly", run_id=old)
    hourly = history.client.get_blob_client(report_name(old))
    data, meta = hourly.download_blob().readall(), hourly.get_blob_properties().metadata
    history.client.upload_blob(day_report_name(old), data, metadata=meta)  # as the version before kept it
    hourly.delete_blob()
    history.pointer.blob.delete_blob()
    assert [r.run_id for r in history.recent(2)] == [old, ids[-1]]
    assert history.load(old)["run"] == old and history.resolve("latest") == old


# -- runs --failed --since --kind, through the CLI -----------------------------------------------------------

def cli(*argv, env):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(list(argv), env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_runs_filters_by_failure_time_and_kind(storage_env, blob_service):
    name = f"runs-{uuid.uuid4().hex[:10]}"
    env = {**storage_env, "RUN_HISTORY_CONTAINER": name}
    history = RunHistory(blob_service, name, days=30)
    blob_service.create_container(name)
    now = datetime.now(UTC)
    kept = {}
    for label, age, kind, failed, stopped in (("old-failed", timedelta(hours=3), "upload", True, False),
                                              ("new-ok", timedelta(minutes=30), "upload", False, False),
                                              ("new-failed", timedelta(minutes=20), "cli-sync", True, False),
                                              ("new-stopped", timedelta(minutes=10), "nightly", False, True)):
        report = SyncReport(mode="full", context={"container": "c"})
        if failed:
            report.add_failed(Problem(Partner.TRAEDE, "1", None, f"{label}: HTTP 503"))
        if stopped:
            report.interrupted = "SIGTERM"
        kept[label] = history.save(report.finish(), None, kind=kind, run_id=new_run_id(kind, now - age))

    def listed(*argv):
        code, out, err = cli("runs", *argv, env=env)
        assert code == 0, err
        return [line.split()[0] for line in out.splitlines()]

    assert listed() == [kept[k] for k in ("new-stopped", "new-failed", "new-ok", "old-failed")]
    assert listed("--failed") == [kept[k] for k in ("new-stopped", "new-failed", "old-failed")]
    assert listed("--since", "1h") == [kept[k] for k in ("new-stopped", "new-failed", "new-ok")]
    assert listed("--failed", "--since", "1h", "--kind", "cli-sync") == [kept["new-failed"]]
    assert listed("--kind", "upload", "--since", "2h") == [kept["new-ok"]]
    assert listed("--since", "5m") == []
    code, out, err = cli("runs", "--failed", "--since", "5m", env=env)
    assert code == 0 and out == "" and "no failed or stopped runs kept" in err and "since" in err
    # a marker for each run that failed or was stopped, none for the run that went well
    assert sorted(b.name.rsplit("/", 1)[-1] for b in history.client.list_blobs(name_starts_with=FAILED)) == \
        sorted(kept[k] for k in ("old-failed", "new-failed", "new-stopped"))
