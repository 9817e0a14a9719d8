"""The coordination primitives (pending marks, product locks, full-sync fences) against real Azurite."""
from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.coordination.leases import FullSyncFences, ProductLocks
from shared.coordination.marks import PendingMarks
from shared.coordination.state import FENCES, StateContainer


@pytest.fixture
def state(blob_service):
    name = f"state-{uuid.uuid4().hex[:10]}"
    yield StateContainer(blob_service, name)  # created on first use, as in a fresh deployment
    blob_service.delete_container(name)


def test_the_first_request_makes_a_product_pending_later_ones_only_bump_it(state):
    marks = PendingMarks(state)
    gen = marks.request("100").gen
    assert gen  # the caller queues a message for this generation of the mark
    first = marks.read("100")
    assert marks.request("100") is None
    assert marks.read("100").etag != first.etag  # the bump is visible to a send under way
    assert marks.read("100").gen == gen  # ...and keeps the mark's generation


def test_a_mark_bumped_after_it_was_read_is_not_cleared(state):
    marks = PendingMarks(state)
    gen = marks.request("100").gen
    read_before_listing = marks.read("100")
    marks.request("100")  # an upload lands while the product is being sent
    assert marks.clear("100", read_before_listing) is False and marks.read("100") is not None
    assert marks.clear("100", marks.read("100")) is True and marks.read("100") is None
    assert marks.settled("100") == gen  # what a late message of this mark finds: it was settled
    again = marks.request("100").gen
    assert again == gen + 1  # pending again: a new message is due, for a newer generation


def test_concurrent_requests_queue_exactly_one_message(state):
    marks = PendingMarks(state)
    with ThreadPoolExecutor(max_workers=24) as pool:
        created = list(pool.map(lambda _: marks.request("200"), range(64)))
    assert len([gen for gen in created if gen]) == 1


def test_names_with_any_characters_round_trip(state):
    marks = PendingMarks(state)
    for item in ("a/b", "ü 100", "x%2F", "?#&"):
        assert marks.request(item)
    assert sorted(marks.snapshot()) == sorted(["a/b", "ü 100", "x%2F", "?#&"])


def test_a_mark_pending_far_too_long_asks_for_a_new_message(state):
    """A message that died with its instance (or went to the poison queue) must not strand the product."""
    marks = PendingMarks(state)
    gen = marks.request("300").gen
    assert marks.request("300", stale_after=60) is None
    time.sleep(2.1)  # creation time has whole seconds
    rescued = marks.request("300", stale_after=1)
    assert rescued.gen == gen and rescued.created_etag is None  # a new message for the same mark, not a new mark


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


def test_a_crashed_syncs_fence_lapses_with_its_lease_and_a_live_one_is_renewed(state):
    """A fence is a lease: nobody's clock decides when it is dead. The holder's renewals keep it up past its
    lease; a holder that stops renewing (its process died) loses it within FULL_SYNC_FENCE_SECONDS."""
    fences = FullSyncFences(state, seconds=15)
    alive = fences.open("run-alive", "nightly sync")
    crashed = fences.open("run-crashed", "CLI sync")
    crashed._stop.set()  # its process died: nobody renews it, nobody removes it
    try:
        holders = {f.run: f for f in fences.active()}
        assert set(holders) == {"run-alive", "run-crashed"}
        line = holders["run-crashed"].holder()
        assert "CLI sync, run run-crashed on host " in line and f"(pid {os.getpid()})" in line
        assert "started " in line and "last renewed 0 s ago" in line
        started = time.monotonic()
        while len(fences.active()) > 1:
            assert time.monotonic() - started < 25, "the crashed sync's fence never lapsed"
            time.sleep(0.5)
        assert 8 < time.monotonic() - started < 20
        assert [f.run for f in fences.active()] == ["run-alive"]  # renewed past its 15 s lease
        assert alive.remaining() > 5 and crashed.remaining() == 0
        assert [b.name for b in state.listing(FENCES)] == sorted([alive.name, crashed.name])  # lapsed, not gone
    finally:
        alive.close()
    assert fences.active() == []


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


def test_a_mark_that_vanished_without_being_settled_is_not_taken_as_settled(state, blob_service):
    """The container deleted between a bump and the sender's clear takes the bump with it: the sender must
    send the product once more rather than take it as settled."""
    marks = PendingMarks(state)
    marks.request("900")
    read_before_listing = marks.read("900")
    state.blob("pending/900").delete_blob()  # gone, and nobody settled it
    assert marks.clear("900", read_before_listing) is False


def test_a_failed_enqueue_withdraws_only_the_mark_this_call_made(state):
    marks = PendingMarks(state)
    mine = marks.request("910")
    marks.withdraw("910", mine)
    assert marks.read("910") is None and marks.settled("910") is None  # gone, and nothing noted as settled
    mine = marks.request("911")
    marks.request("911")  # another upload bumps it meanwhile: it counts on this mark's message
    marks.withdraw("911", mine)
    assert marks.read("911") is not None  # kept: its next change after the stale time queues a message
    stale = marks.request("911", stale_after=0)
    marks.withdraw("911", stale)  # a message for an existing mark: not this call's mark to withdraw
    assert marks.read("911") is not None


def test_a_storage_error_about_something_else_than_the_lease_does_not_end_it():
    """A 503 or a throttle on renewal is storage in trouble, not the lease gone: the lease counts down; only
    storage saying the lease or its blob is gone ends it at once."""
    from azure.core.exceptions import HttpResponseError

    from shared.coordination.leases import _Lease

    class Renewal:  # stands in for the SDK's lease client, answering as storage would
        def __init__(self, status):
            self.status = status

        def renew(self):
            error = HttpResponseError(message=f"HTTP {self.status}")
            error.status_code = self.status
            raise error

    busy = _Lease("a lock", Renewal(503), 15, time.monotonic())
    assert busy.renew() is False and not busy.lost and busy.remaining() > 10
    gone = _Lease("a lock", Renewal(409), 15, time.monotonic())
    assert gone.renew() is False and gone.lost and gone.remaining() == 0


def test_a_lock_left_by_a_dead_holder_is_known_to_the_next_one(state):
    """A holder that releases deletes the lock's blob; one that died leaves it: the next holder knows that what
    the dead one had in flight may still land (and sends the product again later)."""
    first, second = ProductLocks(state, 15), ProductLocks(state, 15)
    assert first.try_acquire("920") and not first.inherited("920")
    first.release("920")
    assert second.try_acquire("920") and not second.inherited("920")  # released: a clean start
    with second._lock:
        second._held.clear()  # the holder dies: no release, no renewal
    third = ProductLocks(state, 15)
    started = time.monotonic()
    while not third.try_acquire("920"):
        assert time.monotonic() - started < 25
        time.sleep(0.5)
    assert third.inherited("920")
    third.release("920")


def test_a_renewal_that_races_the_release_is_not_reported_as_a_lost_lock(state, caplog):
    """The keeper renews from a list taken before a release popped the lock: storage then says the blob is gone.
    That is the release, not a lost lock: nothing is logged, and a new holder of the product is not disturbed."""
    locks = ProductLocks(state, 15)
    assert locks.try_acquire("930")
    with locks._lock:
        racing = locks._held["930"]  # what the keeper holds in its list while release runs
    locks.release("930")
    assert locks.try_acquire("930")  # the product is taken again at once (a new burst)
    with caplog.at_level("WARNING", logger="shared.coordination.leases"):
        assert racing.renew() is False
    assert not [r for r in caplog.records if "lost" in r.getMessage()], caplog.text
    assert not locks.lost("930") and locks.remaining("930") > 10
    locks.release("930")


def test_a_lock_blob_another_sender_has_just_created_is_not_taken_for_a_dead_holders(state):
    """Two senders race for a product whose lock blob is gone: one creates it, the other leases it first. The
    blob was never held, so nothing can be in flight: the winner is no heir, and no extra send is queued."""
    from shared.coordination.state import LOCKS, state_blob

    state.create_empty(state_blob(LOCKS, "940"))  # the racing sender's create, just before its own lease
    locks = ProductLocks(state, 15)
    assert locks.try_acquire("940") and not locks.inherited("940")
    locks.release("940")


def test_a_burst_only_bumps_the_mark_in_place_with_two_requests(azurite, blob_service):
    """Each upload of a burst after the first finds the mark in place: one look and one conditional write,
    nothing else (no failed create, no read of the settled generation): bursts are what the state container
    serves most."""
    from azure.storage.blob import BlobServiceClient

    from tests.storage_proxy import StorageProxy

    proxy = StorageProxy(azurite)
    name = f"state-{uuid.uuid4().hex[:10]}"
    try:
        with BlobServiceClient.from_connection_string(proxy.connection_string) as service:
            marks = PendingMarks(StateContainer(service, name))
            assert marks.request("950") is not None
            before = len(proxy.requests)
            for _ in range(5):
                assert marks.request("950") is None
            bumps = proxy.requests[before:]
    finally:
        proxy.close()
        blob_service.delete_container(name)
    assert len(bumps) == 10, bumps
    assert [line.split()[0] for line in bumps] == ["HEAD", "PUT"] * 5, bumps
