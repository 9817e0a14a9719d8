"""The claim that makes a resubmit happen once per run, under its own faults: a resubmit that died, a create
whose answer was lost, a blob in the claim's place that is no claim. Real Azurite."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.runs.history import RunHistory
from shared.runs.links import DONE, RUNNING, STALE_AFTER, Links, claim_name
from shared.runs.names import new_run_id


@pytest.fixture
def links(blob_service):
    name = f"runs-{uuid.uuid4().hex[:10]}"
    blob_service.create_container(name)
    yield Links(RunHistory(blob_service, name, days=30))
    blob_service.delete_container(name)


def run_id(kind="nightly"):
    return new_run_id(kind, datetime.now(UTC))


def test_giving_back_a_claim_taken_from_a_dead_resubmit_frees_the_run(links):
    """A resubmit died (its claim left running); an hour on another takes it over, then fails before its work
    was done: the run must be free to resubmit, never marked finished by the dead one."""
    original, dead, second, third = run_id(), run_id("resubmit"), run_id("resubmit"), run_id("resubmit")
    ours, _ = links.claim(original, dead, via="cli", now=datetime.now(UTC) - STALE_AFTER - timedelta(minutes=5))
    assert ours is not None
    taken, theirs = links.claim(original, second, via="http")
    assert taken is not None and theirs is None and taken.by == (dead, second)
    links.give_back(taken)
    assert links.get(original) is None
    again, theirs = links.claim(original, third, via="cli")
    assert again is not None and theirs is None


def test_giving_back_a_resubmit_again_puts_the_finished_claim_back(links):
    original, first, second = run_id(), run_id("resubmit"), run_id("resubmit")
    ours, _ = links.claim(original, first, via="cli")
    links.finish(ours)
    again, _ = links.claim(original, second, via="http", again=True)
    assert again is not None and again.by == (first, second)
    links.give_back(again)
    back = links.get(original)
    assert back is not None and back.by == (first,) and back.state == DONE and back.via == "cli"


def test_a_create_whose_answer_was_lost_is_still_ours(links):
    """The create landed, its answer did not, the retry met 409: the claim names this resubmit, so it is its own."""
    original, mine = run_id(), run_id("resubmit")
    first, _ = links.claim(original, mine, via="http")
    assert first is not None
    ours, theirs = links.claim(original, mine, via="http")  # the retry of the same resubmit
    assert ours is not None and theirs is None and ours.state == RUNNING


def test_a_blob_in_the_claims_place_that_is_no_claim_is_replaced(links):
    original, mine = run_id(), run_id("resubmit")
    links.history.client.upload_blob(claim_name(original), b"written by hand", metadata={"note": "x"})
    ours, theirs = links.claim(original, mine, via="cli")
    assert ours is not None and theirs is None
    assert links.get(original).by == (mine,)
