"""A partner's lane against the real Wallie sandbox: a slow partner's backlog spills to disk instead of
holding the listing (or memory), and a stop leaves every queued record named as not sent."""
from __future__ import annotations

import time

from shared.engine.lanes import Lane, Unit
from shared.runs.report import SyncReport
from shared.config.settings import HttpSettings
from shared.engine.stopping import StopSignal
from shared.partners.wallie import WallieClient
from tests.conftest import WALLIE_CREDENTIALS


def batches(count, size=2):
    return [[Unit({"imageId": f"00000000-0000-5000-8000-{b * size + i:012d}", "itemId": str(b),
                   "url": f"https://images.example/{b}/{i}.jpg"}, str(b), f"{b}/{i}.jpg") for i in range(size)]
            for b in range(count)]


def client(wallie):
    return WallieClient(wallie.url, **WALLIE_CREDENTIALS, http=HttpSettings(timeout_seconds=5, backoff_seconds=0.01))


def test_a_slow_partners_backlog_spills_to_disk_and_the_producer_never_waits(wallie):
    wallie.configure_faults(latency_ms=100)
    report = SyncReport()
    lane = Lane(client(wallie), report, workers=1, stop=StopSignal(), memory_records=4)
    started = time.monotonic()
    held = []
    for batch in batches(15):
        lane.put(batch)
        held.append(len(lane.queue._items))
    put_seconds = time.monotonic() - started
    lane.finish()
    assert put_seconds < 0.5, "putting work on a slow partner's lane must not wait for the partner"
    assert max(held) <= 2 and lane.queue.spilled >= 12  # at most four records in memory, the rest on disk
    assert report.delivered == {"wallie": 30} and len(wallie.images) == 30


def test_a_stopped_run_names_every_record_it_did_not_send(wallie):
    wallie.configure_faults(latency_ms=300)
    report = SyncReport()
    stop = StopSignal()
    lane = Lane(client(wallie), report, workers=1, stop=stop, memory_records=4)
    for batch in batches(6):
        lane.put(batch)
    time.sleep(0.4)
    stop.request("SIGTERM")
    lane.finish()
    not_sent = [p for p in report.failed if p.reason == "not sent: the run was stopped (SIGTERM) before it was sent"]
    assert report.delivered["wallie"] + len(not_sent) == 12 and not_sent
    assert all(p.retryable for p in not_sent)  # a later run sends them


class BrokenOutput:
    """A stand-in partner whose output breaks (a closed pipe under --dry-run, or a bug)."""

    name, unit, batch_size = "printer", "images", 2

    def send(self, payloads, guard=None):
        raise BrokenPipeError(32, "Broken pipe")


def test_an_unexpected_error_in_a_lane_is_reported_per_record_not_lost():
    report = SyncReport()
    lane = Lane(BrokenOutput(), report, workers=2, stop=StopSignal())
    for batch in batches(3):
        lane.put(batch)
    lane.finish()
    assert len(report.failed) == 6 and all("BrokenPipeError" in p.reason for p in report.failed)
    report.images = 6
    assert report.accounting()["printer"]["unaccounted"] == 0
