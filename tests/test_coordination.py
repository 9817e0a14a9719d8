"""The coordination primitives (pending marks, product locks, full-sync fences) against real Azurite."""
from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.coordination import FENCES, FullSyncFences, PendingMarks, ProductLocks, StateContainer


@pytest.fixture
def state(blob_service):
    name = f"state-{uuid.uuid4().hex[:10]}"
    yield StateContainer(blob_service, name)  # created on first use, as in a fresh deployment
    blob_service.delete_container(name)


def test_the_first_request_makes_a_product_pending_later_ones_only_bump_it(state):
    marks = PendingMarks(state)
    assert marks.request("100") is True
    first = marks.etag("100")
    assert marks.request("100") is False
    assert marks.etag("100") != first  # the bump is visible to a send under way


def test_a_mark_bumped_after_it_was_read_is_not_cleared(state):
    marks = PendingMarks(state)
    marks.request("100")
    read_before_listing = marks.etag("100")
    marks.request("100")  # an upload lands while the product is being sent
    assert marks.clear("100", read_before_listing) is False and marks.etag("100") is not None
    assert marks.clear("100", marks.etag("100")) is True and marks.etag("100") is None
    assert marks.request("100") is True  # pending again: a new message is due


def test_concurrent_requests_queue_exactly_one_message(state):
    marks = PendingMarks(state)
    with ThreadPoolExecutor(max_workers=24) as pool:
        created = list(pool.map(lambda _: marks.request("200"), range(64)))
    assert created.count(True) == 1


def test_names_with_any_characters_round_trip(state):
    marks = PendingMarks(state)
    for item in ("a/b", "ü 100", "x%2F", "?#&"):
        assert marks.request(item)
    assert sorted(marks.snapshot()) == sorted(["a/b", "ü 100", "x%2F", "?#&"])


def test_a_mark_pending_far_too_long_asks_for_a_new_message(state):
    """A message that died with its instance (or went to the poison queue) must not strand the product."""
    marks = PendingMarks(state)
    marks.request("300")
    assert marks.request("300", stale_after=60) is False
    time.sleep(2.1)  # creation time has whole seconds
    assert marks.request("300", stale_after=1) is True


def test_due_takes_only_products_whose_burst_has_settled(state):
    marks = PendingMarks(state)
    for item in ("a", "b", "c"):
        marks.request(item)
    assert marks.due(30, 10) == []
    time.sleep(2.1)
    marks.request("d")
    assert sorted(marks.due(1, 10, exclude=["b"])) == ["a", "c"]
    assert len(marks.due(1, 1)) == 1


def test_a_product_lock_has_one_holder_at_a_time(state):
    mine, theirs = ProductLocks(state, 15), ProductLocks(state, 15)
    assert mine.try_acquire("400") and not theirs.try_acquire("400")
    assert state.listing("locks/")[0].lease.state == "leased"
    assert mine.held_by_anyone() == {"400"}
    mine.release("400")
    assert theirs.try_acquire("400")
    theirs.release("400")
    assert mine.held_by_anyone() == set()


def test_a_held_lock_is_renewed_and_a_crashed_holders_lock_runs_out(state):
    holder, other = ProductLocks(state, 15), ProductLocks(state, 15)
    assert holder.try_acquire("500")
    time.sleep(4)
    assert holder.remaining("500") > 10  # renewed in the background (every 2.5 s for a 15 s lease)
    with holder._lock:
        holder._held.clear()  # the holder crashes: nobody renews, nobody releases
    started = time.monotonic()
    while not other.try_acquire("500"):
        assert time.monotonic() - started < 20, "the dead holder's lease never ran out"
        time.sleep(0.5)
    assert 8 < time.monotonic() - started < 17
    other.release("500")


def test_a_lock_that_could_not_be_renewed_reports_no_time_left(state):
    locks = ProductLocks(state, 15)
    assert locks.try_acquire("600")
    assert 13 < locks.remaining("600") <= 15
    locks._held["600"].renewed -= 16  # as if every renewal since had failed
    assert locks.remaining("600") <= 0
    locks.release("600")


def test_fences_are_ordered_and_shards_of_one_run_do_not_wait_for_each_other(state):
    fences = FullSyncFences(state)
    a = fences.open("night-1", "shard 1/2")
    b = fences.open("night-1", "shard 2/2")
    c = fences.open("cli-7", "CLI sync")
    try:
        assert [f.what for f in fences.active()] == ["shard 1/2", "shard 2/2", "CLI sync"]
        assert fences.older_than(b) == [] and fences.older_than(a) == []
        assert [f.what for f in fences.older_than(c)] == ["shard 1/2", "shard 2/2"]
    finally:
        for fence in (a, b, c):
            fence.close()
    assert fences.active() == []


def test_an_expired_fence_is_ignored(state):
    fences = FullSyncFences(state)
    fence = fences.open("run", "crashed sync")
    fence._stop.set()  # its process died: nobody refreshes it
    state.blob(fence.name).set_blob_metadata({"run": "run", "what": "crashed", "expires": f"{time.time() - 1:.0f}"})
    assert fences.active() == []
    assert [b.name for b in state.listing(FENCES)] == [fence.name]


def test_a_missing_state_container_is_created_on_first_write_only(state, blob_service):
    assert state.listing("pending/") == []  # reading creates nothing
    assert not blob_service.get_container_client(state.name).exists()
    PendingMarks(state).request("700")
    assert blob_service.get_container_client(state.name).exists()


def test_many_threads_never_hold_one_lock_together(state):
    locks = [ProductLocks(state, 15) for _ in range(6)]
    inside, overlaps = [0], []
    guard = threading.Lock()

    def contend(n):
        for _ in range(5):
            if locks[n].try_acquire("800"):
                with guard:
                    inside[0] += 1
                    overlaps.append(inside[0])
                time.sleep(0.02)
                with guard:
                    inside[0] -= 1
                locks[n].release("800")

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(contend, range(6)))
    assert overlaps and max(overlaps) == 1
