"""Resubmit: do again exactly what kept runs left undone, with what the container holds now.

``image-sync runs resubmit RUN_ID`` (``runs_cli``) and the HTTP functions ``resubmit`` (``jobs``) both run
``resubmit`` below. For each run (``runs.undone``):

- **Products** TRAEDE rejected, failed, deferred or was not sent: each is listed now and its complete set sent
  through ``ProductQueue.sync_now``, the path of ``sync --item``: under the product's lock, never while a full
  sync's fence is up (it waits for both, like any product send), 10 products a request. A product only TRAEDE
  missed goes to TRAEDE alone; one the run never listed to the end (stopped, the listing broke off) goes to both
  partners, as the run would have sent it. Old payloads are never replayed: TRAEDE would apply them as an
  older set.
- **A product deleted since** (its folder holds no image now) goes to TRAEDE as the empty set, which deletes its
  images there, and the run says so per product; except a product the run itself found without any image (a
  typo'd ``--item``): that one is not sent, as ``sync --item`` without ``--allow-empty`` would not.
- **Wallie images** rejected or failed: each blob's record as it is now; a blob gone since is reported as
  skipped, not sent.
- **A full sync or a shard whose listing did not end**: besides what it names, every product and image of the
  part of the container it covered that it did not deliver (``runs.undone.Scope``), listed now.

Before it sends anything the resubmit claims each run (``runs.links``): of two resubmits of one run exactly one
sends. Its own run (kind ``resubmit``) is kept under the id it claimed with, naming the runs it resubmits.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..catalog.records import CatalogEntry, ImageRecord, SkippedBlob
from ..domain import Partner
from ..errors import ConfigError
from ..runs.links import Claim, Links
from ..runs.names import UnknownRun, new_run_id
from ..runs.recording import Recording
from ..runs.report import Problem, SyncReport
from ..runs.undone import Scope, Undone, undone
from ..runs.validation import DamagedHistory

if TYPE_CHECKING:
    from ..runs.history import RunHistory
    from .factory import Components

log = logging.getLogger(__name__)

GONE = "not resubmitted: the blob no longer exists (deleted since the run)"


@dataclass(slots=True)
class Wanted:
    """One product to send again."""

    item: str
    run: str          # the (first) run that left it undone
    outcome: str      # what became of it there
    whole: bool       # the run never listed it to the end: both partners, listed now
    empty_ok: bool    # its set may go to TRAEDE empty (the run knew it with images)


@dataclass(slots=True)
class Plan:
    """What a resubmit sends: products (TRAEDE, or both partners) and Wallie images, each once."""

    runs: list[str]
    products: dict[str, Wanted] = field(default_factory=dict)
    images: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # blob -> (product, outcome, run)
    records: dict[str, ImageRecord] = field(default_factory=dict)  # images a scope listing found, as they are now
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.products and not self.images

    def describe(self) -> str:
        whole = sum(1 for w in self.products.values() if w.whole)
        both = f" ({whole} to both partners: never listed to the end)" if whole else ""
        runs = f"run {self.runs[0]}" if len(self.runs) == 1 else f"{len(self.runs)} runs"
        return f"{len(self.products)} products{both} and {len(self.images)} Wallie images of {runs}"


@dataclass(slots=True)
class Resubmitted:
    """What ``resubmit`` did."""

    run_id: str | None = None                 # the resubmit's own run (None: nothing was sent)
    runs: list[str] = field(default_factory=list)      # the runs it resubmitted
    already: list[Claim] = field(default_factory=list)  # runs another resubmit has (or had)
    nothing: list[str] = field(default_factory=list)   # runs that left nothing undone
    plan: Plan | None = None
    report: SyncReport | None = None
    damage: list[str] = field(default_factory=list)    # parts of the history left out as damaged


def resubmit(parts: Components, run_ids: list[str], *, via: str, again: bool = False, dry_run: bool = False,
             wait_seconds: float, on_wait: Callable[[str], None] | None = None,
             on_start: Callable[[Plan, str], None] | None = None) -> Resubmitted:
    """Resubmit these kept runs (ids, or ``latest``) as one new run. ``again``: also runs resubmitted before;
    ``dry_run``: plan only (no claim, nothing sent, nothing kept). ``on_start(plan, run id)`` is told before
    anything is sent. Raises ``UnknownRun``, ``DamagedHistory``, ``ConfigError``, ``FullSyncBusy`` (a lock or a
    fence held on longer than ``wait_seconds``: the claims are given back)."""
    history = _history(parts)
    links = Links(history)
    done = Resubmitted()
    todo: list[Undone] = []
    several = len(set(run_ids)) > 1
    for run_id in dict.fromkeys(run_ids):
        try:
            left = undone(history, run_id, done.damage)
            _check_container(parts, left)
        except (UnknownRun, DamagedHistory, ConfigError) as exc:
            if not several:
                raise
            done.damage.append(f"run {run_id} left out: {exc}")  # one bad run never stops the window's others
            continue
        if left.empty:
            done.nothing.append(left.run_id)
        else:
            todo.append(left)
    if dry_run:
        done.runs = [u.run_id for u in todo]
        done.plan = plan(parts, todo) if todo else None
        return done
    new_id = new_run_id("resubmit", datetime.now(UTC))
    held: list[Claim] = []
    try:
        for left in todo:
            ours, theirs = links.claim(left.run_id, new_id, via=via, again=again)
            if ours is not None:
                held.append(ours)
            elif theirs is not None:
                done.already.append(theirs)
        if not held:
            return done
        claimed = {c.run_id for c in held}
        done.runs = [u.run_id for u in todo if u.run_id in claimed]
        done.plan = plan(parts, [u for u in todo if u.run_id in claimed])
        done.report, kept = _send(parts, history, done.plan, new_id, via=via, wait_seconds=wait_seconds,
                                  on_wait=on_wait, on_start=on_start)
        if not kept:  # its outcome is nowhere to be read: the run may be resubmitted again
            for held_claim in held:
                links.give_back(held_claim)
            return done
        done.run_id = new_id
    except BaseException:
        for held_claim in held:
            links.give_back(held_claim)
        raise
    for held_claim in held:
        links.finish(held_claim)
    return done


def _history(parts: Components) -> RunHistory:
    if parts.history is None:
        raise ConfigError("RUN_HISTORY_CONTAINER is empty, so runs keep no report and none can be resubmitted")
    return parts.history


def _check_container(parts: Components, left: Undone) -> None:
    kept = left.head.get("container")
    if kept and kept != parts.settings.storage.container:
        raise ConfigError(f"run {left.run_id} synced container {kept!r}, but IMAGES_CONTAINER is "
                          f"{parts.settings.storage.container!r}: resubmit it with the settings it ran with")


def plan(parts: Components, runs: list[Undone]) -> Plan:
    """Each product and image the runs left undone, once (the first run that left it undone names it)."""
    out = Plan([u.run_id for u in runs])
    no_image: dict[str, bool] = {}  # product -> every run that names it found it without any image
    for left in runs:
        out.notes += left.notes
        for item, outcome in left.products.items():
            wanted = out.products.get(item)
            if wanted is None:
                out.products[item] = Wanted(item, left.run_id, outcome, item in left.whole, True)
            else:
                wanted.whole = wanted.whole or item in left.whole
            no_image[item] = no_image.get(item, True) and item in left.no_image
        for blob, item in left.images.items():
            out.images.setdefault(blob, (item, left.image_outcomes.get(blob, "failed"), left.run_id))
        if left.scope is not None:
            _reach(parts, left, left.scope, out)
    for item, none in no_image.items():
        out.products[item].empty_ok = not none
    whole = {item for item, wanted in out.products.items() if wanted.whole}
    out.images = {blob: what for blob, what in out.images.items() if what[0] not in whole}  # sent with their product
    return out


def _reach(parts: Components, left: Undone, scope: Scope, out: Plan) -> None:
    """A run whose listing did not end: what of its part of the container (as it is now) it did not deliver."""
    separator = parts.catalog.layout.item_prefix_separator or ""
    # A run that ended before any partner's lane started names none: then it owed both what is configured now.
    partners = left.partners or {p.value for p in Partner}
    traede, wallie = Partner.TRAEDE.value in partners, Partner.WALLIE.value in partners
    for entry in parts.catalog.scan():
        if not isinstance(entry, ImageRecord) or not _in(scope, entry.item_id + separator):
            continue
        if traede and entry.item_id not in left.delivered_products and entry.item_id not in out.products:
            out.products[entry.item_id] = Wanted(entry.item_id, left.run_id, "not reached", False, True)
        if wallie and entry.blob_name not in left.delivered_images and entry.blob_name not in out.images:
            out.images[entry.blob_name] = (entry.item_id, "not reached", left.run_id)
            out.records[entry.blob_name] = entry
    what = "the whole container" if scope.whole else f"products after {scope.after!r} up to {scope.upto!r}"
    out.notes.append(f"run {left.run_id} did not list to the end ({left.head.get('interrupted') or 'its listing'} "
                     f"stopped it): what it did not deliver of {what} is resubmitted as the container holds it now")


def _in(scope: Scope, key: str) -> bool:
    return (scope.after is None or key > scope.after) and (scope.upto is None or key <= scope.upto)


def _send(parts: Components, history: RunHistory, todo: Plan, run_id: str, *, via: str, wait_seconds: float,
          on_wait: Callable[[str], None] | None,
          on_start: Callable[[Plan, str], None] | None) -> tuple[SyncReport, bool]:
    """Send the plan as run ``run_id``; its report, and whether it was kept."""
    context = {"container": parts.settings.storage.container, "partners": parts.settings.partner_urls(),
               "resubmits": list(todo.runs), "via": via}
    with Recording(history, "resubmit", context=context, run_id=run_id) as rec:
        report = rec.report = SyncReport(mode="resubmit", ledger=rec.ledger, context=context)
        report.notes += todo.notes
        if on_start is not None:
            on_start(todo, run_id)
        _send_images(parts, todo, report)
        _send_products(parts, todo, report, wait_seconds=wait_seconds, on_wait=on_wait)
        report.mode = "resubmit"
        if parts.stop.is_set():
            report.interrupted = getattr(parts.stop, "reason", None) or "a stop request"
        report.finish()
        kept = rec.keep_now() is not None
    return report, kept


def _send_images(parts: Components, todo: Plan, report: SyncReport) -> None:
    if not todo.images:
        return
    if parts.engine.wallie is None:
        for blob, (item, _, _) in todo.images.items():
            report.add_failed(Problem(Partner.WALLIE, item, blob, "not resubmitted: Wallie is not configured "
                                      "(WALLIE_BASE_URL)", retryable=False))
        return

    def entries() -> Iterator[CatalogEntry]:
        for blob in todo.images:
            entry = todo.records.get(blob) or parts.catalog.get(blob)  # the blob as it is now
            yield SkippedBlob(blob, GONE) if isinstance(entry, SkippedBlob) and entry.reason == \
                "blob no longer exists" else entry

    report.merge(parts.engine.send_images(entries(), report=SyncReport(mode="image", ledger=report.ledger)))


def _send_products(parts: Components, todo: Plan, report: SyncReport, *, wait_seconds: float,
                   on_wait: Callable[[str], None] | None) -> None:
    wallie = parts.engine.wallie is not None
    groups: dict[tuple[bool, bool], list[str]] = {}
    for wanted in todo.products.values():
        whole = wanted.whole and wallie
        if parts.engine.traede is None and not whole:
            report.add_failed(Problem(Partner.TRAEDE, wanted.item, None, "not resubmitted: TRAEDE is not "
                                      "configured (TRAEDE_BASE_URL)", retryable=False))
            continue
        groups.setdefault((whole, wanted.empty_ok), []).append(wanted.item)
    for (whole, empty_ok), items in groups.items():
        parts.product_queue.sync_now(items, empty_sets=empty_ok, on_wait=on_wait, report=report,
                                     wait_seconds=wait_seconds, wallie=whole)


def dry_run_lines(parts: Components, todo: Plan) -> Iterator[str]:
    """What the resubmit would send, one line a product or image, as the container holds them now."""
    for wanted in todo.products.values():
        images, _ = parts.catalog.product(wanted.item)
        partners = "wallie+traede" if wanted.whole else "traede"
        head = f"{partners:<13} product {wanted.item!r}: {wanted.outcome} in run {wanted.run}: "
        if images:
            yield head + f"would send its current set of {len(images)} images"
        elif wanted.empty_ok:
            yield head + "has no image now: would send the empty set, which deletes all its images at TRAEDE"
        else:
            yield head + (f"has no image now and had none in run {wanted.run}: would not be sent (on purpose: "
                          f"image-sync sync --item {wanted.item} --allow-empty)")
    for blob, (item, outcome, run) in todo.images.items():
        entry = todo.records.get(blob) or parts.catalog.get(blob)
        head = f"{'wallie':<13} image {blob!r} (product {item!r}): {outcome} in run {run}: "
        if isinstance(entry, ImageRecord):
            yield head + "would send its current record"
        else:
            yield head + ("no longer exists: would not be sent" if entry.reason == "blob no longer exists" else
                          f"would not be sent: {entry.text}")
