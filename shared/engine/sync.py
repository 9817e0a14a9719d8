"""The sync engine: listing -> image records -> signed images -> payloads -> each partner's lane.

One engine serves the blob trigger (one new image to Wallie), the product queue (products' complete sets
to TRAEDE), the nightly timer, its shards and the CLI (everything). Partners upsert, so every operation
is safe to repeat. Coordination between processes (who may send a product when) lives in
``product_queue``; each partner's workers, queue and breaker live in ``lanes``.

**Streaming.** When the layout puts each product in a folder of its own (``{item_id}/...``), the listing
comes back sorted, so a product is complete as soon as the listing passes its folder: it goes to TRAEDE
then, while the listing goes on, and only the product being listed is held in memory. With other layouts
no product is complete before the listing ends: their images are grouped in bounded memory, the rest in
sorted runs on disk (``grouping``). A listing that fails midway withholds only what was not complete.
"""
from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from azure.core.exceptions import AzureError

from ..catalog.container import Catalog
from ..catalog.listing import ListingStalled
from ..catalog.partner_codes import PartnerCodes, missing_code, nfc, partner_ids
from ..catalog.records import CatalogEntry, ImageRecord, SignedImage, SkippedBlob
from ..domain import Partner, Source
from ..errors import SigningError
from ..imaging.stage import WebStage
from ..partners.payloads import (
    DEFAULT_TRAEDE_OPTIONS,
    TraedeOptions,
    traede_product,
    wallie_record,
    wallie_record_bytes,
)
from ..runs import causes
from ..runs.ledger import Ledger
from ..runs.report import STORAGE, Problem, SyncReport
from .grouping import ProductGroups
from .lanes import Lane, Unit
from .target import Guard, Target

log = logging.getLogger(__name__)


class Fence(Protocol):
    """What a full sync runs behind (``product_queue.FullSyncUnit``)."""

    @property
    def withhold(self) -> frozenset[str]:
        """Products another process holds the lock of: it sends them itself."""
        ...

    @property
    def pending(self) -> Mapping[str, object]:
        """Products pending when the fence went up: their delivery is tracked."""
        ...

    def guard(self) -> float:
        """Seconds for which the fence certainly stands."""
        ...


class Sign(Protocol):
    """A blob's download URL; ``content_type``: the type the download is served with (``SasSigner.url``)."""

    def __call__(self, blob_name: str, content_type: str | None = None, /) -> str: ...


class SyncEngine:
    def __init__(self, catalog: Catalog, sign: Sign | Callable[[str], str], *,
                 wallie: Target | None = None, traede: Target | None = None,
                 concurrency: int = 4, traede_options: TraedeOptions = DEFAULT_TRAEDE_OPTIONS,
                 codes: Callable[[], PartnerCodes | None] | None = None, codes_file: str | None = None,
                 stop: threading.Event | None = None, web: WebStage | None = None):
        """``codes`` loads the partner codes mapping (``PARTNER_CODES_FILE``, the blob ``codes_file``) at
        the start of each run, so a changed file applies from the next run on. ``web``: the web stage
        (WEB_IMAGES: verdicts, renditions) every image passes before it is signed; None sends originals."""
        self.catalog = catalog
        self.sign = sign
        self.web = web
        self.wallie = wallie
        self.traede = traede
        self.concurrency = concurrency
        self.traede_options = traede_options
        self.codes = codes
        self.codes_file = codes_file
        self.stop = stop or threading.Event()

    # -- the operations ---------------------------------------------------------------------------

    def full_sync(self, item_ids: Iterable[str] | None = None, *, dry_run: bool = False,
                  fence: Fence | None = None, empty_sets: bool = True,
                  report: SyncReport | None = None) -> SyncReport:
        """Every image (or every image of ``item_ids``) to Wallie, every product's full set to TRAEDE.

        Behind a ``fence`` (``product_queue.FullSyncUnit``): its ``withhold`` products are not sent to TRAEDE
        (another process holds their lock and sends them itself; they are reported as deferred), the
        delivery of its ``pending`` products is recorded in ``report.delivered_items``, and no TRAEDE attempt
        outlives the fence (``guard``). An asked-for product without any image is sent as an empty set only
        with ``empty_sets`` (which deletes all its images at TRAEDE). A caller that watches the run
        (progress) or wants a ledger passes its own ``report``.
        """
        report = report or SyncReport()
        report.mode, report.dry_run = ("full" if item_ids is None else "items"), dry_run
        if item_ids is None:
            return self._sync(self.catalog.scan(), report, self._plan(fence=fence))
        items = list(dict.fromkeys(item_ids))
        return self._sync(self._entries_of(items), report,
                          self._plan(fence=fence, items=items, grouped=True, empty_sets=empty_sets))

    def sync_entries(self, entries: Iterable[CatalogEntry], *, mode: str = "shard", fence: Fence | None = None,
                     report: SyncReport | None = None) -> SyncReport:
        """Like ``full_sync``, over the entries given in listing order (one shard's blobs): every product in
        them is sent whole, so the caller must hand over all images of each product it includes."""
        report = report or SyncReport()
        report.mode = mode
        return self._sync(entries, report, self._plan(fence=fence))

    def send_image(self, entry: ImageRecord, *, ledger: Ledger | None = None) -> SyncReport:
        """One new image to Wallie. Its product goes to TRAEDE through the product queue, coalesced with
        the rest of its burst (``product_queue``)."""
        return self.send_images([entry], report=SyncReport(mode="image", ledger=ledger))

    def send_images(self, entries: Iterable[CatalogEntry], *, report: SyncReport | None = None) -> SyncReport:
        """These images' records to Wallie only (a resubmit's failed images); a ``SkippedBlob`` among them (a blob
        gone since) is reported as skipped, not sent."""
        report = report or SyncReport(mode="image")
        return self._sync(entries, report, self._plan(targets=[self.wallie] if self.wallie else [], grouped=True))

    def send_products(self, item_ids: Iterable[str], *, guard: Guard | None = None, wallie: bool = False,
                      mode: str = "product", empty_sets: bool = True, ledger: Ledger | None = None) -> SyncReport:
        """Each product's complete set, listed now, to TRAEDE (10 products a request), and with ``wallie``
        its images' records to Wallie. ``guard`` bounds every HTTP attempt by the products' locks."""
        items = list(dict.fromkeys(item_ids))
        report = SyncReport(mode=mode, track=set(items), ledger=ledger)
        targets = [t for t in (self.wallie if wallie else None, self.traede) if t is not None]
        return self._sync(self._entries_of(items), report, self._plan(
            items=items, targets=targets, guard=guard, grouped=True, empty_sets=empty_sets))

    # -- the one path -------------------------------------------------------------------------------

    def _plan(self, *, fence: Fence | None = None, items: list[str] | None = None,
              targets: list[Target] | None = None, guard: Guard | None = None, grouped: bool | None = None,
              empty_sets: bool = True) -> _Plan:
        if targets is None:
            targets = [t for t in (self.wallie, self.traede) if t is not None]
        return _Plan(
            items=items, targets=targets, withhold=fence.withhold if fence is not None else frozenset(),
            track=frozenset(fence.pending) if fence is not None else frozenset(),
            guard=fence.guard if fence is not None else guard,
            grouped=self.catalog.layout.item_prefix_separator is not None if grouped is None else grouped,
            empty_sets=empty_sets)

    def _sync(self, entries: Iterable[CatalogEntry], report: SyncReport, plan: _Plan) -> SyncReport:
        run = _Run(self, report, plan)  # a bad mapping file: ConfigError before any work
        listing_error: BaseException | None = None
        if self.web is not None:
            entries = self.web.prepared(entries, report, stop=self.stop, dry_run=report.dry_run)
        try:
            for entry in entries:
                if self.stop.is_set():
                    listing_error = _Stopped()
                    break
                run.take(entry)
        except (AzureError, ListingStalled, SigningError) as exc:
            listing_error = exc
        except BaseException as exc:
            # Anything else (a spill file that cannot be written, a body cut off mid-XML, a bug) broke the run
            # off just the same: what was not listed whole must not reach TRAEDE as if it were complete.
            if isinstance(exc, Exception):
                log.exception("the run broke off after %d images", report.images)
            listing_error = exc
            raise
        finally:
            close = getattr(entries, "close", None)
            if callable(close):
                close()  # the listing thread stops now, not when the garbage collector finds the generator
            run.finish(listing_error)
        if self.stop.is_set():
            report.interrupted = getattr(self.stop, "reason", None) or "a stop request"
        if self.web is not None and not self.web.can_keep_verdicts() and report.web.get("unchecked"):
            report.notes.append("the images' verdicts (blob index tags) could not be listed or written: the app's "
                                "identity may not read or write tags, so images were sent unchecked "
                                "(docs/images.md, 'Web-ready images')")
        return report.finish()

    def _entries_of(self, item_ids: list[str]) -> Iterator[CatalogEntry]:
        for item_id in item_ids:
            images, skipped = self.catalog.product(item_id)
            yield from skipped
            yield from images


def _form(name: str) -> str:
    """Which Unicode form a folder's name is in, for a person who sees two identical-looking names."""
    import unicodedata

    for form in ("NFC", "NFD"):
        if unicodedata.is_normalized(form, name):
            return form
    return "mixed"


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one engine run sends, where, and under which lock or fence."""

    items: list[str] | None      # products asked for by id (None: whatever the entries hold)
    targets: list[Target]        # the partners this run sends to
    withhold: frozenset[str]     # products another process sends itself (its lock is held)
    track: frozenset[str]        # products whose delivery the report records (pending when a fence went up)
    guard: Guard | None          # seconds the lock or fence that makes a TRAEDE send safe certainly holds
    grouped: bool                # entries come product by product: a product is complete when the next begins
    empty_sets: bool             # an asked-for product without images is sent as an empty set


class _Run:
    """One engine run: its lanes, the products being collected, the Wallie batch being filled."""

    def __init__(self, engine: SyncEngine, report: SyncReport, plan: _Plan):
        self.engine, self.report, self.plan = engine, report, plan
        self.codes = engine.codes() if engine.codes else None
        self.wallie = engine.wallie if engine.wallie in plan.targets else None
        traede = engine.traede if engine.traede in plan.targets else None
        report.track |= plan.track
        self.lanes = {t.name: Lane(t, report, workers=engine.concurrency, stop=engine.stop,
                                   guard=plan.guard if t is traede else None, track_items=t is traede)
                      for t in plan.targets}
        layout = engine.catalog.layout
        report.layout, report.item_separator = layout.pattern, layout.item_prefix_separator
        self.products = _Products(engine, report, traede, self.lanes.get(traede.name) if traede else None,
                                  plan.withhold, plan.grouped, remember=plan.items is not None, codes=self.codes)
        self.wallie_batch: list[Unit] = []

    def take(self, entry: CatalogEntry) -> None:
        """One listed blob: reported if skipped, else signed, into its product, and its Wallie record queued."""
        report = self.report
        if isinstance(entry, SkippedBlob):
            if entry.blob_name != self.engine.codes_file:  # the mapping file lives among the images
                report.add_skipped(entry)
            return
        signed = SignedImage(entry, self._url(entry))
        report.images += 1
        for reason, detail in entry.ignored:
            report.add_ignored(entry.blob_name, reason, detail)
        self.products.add(signed)
        if self.wallie is not None:
            self._wallie_record(self.wallie, signed)

    def _url(self, entry: ImageRecord) -> str:
        """The URL a partner downloads: the rendition's, or the original's (served with its real type when
        its stored one is wrong)."""
        delivery, engine = entry.delivery, self.engine
        if delivery is None:
            return engine.sign(entry.blob_name)
        if delivery.rendition and engine.web is not None:
            return engine.web.rendition_url(delivery.rendition)
        if delivery.content_type:
            return engine.sign(entry.blob_name, delivery.content_type)  # type: ignore[call-arg]
        return engine.sign(entry.blob_name)

    def _wallie_record(self, wallie: Target, signed: SignedImage) -> None:
        entry, codes = signed.record, self.codes
        ids = partner_ids(entry, codes, Partner.WALLIE) if codes is not None or entry.codes else None
        if ids is not None and ids.problem and codes is not None:
            self.report.add_rejected(Problem(wallie.name, entry.item_id, entry.blob_name,
                                             f"not sent: {missing_code(codes)}", retryable=False, detail=ids.problem))
            return
        record = wallie_record(signed, ids)
        kept = (entry,) if self.report.ledger is not None else ()  # the ledger names its verdict
        self.wallie_batch.append(Unit(record, entry.item_id, entry.blob_name, kept, size=wallie_record_bytes(record)))
        if len(self.wallie_batch) >= wallie.batch_size:
            self.lanes[wallie.name].put(self.wallie_batch)
            self.wallie_batch = []

    def finish(self, listing_error: BaseException | None) -> None:
        """The listing ended (or broke off): send what is complete, withhold what is not, wait for the lanes."""
        self.report.listing_done = True
        if self.wallie is not None:
            self.lanes[self.wallie.name].put(self.wallie_batch)  # every listed image is complete: upsert it
        try:
            if listing_error is None:
                for item_id in self.plan.items or ():
                    self.products.asked_for(item_id, self.plan.empty_sets)
                self.products.flush_all()
            else:
                self.products.abandon(listing_error, asked=self.plan.items or ())
        finally:
            for lane in self.lanes.values():
                lane.finish()


class _Stopped(Exception):
    """The run was asked to stop (SIGTERM/SIGINT) while it was listing."""

    def __str__(self) -> str:
        return "the run was stopped"


class _Products:
    """Collects signed images into TRAEDE product sets and hands complete ones to TRAEDE's lane, in
    batches of ``batch_size`` products.

    Grouped (streaming): only the product being listed is held; it is complete when the next one begins.
    Otherwise every product is complete only when the listing ends: their images are grouped in bounded
    memory, the rest spilled to a temporary file (``grouping``).
    """

    def __init__(self, engine: SyncEngine, report: SyncReport, traede: Target | None, lane: Lane | None,
                 withhold: frozenset[str], grouped: bool, remember: bool, codes: PartnerCodes | None = None):
        self.engine, self.report, self.traede, self.lane = engine, report, traede, lane
        self.codes = codes
        self.withhold, self.grouped = withhold, grouped
        self.open: dict[str, list[SignedImage]] = {}
        self.done: set[str] | None = set() if remember else None  # products completed, when asked for by id
        # A listing in any order (a whole container, not products asked for by id): grouped on the side.
        self.groups = ProductGroups() if not grouped and not remember else None
        self.batch: list[Unit] = []
        self.current: str | None = None
        self.claimed: dict[str, str] = {}  # TRAEDE item number -> the non-ASCII folder that had it in this run

    def add(self, signed: SignedImage) -> None:
        if self.groups is not None:
            self.groups.add(signed)
            return
        item = signed.record.item_id
        if self.grouped and item != self.current:
            if self.current is not None:
                self._complete(self.current)
            self.current = item
        self.open.setdefault(item, []).append(signed)

    def asked_for(self, item_id: str, empty_sets: bool) -> None:
        """An explicitly asked-for product: one with no image left is an empty set, if allowed."""
        if item_id in self.open or (self.done is not None and item_id in self.done):
            return
        if empty_sets:
            self.open[item_id] = []
            if self.traede:
                self.report.notes.append(causes.empty_set_note(item_id))
        elif self.traede:
            self.report.products += 1
            self.report.add_failed(Problem(self.traede.name, item_id, None, causes.NO_IMAGE))

    def flush_all(self) -> None:
        for item, images in self.groups.products() if self.groups is not None else ():
            self.open[item] = images
            self._complete(item)
        for item in list(self.open):
            self._complete(item)
        self._send_batch()

    def abandon(self, error: BaseException, asked: Iterable[str] = ()) -> None:
        """The listing broke off: what was complete has been sent; the rest cannot be, whole. Products asked
        for by id that the listing never reached are named too (never sent as an empty set; a resubmit
        finishes them: ``runs.causes``)."""
        listed = self.report.images + len(self.report.skipped)
        first = (str(error).splitlines() or [""])[0][:200]
        if isinstance(error, _Stopped):
            why = causes.STOPPED_LISTING
        elif isinstance(error, SigningError):
            why = causes.UNSIGNED
            self.report.add_storage_failure(Problem(STORAGE, "*", None, f"{error} (after {self.report.images} images)",
                                                    retryable=False))
        elif isinstance(error, (AzureError, ListingStalled)):
            why = causes.BROKEN_LISTING
            self.report.add_storage_failure(Problem(
                STORAGE, "*", None, f"listing the container stopped after {listed} blobs "
                                    f"({type(error).__name__}: {first})"))
        else:
            why = causes.BROKE_OFF
            self.report.add_storage_failure(Problem(
                Source.RUN, "*", None, f"the run broke off after {listed} blobs ({type(error).__name__}: {first})"))
        self._send_batch()
        reached = self.done if self.done is not None else set()
        partial = dict.fromkeys(itertools.chain(self.open, self.groups.items() if self.groups is not None else ()))
        unreached = [item for item in dict.fromkeys(asked) if item not in reached and item not in partial]
        # a stopped run's asked-for products it never reached say so (a resubmit finishes them)
        beyond = causes.UNREACHED if isinstance(error, _Stopped) else why
        for item, cause in [*((item, why) for item in partial), *((item, beyond) for item in unreached)]:
            self.report.products += 1
            if self.traede:
                self.report.add_failed(Problem(self.traede.name, item, None, cause))
        self.open.clear()

    def _complete(self, item: str) -> None:
        images = self.open.pop(item)
        self.report.products += 1
        if self.done is not None:
            self.done.add(item)
        if self.traede is None or self.lane is None:
            return
        if item in self.withhold:
            self.report.add_deferred(Problem(self.traede.name, item, None, "left to the product sync that holds "
                                             "its lock: it lists and sends the product itself"))
            return
        try:
            code, colors, problem = self._traede_codes(item, images)
        except AzureError as exc:  # the look for another spelling's folder failed: cannot tell, so withhold
            why = str(exc).splitlines()[0][:200] if str(exc) else ""
            self.report.add_failed(Problem(self.traede.name, item, None, "not sent: storage did not answer when asked "
                                           "whether another folder spells the same code; a later run sends it",
                                           detail=f"{type(exc).__name__}: {why}"))
            return
        if problem:
            cause, detail = problem
            self.report.add_rejected(Problem(self.traede.name, item, None, f"not sent: {cause}", retryable=False,
                                             detail=detail))
            return
        product = traede_product(code, images, options=self.engine.traede_options, colors=colors)
        records = product.records if self.report.ledger is not None else ()  # only the report's ledger reads them
        self.batch.append(Unit(product.body, item, None, records, size=product.size))
        if len(self.batch) >= self.traede.batch_size:
            self._send_batch()

    def _traede_codes(self, item: str, images: list[SignedImage]
                      ) -> tuple[str, dict[str, str | None] | None, tuple[str, str] | None]:
        """TRAEDE's item number and colour codes for a folder's images, or why the product cannot be sent
        whole, as (cause, detail): a partial set would delete images at TRAEDE, so one unknown code withholds
        the product.

        The item number is the folder's, or the one PARTNER_CODES_FILE gives it, in NFC: a file is read whole
        before the run, so it can refuse two folders with one TRAEDE code. Blob metadata cannot rename a product:
        one blob's metadata cannot be checked against every other folder by a run that sends one product
        (the product queue), and a wrong guess replaces another product's images at TRAEDE.
        """
        code = nfc(item)
        if self.codes is not None and self.codes.items:
            pair = self.codes.items.get(code)
            if pair is None:
                what = "its empty set (delete all its images)" if not images else "the product"
                return item, None, (f"the item is not in PARTNER_CODES_FILE {self.codes.name!r}: the product has "
                                    "no TRAEDE item number to go to; add the item to the file",
                                    f"item {item!r}: {what} was not sent")
            code = pair[1]
        twin = self._twin(item, code)
        if twin:
            return item, None, twin
        if self.codes is None and not any(s.record.codes for s in images):
            return code, None, None  # (traede_product writes the folders' colours in NFC)
        colors: dict[str, str | None] = {}
        for signed in images:
            record = signed.record
            asked = (record.codes or {}).get("traede_item_number")
            if asked is not None and nfc(asked) != code:
                return item, None, ("a blob's metadata traede_item_number is not the product's TRAEDE item number: "
                                    "a TRAEDE item number other than the folder's comes from PARTNER_CODES_FILE "
                                    "(one row per folder); remove the metadata or add the folder to the file",
                                    f"blob {record.blob_name!r} has traede_item_number {asked[:60]!r}, the "
                                    f"product's is {code!r}")
            ids = partner_ids(record, self.codes, Partner.TRAEDE)
            if ids.problem:
                return item, None, (missing_code(self.codes), f"blob {record.blob_name!r}: {ids.problem}")
            colors[record.blob_name] = ids.color
        return code, colors, None

    def _twin(self, item: str, code: str) -> tuple[str, str] | None:
        """Why a folder must not go to TRAEDE when another folder spells the same code in another Unicode
        form ('Café' named on a Mac is NFD): both are one TRAEDE item, and each set would replace the other's.
        Every run that sends the product looks (a full sync, a shard, a single product: it lists the other
        spellings' folders), so both folders are refused, whichever run sends them; spellings that are
        neither NFC nor NFD are caught within a run."""
        if item.isascii():
            return None
        others = self.engine.catalog.twins(item)  # (AzureError: the caller withholds the product)
        earlier = self.claimed.get(code)
        if earlier is not None and earlier != item:
            others.append(earlier)
        self.claimed.setdefault(code, item)
        if not others:
            return None
        folders = " and ".join(f"{ascii(f)} ({_form(f)})" for f in sorted({item, *others}))
        return ("two folders spell one TRAEDE item number (codes compare in Unicode NFC): one TRAEDE product is "
                "one folder, and each set would replace the other's images; move the images of one folder into "
                "the other", f"TRAEDE item {code!r}: folders {folders}")

    def _send_batch(self) -> None:
        if self.batch and self.lane is not None:
            self.lane.put(self.batch)
        self.batch = []
