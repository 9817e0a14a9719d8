"""What a kept run left undone: the products and images a resubmit sends again.

Read from the run's report and every entry it kept (its parts): per partner, what was rejected, failed, deferred
or not sent (a stopped run names what it did not reach). What the run sent is never replayed: the products and
blobs named here are listed afresh by whoever resubmits them (``app.resubmit``).

A run whose listing did not end (stopped, or storage failed while listing) cannot name the products it never
listed. For a full sync or a shard, ``scope`` says which part of the container it covered, and ``delivered_*``
what it did get to each partner: the rest of that part, as it is now, is what the run did not reach.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..domain import Outcome, Partner
from . import causes
from .history import RunHistory
from .parts import worst

PROBLEMS = (Outcome.FAILED.value, Outcome.REJECTED.value, Outcome.NOT_SENT.value, Outcome.DEFERRED.value)


@dataclass(frozen=True, slots=True)
class Scope:
    """The part of the container a run's listing covered: product folders in ``(after, upto]`` (None: open)."""

    after: str | None = None
    upto: str | None = None

    @property
    def whole(self) -> bool:
        return self.after is None and self.upto is None


@dataclass(slots=True)
class Undone:
    run_id: str
    head: dict[str, Any]
    products: dict[str, str] = field(default_factory=dict)  # TRAEDE product -> its worst outcome in the run
    whole: set[str] = field(default_factory=set)            # products never listed to the end: both partners
    no_image: set[str] = field(default_factory=set)         # products the run found without any image
    images: dict[str, str] = field(default_factory=dict)    # Wallie blob -> its product
    image_outcomes: dict[str, str] = field(default_factory=dict)  # Wallie blob -> its worst outcome
    scope: Scope | None = None                              # the run's listing did not end: the part it covered
    delivered_products: set[str] = field(default_factory=set)  # what each partner got in the run (for ``scope``)
    delivered_images: set[str] = field(default_factory=set)
    partners: set[str] = field(default_factory=set)         # the partners the run sent to
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.products or self.images or self.scope is not None)

    @property
    def failed(self) -> bool:
        """Rejected or failed records, or stopped: what ``runs --failed`` lists."""
        return not self.head.get("ok") or bool(self.head.get("interrupted"))


def undone(history: RunHistory, run_id: str, damage: list[str] | None = None) -> Undone:
    """What ``run_id`` (an id or ``latest``) left undone. Raises ``UnknownRun``, ``DamagedHistory``."""
    head = history.load(run_id)
    run_id = str(head.get("run") or history.resolve(run_id))
    found = Undone(run_id, head)
    found.partners = {str(p) for key in ("delivered", "units", "stopped_partners") for p in (head.get(key) or {})}
    traede: dict[str, list[str]] = {}
    wallie: dict[str, list[str]] = {}
    for kind in ("rejected", "failed", "deferred"):  # the report's lists (whole unless the report was trimmed)
        for problem in head.get(kind) or []:
            _take(found, {**problem, "outcome": kind}, traede, wallie)
    for entry in history.sent(run_id, int(head.get("parts") or 1), damage):  # every entry (whole unless damaged)
        _take(found, entry, traede, wallie)
    found.products = {item: worst(outcomes) for item, outcomes in traede.items() if set(outcomes) & set(PROBLEMS)}
    found.image_outcomes = {blob: worst(outcomes) for blob, outcomes in wallie.items()
                            if set(outcomes) & set(PROBLEMS)}
    found.images = {blob: found.images[blob] for blob in found.image_outcomes}
    found.scope = _scope(head, found)
    return found


def _take(found: Undone, entry: dict[str, Any], traede: dict[str, list[str]], wallie: dict[str, list[str]]) -> None:
    partner, item, outcome = entry.get("partner"), str(entry.get("item")), str(entry.get("outcome"))
    if item == "*" or not item:
        return
    reason = str(entry.get("reason") or "")
    if partner == Partner.TRAEDE.value:
        traede.setdefault(item, []).append(outcome)
        if outcome == Outcome.DELIVERED.value:
            found.delivered_products.add(item)
        if reason in causes.UNLISTED:
            found.whole.add(item)
        elif reason == causes.NO_IMAGE:
            found.no_image.add(item)
    elif partner == Partner.WALLIE.value:
        blob = entry.get("blob")
        if not isinstance(blob, str) or not blob:
            return
        wallie.setdefault(blob, []).append(outcome)
        found.images.setdefault(blob, item)
        if outcome == Outcome.DELIVERED.value:
            found.delivered_images.add(blob)


def _scope(head: dict[str, Any], found: Undone) -> Scope | None:
    """A full sync or a shard whose listing did not end (stopped, or a run-level failure): the part of the
    container it covered. None when the run named all its work (it listed to the end, or it was asked for
    products by id, each of which it names)."""
    mode = str(head.get("mode") or "")
    run_level = any(p.get("item") == "*" for p in head.get("failed") or [])
    if not (head.get("interrupted") or run_level) or not (mode == "full" or mode.startswith("shard")):
        return None
    if mode == "full":
        return Scope()
    shard = head.get("shard")
    if isinstance(shard, dict):
        after, upto = shard.get("after"), shard.get("upto")
        return Scope(after if isinstance(after, str) else None, upto if isinstance(upto, str) else None)
    found.notes.append(f"run {found.run_id} is a shard whose listing did not end, kept by a version that did not "
                       "keep its range of products: only the products and images it names are resubmitted; "
                       "`image-sync sync` sends everything")
    return None
