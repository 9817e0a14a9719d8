"""Resubmit (issue "resubmit from the run history"): against real Azurite and the partner sandboxes, a run with
poison records and a 503 storm, the faults cleared, then ``image-sync runs resubmit`` sends exactly what the run
left undone, each product with its set as the container holds it now; once per run; waiting for locks and fences
like any product send; finishing what a stopped run did not reach; and the HTTP resubmit sends once when two
requests arrive together."""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import pytest

from devtools.images import jpeg
from shared.app import jobs
from shared.app.cli import main as cli_main
from shared.catalog.records import image_id_for
from shared.runs import causes
from tests.conftest import TRAEDE_CREDENTIALS, WALLIE_CREDENTIALS, own_state

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(240)
SECRETS = (WALLIE_CREDENTIALS["password"], *TRAEDE_CREDENTIALS.values())


@pytest.fixture
def env(sync_env, monkeypatch):
    """Settings as the host passes them, with a history, state container and product queue of this test's own."""
    return own_state(sync_env, monkeypatch, queue=True, HTTP_MAX_RETRIES="1")


def cli(*argv, env):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(list(argv), env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def upload(container, *names):
    for name in names:
        container.upload_blob(name, jpeg(note=name), overwrite=True)


def kept_id(err: str) -> str:
    return re.search(r"run report kept: image-sync runs show (\S+)", err).group(1)


class Sent:
    """What each sandbox received from a point on: TRAEDE's products (item -> the file names of its set) and
    Wallie's image ids, request by request."""

    def __init__(self, wallie, traede):
        self.wallie, self.traede = wallie, traede
        self.w0, self.t0 = len(wallie.received), len(traede.received)

    def traede_items(self) -> list[str]:
        return [p["item_number"] for body in self.traede.received[self.t0:] for p in body["products"]]

    def traede_sets(self) -> dict[str, list[str]]:
        return {p["item_number"]: sorted(i["filename"] for i in p["images"])
                for body in self.traede.received[self.t0:] for p in body["products"]}

    def wallie_ids(self) -> list[str]:
        return [r["imageId"] for body in self.wallie.received[self.w0:] for r in body["images"]]


def no_secrets(*texts):
    leaked = [s for s in SECRETS for t in texts if s in t]
    assert leaked == [], leaked


# -- a run with poison records and a 503 storm, resubmitted --------------------------------------------------

def test_a_resubmit_sends_exactly_what_the_run_left_undone_as_the_container_holds_it_now(
        env, container, wallie, traede):
    upload(container, *[f"{item}/BLK/{kind}.jpg" for item in ("9001", "9002", "9003", "9004", "9005")
                        for kind in ("front", "back")])
    # The bad run: TRAEDE answers 503 to everything (a storm), Wallie refuses two records (poison).
    traede.configure_faults(outage=True)
    wallie.configure_faults(reject={image_id_for("9001/BLK/front.jpg"), image_id_for("9003/BLK/back.jpg")})
    code, _, err = cli("sync", "--item", "9001", "--item", "9002", "--item", "9003", "--item", "9004", env=env)
    assert code == 1
    bad = kept_id(err)
    # The faults clear; meanwhile 9001 gets an image, 9002 loses one, 9004 is deleted whole, and the poisoned
    # 9003/BLK/back.jpg is deleted.
    traede.reset()
    wallie.configure_faults(reject=set())
    upload(container, "9001/BLK/side.jpg")
    for name in ("9002/BLK/back.jpg", "9004/BLK/front.jpg", "9004/BLK/back.jpg", "9003/BLK/back.jpg"):
        container.delete_blob(name)

    sent = Sent(wallie, traede)
    code, out, err = cli("runs", "resubmit", bad, env=env)
    assert code == 0, err
    # TRAEDE: the four products of the storm, each once, each with its set as it is now; 9005 was not in the run
    assert sorted(sent.traede_items()) == ["9001", "9002", "9003", "9004"]
    assert sent.traede_sets() == {"9001": ["back.jpg", "front.jpg", "side.jpg"], "9002": ["front.jpg"],
                                  "9003": ["front.jpg"], "9004": []}
    assert traede.products["9004"] == []  # really gone: sent as the empty set...
    assert causes.empty_set_note("9004") in err  # ...and said so
    # Wallie: only the poisoned record still there (its product only failed at TRAEDE: sent to TRAEDE alone)
    assert sent.wallie_ids() == [image_id_for("9001/BLK/front.jpg")]
    assert "'9003/BLK/back.jpg': not resubmitted: the blob no longer exists" in err  # gone: reported, not sent
    again = kept_id(err)
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{3}Z-resubmit-[0-9a-f]{6}", again)
    assert f"resubmitting 4 products and 2 Wallie images of run {bad} as run {again}" in err

    # runs show of either names the other; runs lists the resubmit with its link
    code, out, _ = cli("runs", "show", bad, env=env)
    assert code == 0 and f"this run was resubmitted by {again} via cli, finished" in out
    code, out, _ = cli("runs", "show", again, env=env)
    assert code == 0 and f"resubmit  of {bad} (via cli)" in out and "resubmit (resubmit)" in out
    code, out, _ = cli("runs", "--kind", "resubmit", env=env)
    assert out.startswith(again) and f"resubmit of {bad}" in out

    # a second resubmit of the same run sends nothing new, and says which run resubmitted it
    sent = Sent(wallie, traede)
    runs_before = cli("runs", env=env)[1]
    code, out, err = cli("runs", "resubmit", bad, env=env)
    assert code == 0 and out == ""
    assert f"run {bad} was already resubmitted by {again} via cli, finished: nothing sent for it" in err
    assert sent.traede_items() == [] and sent.wallie_ids() == []
    assert cli("runs", env=env)[1] == runs_before  # and no run kept for it
    no_secrets(out, err)

    # --again does it again, on purpose, and the original names both
    code, _, err = cli("runs", "resubmit", bad, "--again", env=env)
    assert code == 0 and sorted(sent.traede_items()) == ["9001", "9002", "9003", "9004"]
    third = kept_id(err)
    code, out, _ = cli("runs", "show", bad, env=env)
    assert f"resubmitted by {third} (after {again})" in out


def test_a_full_sync_with_a_poisoned_product_and_a_wallie_storm_resubmits_that_product_and_those_images(
        env, container, wallie, traede):
    upload(container, *[f"{item}/BLK/front.jpg" for item in ("9101", "9102", "9103")])
    traede.configure_faults(reject={"9102"})
    wallie.configure_faults(outage=True)
    code, _, err = cli("sync", env=env)
    assert code == 1
    bad = kept_id(err)
    traede.configure_faults(reject=set())
    wallie.configure_faults(outage=False)
    sent = Sent(wallie, traede)
    code, _, err = cli("runs", "resubmit", "latest", env=env)
    assert code == 0, err
    assert sent.traede_items() == ["9102"]  # only the poisoned product: the others TRAEDE has
    assert sorted(sent.wallie_ids()) == sorted(image_id_for(f"{i}/BLK/front.jpg") for i in ("9101", "9102", "9103"))
    assert f"of run {bad} as run" in err


def test_a_product_the_run_found_without_any_image_is_not_resubmitted_as_an_empty_set(env, container, traede):
    upload(container, "9201/BLK/front.jpg")
    code, _, err = cli("sync", "--item", "9201", "--item", "92O1", env=env)  # a typo: letter O
    assert code == 1 and causes.NO_IMAGE in err
    bad = kept_id(err)
    sent = Sent(traede, traede)
    code, out, err = cli("runs", "resubmit", bad, "--dry-run", env=env)
    assert code == 0 and "92O1" in out and "had none in run" in out and "--allow-empty" in out
    code, _, err = cli("runs", "resubmit", bad, env=env)
    assert code == 1 and causes.NO_IMAGE in err  # still not sent: it was a typo, not a deleted product
    assert sent.traede_items() == [] and "92O1" not in traede.products


def test_a_dry_run_sends_nothing_claims_nothing_and_keeps_nothing(env, container, wallie, traede):
    upload(container, "9301/BLK/front.jpg", "9302/BLK/front.jpg")
    traede.configure_faults(reject={"9302"})
    code, _, err = cli("sync", env=env)
    bad = kept_id(err)
    traede.configure_faults(reject=set())
    container.delete_blob("9302/BLK/front.jpg")
    sent = Sent(wallie, traede)
    runs_before = cli("runs", env=env)[1]
    code, out, err = cli("runs", "resubmit", bad, "--dry-run", env=env)
    assert code == 0, err
    assert "product '9302': rejected in run" in out
    assert "has no image now: would send the empty set, which deletes all its images at TRAEDE" in out
    assert "dry run: would resubmit 1 products and 0 Wallie images" in err
    assert sent.traede_items() == [] and sent.wallie_ids() == [] and wallie.stats["token_requests"] == 1
    assert cli("runs", env=env)[1] == runs_before
    code, out, _ = cli("runs", "show", bad, env=env)
    assert "resubmitted" not in out  # not claimed: a real resubmit may follow
    assert cli("runs", "resubmit", bad, env=env)[0] == 0 and sent.traede_items() == ["9302"]


def test_a_run_that_left_nothing_undone_has_nothing_to_resubmit(env, container, traede):
    upload(container, "9401/BLK/front.jpg")
    code, _, err = cli("sync", env=env)
    assert code == 0
    sent = Sent(traede, traede)
    code, _, err = cli("runs", "resubmit", kept_id(err), env=env)
    assert code == 0 and "left nothing undone: nothing to resubmit" in err and sent.traede_items() == []


@pytest.mark.parametrize("argv, expected", [
    (["runs", "resubmit"], "runs resubmit: give a RUN_ID (or latest) or --failed-since DURATION, one of them"),
    (["runs", "resubmit", "latest", "--failed-since", "1h"], "give a RUN_ID (or latest) or --failed-since"),
    (["runs", "resubmit", "--failed-since", "yesterday"], "--failed-since yesterday: expected a duration"),
    (["runs", "resubmit", "--failed-since", "0h"], "expected a duration longer than 0"),
    (["runs", "--since", "3 days"], "--since 3 days: expected a duration: a whole number and m, h or d"),
    (["runs", "--failed", "resubmit", "latest"], "go before 'resubmit' only when listing"),
    (["runs", "resubmit", "20260101T000000.000Z-nightly-abcdef"], "no run '20260101T000000.000Z-nightly-abcdef'"),
    (["runs", "resubmit", "nope"], "'nope' is not a run id"),
    (["runs", "resubmit", "latest", "--wait", "-1"], "--wait -1: expected a number of seconds >= 0"),
    (["runs", "resubmit", "--failed-since", "999999d"], "expected at most 3650d"),
    (["runs", "--since", "999999d"], "expected at most 3650d"),
])
def test_resubmit_mistakes_are_one_line_and_exit_2(env, argv, expected):
    code, out, err = cli(*argv, env=env)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err, err


# -- a window of failed runs ---------------------------------------------------------------------------------

def test_runs_failed_since_and_resubmit_failed_since_take_each_product_once(env, container, wallie, traede):
    upload(container, *[f"{item}/BLK/front.jpg" for item in ("9501", "9502", "9503")])
    assert cli("sync", env=env)[0] == 0  # a good run: neither listed by --failed nor resubmitted
    traede.configure_faults(reject={"9501", "9502"})
    first = kept_id(cli("sync", "--item", "9501", "--item", "9502", env=env)[2])
    traede.configure_faults(reject={"9502"})
    second = kept_id(cli("sync", "--item", "9502", env=env)[2])
    traede.configure_faults(reject=set())

    code, out, err = cli("runs", "--failed", "--since", "1h", env=env)
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == [second, first]
    assert out.count("not resubmitted") == 2 and "2 failed or stopped runs" in err
    code, out, _ = cli("runs", "--since", "1h", env=env)
    assert len(out.splitlines()) == 3

    sent = Sent(wallie, traede)
    code, _, err = cli("runs", "resubmit", "--failed-since", "1h", env=env)
    assert code == 0, err
    assert sorted(sent.traede_items()) == ["9501", "9502"]  # 9502 failed in both runs: sent once
    again = kept_id(err)
    code, out, _ = cli("runs", "--failed", "--since", "1h", env=env)
    assert out.count(f"resubmitted by {again}") == 2
    code, out, _ = cli("runs", "show", again, env=env)
    assert first in out and second in out
    code, _, err = cli("runs", "resubmit", "--failed-since", "1h", env=env)  # both taken: nothing new
    assert code == 0 and err.count("was already resubmitted") == 2 and sorted(sent.traede_items()) == ["9501", "9502"]


# -- nothing resubmitted while a lock or a fence is held -------------------------------------------------------

def test_a_resubmit_waits_for_a_products_lock_and_for_a_full_syncs_fence(env, container, traede):
    upload(container, "9601/BLK/front.jpg", "9602/BLK/front.jpg")
    traede.configure_faults(reject={"9601", "9602"})
    bad = kept_id(cli("sync", env=env)[2])
    traede.configure_faults(reject=set())
    parts = jobs.components()
    queue = parts.product_queue
    assert queue.locks.try_acquire("9601")  # another instance is sending 9601 right now
    fence = queue.fences.open("a-long-nightly", "nightly sync")  # and a full sync is running
    sent = Sent(traede, traede)
    result = {}
    thread = threading.Thread(target=lambda: result.update(zip(("code", "out", "err"),
                                                                cli("runs", "resubmit", bad, env=env), strict=True)))
    thread.start()
    time.sleep(2.0)
    assert sent.traede_items() == [] and thread.is_alive()  # waits: the lock is held
    queue.locks.release("9601")
    time.sleep(2.0)
    assert sent.traede_items() == [] and thread.is_alive()  # still waits: the fence is up
    fence.close()
    thread.join(60)
    assert result["code"] == 0, result.get("err")
    assert sorted(sent.traede_items()) == ["9601", "9602"]
    assert "waiting" in result["err"] and "a full sync is running" in result["err"]


def test_a_resubmit_that_waited_longer_than_wait_exits_75_sends_nothing_and_gives_its_claim_back(
        env, container, traede):
    upload(container, "9651/BLK/front.jpg")
    traede.configure_faults(reject={"9651"})
    bad = kept_id(cli("sync", env=env)[2])
    traede.configure_faults(reject=set())
    queue = jobs.components().product_queue
    assert queue.locks.try_acquire("9651")  # another instance is sending it, and keeps on
    sent = Sent(traede, traede)
    try:
        code, out, err = cli("runs", "resubmit", bad, "--wait", "1", env=env)
    finally:
        queue.locks.release("9651")
    assert code == 75, err
    assert "stayed locked by another instance" in err and "the run may be resubmitted again" in err
    assert sent.traede_items() == []
    assert "resubmitted" not in cli("runs", "show", bad, env=env)[1]  # the claim was given back...
    code, _, err = cli("runs", "resubmit", bad, env=env)  # ...so the next resubmit sends it
    assert code == 0, err
    assert sent.traede_items() == ["9651"]


# -- a stopped run ---------------------------------------------------------------------------------------------

def test_a_resubmit_of_a_run_stopped_by_sigterm_finishes_what_it_did_not_reach(env, container, wallie, traede):
    names = [f"{8000 + p}/BLK/{kind}.jpg" for p in range(30) for kind in ("front", "back")]
    upload(container, *names)
    wallie.configure_faults(latency_ms=600)
    traede.configure_faults(latency_ms=600)
    child = {**os.environ, **env, "WALLIE_BATCH_SIZE": "4", "SYNC_CONCURRENCY": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "shared", "sync"], cwd=REPO, env=child,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while (traede.stats["sync_requests"] < 1 or wallie.stats["image_requests"] < 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    stopped = kept_id(err)
    delivered_traede = set(traede.products)
    delivered_wallie = set(wallie.images)
    assert 0 < len(delivered_traede) < 30 and 0 < len(delivered_wallie) < 60  # it really stopped midway

    wallie.configure_faults(latency_ms=0)
    traede.configure_faults(latency_ms=0)
    sent = Sent(wallie, traede)
    code, out, err = cli("runs", "resubmit", stopped, env=env)
    assert code == 0, err
    # what the stopped run did not get to each partner, and only that
    assert set(sent.traede_items()) == {str(8000 + p) for p in range(30)} - delivered_traede
    assert len(sent.traede_items()) == len(set(sent.traede_items()))
    assert set(sent.wallie_ids()) == {image_id_for(n) for n in names} - delivered_wallie
    assert len(traede.products) == 30 and len(wallie.images) == 60  # now everything is there


def test_a_resubmit_of_a_stopped_sync_item_run_sends_the_products_it_never_reached(env, container, wallie, traede):
    items = [str(8200 + p) for p in range(30)]
    upload(container, *[f"{item}/BLK/front.jpg" for item in items])
    traede.configure_faults(latency_ms=800)
    child = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "shared", "sync", *(arg for item in items for arg in ("--item", item))]
    process = subprocess.Popen(argv, cwd=REPO, env=child, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while traede.stats["sync_requests"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    stopped = kept_id(err)
    delivered = set(traede.products)
    assert 0 < len(delivered) < 30
    kept = json.loads(cli("runs", "show", stopped, "--json", env=env)[1])
    unreached = {p["item"] for p in kept["failed"] if p["reason"] == causes.UNREACHED}
    assert unreached and unreached <= set(items) - delivered  # named, though never listed

    traede.configure_faults(latency_ms=0)
    sent = Sent(wallie, traede)
    code, _, err = cli("runs", "resubmit", stopped, env=env)
    assert code == 0, err
    assert sorted(sent.traede_items()) == sorted(set(items) - delivered)  # what it did not get, each once
    assert set(traede.products) == set(items)


STOPPED_WHILE_LISTING = """
import sys
import shared.catalog.listing as listing
listing.LIST_PAGE_SIZE = 4  # two products a page: a listing of many pages, held back by the proxy
from shared.app.cli import main
sys.exit(main(["sync"]))
"""


def test_a_resubmit_of_a_run_stopped_while_listing_finishes_the_products_it_never_listed(
        azurite, env, container, wallie, traede):
    from tests.storage_proxy import StorageProxy

    names = [f"{8100 + p}/BLK/{kind}.jpg" for p in range(24) for kind in ("front", "back")]
    upload(container, *names)
    listing = f"/{container.container_name}?"
    proxy = StorageProxy(azurite, delay=lambda line: 0.4 if listing in line and "comp=list" in line else 0.0)
    try:
        child = {**os.environ, **env, "IMAGES_STORAGE": proxy.connection_string, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen([sys.executable, "-c", STOPPED_WHILE_LISTING], cwd=REPO, env=child,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while traede.stats["sync_requests"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        proxy.close()
    assert process.returncode == 143, err
    stopped = kept_id(err)
    code, out, _ = cli("runs", "show", stopped, "--json", env=env)
    kept = json.loads(out)
    named = {p["item"] for p in kept["failed"] + kept["rejected"] + kept["deferred"]} | set(traede.products)
    assert len(named) < 24  # the run never listed the rest: it cannot name them
    delivered_traede, delivered_wallie = set(traede.products), set(wallie.images)

    sent = Sent(wallie, traede)
    code, out, err = cli("runs", "resubmit", stopped, env=env)
    assert code == 0, err
    assert set(sent.traede_items()) == {str(8100 + p) for p in range(24)} - delivered_traede
    assert set(sent.wallie_ids()) == {image_id_for(n) for n in names} - delivered_wallie
    assert f"run {stopped} did not list to the end (SIGTERM stopped it)" in err
    assert len(traede.products) == 24 and len(wallie.images) == 48


# -- from the deployed app --------------------------------------------------------------------------------------

def post(function, *, params=None, form=None, route="runs/resubmit"):
    from azure.functions import HttpRequest

    body = "&".join(f"{k}={v}" for k, v in (form or {}).items()).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else {}
    request = HttpRequest("POST", f"http://localhost/api/{route}", params=params or {}, body=body, headers=headers)
    response = function(request)
    return response.status_code, response.get_body().decode("utf-8"), response


def test_the_http_resubmit_sent_twice_at_once_sends_once(indexed, env, container, wallie, traede):
    from functions.resubmit import resubmit

    trigger = next(b for b in indexed["resubmit"].get_bindings() if b.type == "httpTrigger").get_dict_repr()
    assert str(getattr(trigger["authLevel"], "value", trigger["authLevel"])).lower() == "function"
    assert trigger["route"] == "runs/resubmit" and [str(getattr(m, "value", m)) for m in trigger["methods"]] == ["POST"]

    upload(container, *[f"{item}/BLK/front.jpg" for item in ("9701", "9702", "9703")])
    traede.configure_faults(reject={"9701", "9703"})
    bad = kept_id(cli("sync", env=env)[2])
    traede.configure_faults(reject=set(), latency_ms=300)  # the first request is still sending when the second comes
    sent = Sent(wallie, traede)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: post(resubmit, params={"run": bad}), range(2)))
    assert [a[0] for a in answers] == [200, 200]
    bodies = [json.loads(a[1]) for a in answers]
    created = [b for b in bodies if b["created"]]
    assert len(created) == 1 and created[0]["ok"] is True
    other = next(b for b in bodies if not b["created"])
    assert other["resubmit"] == created[0]["resubmit"] and other["state"] in ("running", "done")
    assert sorted(sent.traede_items()) == ["9701", "9703"]  # once
    # a third, later, answers with the same resubmit, finished
    status, body, _ = post(resubmit, params={"run": bad})
    assert status == 200 and json.loads(body)["resubmit"] == created[0]["resubmit"]
    assert json.loads(body)["state"] == "done" and sorted(sent.traede_items()) == ["9701", "9703"]
    assert post(resubmit, params={"run": "latest"})[0] == 400
    assert post(resubmit, params={"run": "20260101T000000.000Z-nightly-abcdef"})[0] == 404
    assert post(resubmit, params={})[0] == 400
    no_secrets(*(a[1] for a in answers))


class Forms(HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.forms: list[dict[str, str]] = []
        self.inputs: list[dict[str, str]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "form":
            self.forms.append(dict(attrs))
        elif tag == "input":
            self.inputs.append(dict(attrs))


def test_the_contact_sheet_offers_a_failed_runs_resubmit_as_a_form_that_carries_no_key(
        indexed, env, container, wallie, traede):
    from azure.functions import HttpRequest

    from functions.contact_sheet import contact_sheet
    from functions.resubmit import resubmit_from_sheet

    trigger = next(b for b in indexed["resubmit_from_sheet"].get_bindings()
                   if b.type == "httpTrigger").get_dict_repr()
    assert trigger["route"] == "runs/sheet" and [str(getattr(m, "value", m)) for m in trigger["methods"]] == ["POST"]
    assert str(getattr(trigger["authLevel"], "value", trigger["authLevel"])).lower() == "function"

    upload(container, "9801/BLK/front.jpg", "9802/BLK/front.jpg")
    traede.configure_faults(reject={"9802"})
    bad = kept_id(cli("sync", env=env)[2])
    traede.configure_faults(reject=set())
    key = "the-function-key-" + uuid.uuid4().hex  # as Azure serves the page: ?code=<key>
    response = contact_sheet(HttpRequest("GET", "http://localhost/api/runs/sheet",
                                         params={"run": "latest", "code": key}, body=b""))
    page = response.get_body().decode("utf-8")
    assert response.status_code == 200 and key not in page
    policy = response.headers["Content-Security-Policy"]
    assert "form-action 'self'" in policy and "'unsafe-inline'" not in policy
    found = Forms(page)
    assert found.forms == [{"method": "post", "class": "resubmit"}]  # no action: posts to the page's own address
    assert {"type": "hidden", "name": "run", "value": bad} in found.inputs  # the run itself, never "latest"

    sent = Sent(wallie, traede)
    status, body, response = post(resubmit_from_sheet, params={"run": "latest", "code": key}, form={"run": bad},
                                  route="runs/sheet")
    assert status == 200 and response.mimetype == "text/html" and "Contact sheet: run" in body
    assert f"Resubmit of</th><td>{bad}" in body and key not in body
    assert sent.traede_items() == ["9802"]
    # the resubmit's own sheet offers no button (it went well), and pressing the first one again sends nothing
    assert Forms(body).forms == []
    status, again, _ = post(resubmit_from_sheet, params={"run": bad, "code": key}, form={"run": bad},
                            route="runs/sheet")
    assert status == 200 and sent.traede_items() == ["9802"]
    # and the original's sheet now names its resubmit instead of offering the button
    response = contact_sheet(HttpRequest("GET", "http://localhost/api/runs/sheet", params={"run": bad}, body=b""))
    page = response.get_body().decode("utf-8")
    assert "Resubmitted</th><td>resubmitted by" in page and Forms(page).forms == []
