"""A partner's lane against the real Wallie sandbox: a slow partner's backlog spills to disk instead of
holding the listing (or memory), and a stop leaves every queued record named as not sent."""
from __future__ import annotations

import time

from shared.config.settings import HttpSettings
from shared.domain import Partner
from shared.engine.lanes import Lane, Unit
from shared.engine.stopping import StopSignal
from shared.partners.wallie import WallieClient
from shared.runs.report import SyncReport
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

    name, batch_size = Partner.WALLIE, 2  # the dry run's printer stands in for a partner like this

    def send(self, payloads, guard=None):
        raise BrokenPipeError(32, "Broken pipe")

    def stats(self):
        return {"requests": 0, "retries": 0}

    def abort(self):
        pass

    def close(self):
        pass


def test_an_unexpected_error_in_a_lane_is_reported_per_record_not_lost():
    report = SyncReport()
    lane = Lane(BrokenOutput(), report, workers=2, stop=StopSignal())
    for batch in batches(3):
        lane.put(batch)
    lane.finish()
    assert len(report.failed) == 6 and all("BrokenPipeError" in p.reason for p in report.failed)
    report.images = 6
    assert report.accounting()["wallie"]["unaccounted"] == 0


def test_a_backlog_of_large_records_spills_by_bytes_long_before_the_count_bound(wallie):
    wallie.configure_faults(latency_ms=100)
    report = SyncReport()
    lane = Lane(client(wallie), report, workers=1, stop=StopSignal(), memory_records=1000, memory_bytes=20_000)
    long_url = "https://images.example/" + "x" * 3000  # each record ~3 KB: 20 records fit the count, 6 the bytes
    for batch in batches(10):
        for unit in batch:
            unit.payload["url"] = long_url
        lane.put(batch)
    held_bytes, spilled = lane.queue.peak_bytes, lane.queue.spilled
    lane.finish()
    assert 0 < held_bytes <= 20_000 and lane.queue.peak_records <= 6 and spilled >= 6
    assert report.delivered == {"wallie": 20} and len(wallie.images) == 20  # nothing lost on the way to disk


def test_a_batch_larger_than_the_byte_bound_still_moves(wallie):
    report = SyncReport()
    lane = Lane(client(wallie), report, workers=1, stop=StopSignal(), memory_bytes=10)
    for batch in batches(3):
        lane.put(batch)
    lane.finish()
    assert report.delivered == {"wallie": 6}


def test_the_byte_estimates_of_partner_records_are_what_they_hold_in_memory():
    """The lane's byte bound is only as good as the sizes it adds up: each payload's estimate is checked
    against what tracemalloc sees it keep alive once the listing has moved on (its records dropped)."""
    import gc
    import tracemalloc

    from bench.synthetic import SyntheticListing
    from shared.catalog.container import Catalog
    from shared.catalog.layout import PathLayout
    from shared.catalog.records import SignedImage
    from shared.config.settings import DEFAULT_PATH_PATTERN
    from shared.engine.lanes import approx_bytes
    from shared.partners.payloads import traede_product, wallie_record, wallie_record_bytes

    def signed_images(images, products):
        catalog = Catalog(None, PathLayout(DEFAULT_PATH_PATTERN), listing=SyntheticListing(images, products))
        return [SignedImage(e, f"https://acct.blob.core.windows.net/c/{e.blob_name}?sv=2024&sig={'A' * 44}%3D")
                for e in catalog.scan()]

    def held(build):  # bytes the built units keep alive after everything else is gone
        gc.collect()
        tracemalloc.start()
        units = build()
        gc.collect()
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return units, size

    wallie_units, wallie_held = held(lambda: [
        Unit(r, s.record.item_id, s.record.blob_name, size=wallie_record_bytes(r))
        for s in signed_images(2000, 400) for r in [wallie_record(s)]])

    def products():
        by_item = {}
        for s in signed_images(3000, 300):  # 10 images a product
            by_item.setdefault(s.record.item_id, []).append(s)
        return [Unit(p.body, item, None, size=p.size) for item, images in by_item.items()
                for p in [traede_product(item, images)]]

    traede_units, traede_held = held(products)
    for units, measured in ((wallie_units, wallie_held), (traede_units, traede_held)):
        estimated = sum(u.size for u in units)
        assert 0.8 * measured <= estimated <= 1.5 * measured, (estimated, measured)
        generic = sum(approx_bytes(u.payload) for u in units)  # the fallback for units without a size
        assert 0.8 * measured <= generic <= 2 * measured, (generic, measured)
