"""The sync engine: catalog -> SAS URLs -> Wallie batches and TRAEDE product sets.

One engine serves the blob trigger (one new image to Wallie), the product queue (products' complete sets
to TRAEDE), the nightly timer and the CLI (everything). Partners upsert, so every operation is safe to
repeat. Coordination between processes (who may send a product when) lives in ``product_queue``.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Protocol

from azure.core.exceptions import AzureError

from .catalog import Catalog, CatalogEntry, ImageRecord, SkippedBlob
from .errors import PartnerError, RejectedError
from .payloads import traede_product, wallie_record
from .report import Problem, SyncReport

Guard = Callable[[], float]


class WallieTarget(Protocol):
    name: str
    batch_size: int

    def send_images(self, records: list[dict], guard: Guard | None = None) -> None: ...


class TraedeTarget(Protocol):
    name: str
    batch_size: int

    def sync_products(self, products: list[dict], guard: Guard | None = None) -> None: ...


class _Unit:
    """One record on its way to a partner, with what the report needs to name it."""

    __slots__ = ("payload", "item_id", "blob_name")

    def __init__(self, payload: dict, item_id: str, blob_name: str | None):
        self.payload, self.item_id, self.blob_name = payload, item_id, blob_name


class SyncEngine:
    def __init__(self, catalog: Catalog, sign: Callable[[str], str], *,
                 wallie: WallieTarget | None = None, traede: TraedeTarget | None = None,
                 concurrency: int = 4, color_attribute: str = "Color",
                 progress: Callable[[SyncReport], None] | None = None):
        self.catalog = catalog
        self.sign = sign
        self.wallie = wallie
        self.traede = traede
        self.concurrency = concurrency
        self.color_attribute = color_attribute
        self.progress = progress

    # -- the operations ---------------------------------------------------------------------------

    def full_sync(self, item_ids: Iterable[str] | None = None, *, dry_run: bool = False,
                  withhold: frozenset[str] = frozenset(), track: Iterable[str] = ()) -> SyncReport:
        """Every image (or every image of ``item_ids``) to Wallie, every product's full set to TRAEDE.

        Products in ``withhold`` are not sent to TRAEDE: another process holds their lock and sends them
        itself (see ``coordination``); they are reported as deferred. The TRAEDE outcome of the products
        in ``track`` is kept in ``report.delivered_items``.
        """
        report = SyncReport(mode="full" if item_ids is None else "items", dry_run=dry_run, track=set(track))
        items = None if item_ids is None else list(dict.fromkeys(item_ids))
        entries = self.catalog.scan() if items is None else self._entries_of(items)
        return self._sync(entries, report, items=items, withhold=withhold)

    def sync_entries(self, entries: Iterable[CatalogEntry], *, mode: str = "shard",
                     withhold: frozenset[str] = frozenset(), track: Iterable[str] = ()) -> SyncReport:
        """Like ``full_sync``, over the entries given (one shard's blobs): every product in them is sent
        whole, so the caller must hand over all images of each product it includes."""
        return self._sync(entries, SyncReport(mode=mode, track=set(track)), withhold=withhold)

    def send_image(self, entry: ImageRecord) -> SyncReport:
        """One new image to Wallie. Its product goes to TRAEDE through the product queue, coalesced with
        the rest of its burst (``product_queue``)."""
        report = SyncReport(mode="image")
        report.images = 1
        with _Runner(self, report, [self.wallie] if self.wallie else []) as run:
            if self.wallie:
                run.submit_wallie([_Unit(wallie_record(entry, self.sign(entry.blob_name)), entry.item_id,
                                         entry.blob_name)])
        return report.finish()

    def send_products(self, item_ids: Iterable[str], *, guard: Guard | None = None, wallie: bool = False,
                      mode: str = "product") -> SyncReport:
        """Each product's complete set, listed now, to TRAEDE (10 products a request), and with ``wallie``
        its images' records to Wallie. ``guard`` bounds every HTTP attempt by the products' locks."""
        items = list(dict.fromkeys(item_ids))
        report = SyncReport(mode=mode, track=set(items))
        targets = [t for t in (self.wallie if wallie else None, self.traede) if t is not None]
        return self._sync(self._entries_of(items), report, items=items, targets=targets, guard=guard)

    # -- the one path -------------------------------------------------------------------------------

    def _sync(self, entries: Iterable[CatalogEntry], report: SyncReport, *, items: list[str] | None = None,
              withhold: frozenset[str] = frozenset(), targets: list | None = None,
              guard: Guard | None = None) -> SyncReport:
        targets = [t for t in (self.wallie, self.traede) if t is not None] if targets is None else targets
        wallie = self.wallie if self.wallie in targets else None
        traede = self.traede if self.traede in targets else None
        with _Runner(self, report, targets) as run:
            products: dict[str, list[tuple[ImageRecord, str]]] = defaultdict(list)
            wallie_batch: list[_Unit] = []
            try:
                for entry in entries:
                    if isinstance(entry, SkippedBlob):
                        report.skipped.append(entry)
                        continue
                    url = self.sign(entry.blob_name)
                    report.images += 1
                    products[entry.item_id].append((entry, url))
                    if wallie:
                        wallie_batch.append(_Unit(wallie_record(entry, url), entry.item_id, entry.blob_name))
                        if len(wallie_batch) >= wallie.batch_size:
                            run.submit_wallie(wallie_batch, guard)
                            wallie_batch = []
            except AzureError as exc:
                listing_error: Exception | None = exc
            else:
                listing_error = None
            if wallie_batch:
                run.submit_wallie(wallie_batch, guard)  # every listed image is complete on its own: upsert it
            for item_id in items or ():
                products.setdefault(item_id, [])  # an asked-for product with no images left: empty set
            report.products = len(products)
            if traede:
                for item_id in withhold & products.keys():
                    del products[item_id]
                    report.add_deferred(Problem(traede.name, item_id, None, "left to the product sync that holds "
                                                "its lock: it lists and sends the product itself"))
                if listing_error is None:
                    run.submit_products(products, guard)
                else:
                    self._listing_failed(report, traede, products, listing_error)
            elif listing_error is not None:
                self._listing_failed(report, None, {}, listing_error)
        return report.finish()

    def _listing_failed(self, report: SyncReport, traede: TraedeTarget | None, products: dict,
                        exc: Exception) -> None:
        """The container could not be listed to the end: TRAEDE gets nothing, because a product whose
        images were only partly listed would lose the rest there (full-set semantics)."""
        reason = f"listing the container stopped after {report.images + len(report.skipped)} blobs " \
                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        report.add_problem("failed", Problem("storage", "*", None, reason))
        for item_id in products if traede else ():
            report.add_problem("failed", Problem(traede.name, item_id, None,
                                                 "not sent: the listing did not complete, and a partial "
                                                 "set would delete images at TRAEDE"))

    def _entries_of(self, item_ids: list[str]) -> Iterator[CatalogEntry]:
        for item_id in item_ids:
            images, skipped = self.catalog.product(item_id)
            yield from skipped
            yield from images


class _Runner:
    """Delivers units to the given targets on a bounded thread pool and records every outcome."""

    def __init__(self, engine: SyncEngine, report: SyncReport, targets: list):
        self.engine = engine
        self.report = report
        self.pool = ThreadPoolExecutor(max_workers=engine.concurrency, thread_name_prefix="sync")
        # Bound the queue so memory does not grow with the catalog while the partners catch up.
        self.slots = threading.BoundedSemaphore(engine.concurrency * 2)
        self.futures: list[Future] = []
        self.targets = targets
        report.partners = [t.name for t in targets]
        self.before = {t.name: _stats(t) for t in targets}

    def __enter__(self) -> "_Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self.futures:
            f.result()
        self.pool.shutdown(wait=True)
        for t in self.targets:
            after = _stats(t)
            self.report.add(requests=after["requests"] - self.before[t.name]["requests"],
                            retries=after["retries"] - self.before[t.name]["retries"])

    def submit_wallie(self, units: list[_Unit], guard: Guard | None = None) -> None:
        target = self.engine.wallie

        def send(batch: list[_Unit]) -> None:
            target.send_images([u.payload for u in batch], guard=guard)

        self._submit(target.name, send, units)

    def submit_products(self, products: dict[str, list[tuple[ImageRecord, str]]], guard: Guard | None = None) -> None:
        target = self.engine.traede
        attr = self.engine.color_attribute
        chunk: list[_Unit] = []

        def send(batch: list[_Unit]) -> None:
            target.sync_products([u.payload for u in batch], guard=guard)

        for item_id, signed in products.items():
            urls = {img.blob_name: url for img, url in signed}
            payload = traede_product(item_id, [img for img, _ in signed], lambda i: urls[i.blob_name],
                                     color_attribute=attr)
            chunk.append(_Unit(payload, item_id, None))
            if len(chunk) >= target.batch_size:
                self._submit(target.name, send, chunk)
                chunk = []
        if chunk:
            self._submit(target.name, send, chunk)

    def _submit(self, partner: str, send: Callable[[list[_Unit]], None], units: list[_Unit]) -> None:
        self.slots.acquire()
        future = self.pool.submit(self._deliver, partner, send, units)
        future.add_done_callback(lambda _: self.slots.release())
        self.futures.append(future)

    def _deliver(self, partner: str, send: Callable[[list[_Unit]], None], units: list[_Unit]) -> None:
        """Send a batch; on a rejection split it until the rejected records stand alone."""
        try:
            send(units)
        except RejectedError as exc:
            if len(units) > 1:
                mid = len(units) // 2
                self._deliver(partner, send, units[:mid])
                self._deliver(partner, send, units[mid:])
                return
            self._problem("rejected", partner, units, exc)
            return
        except PartnerError as exc:
            self._problem("failed", partner, units, exc)
            return
        self.report.add_delivered(partner, len(units),
                                  items=[u.item_id for u in units] if partner == self._traede_name else ())
        if self.engine.progress:
            self.engine.progress(self.report)

    @property
    def _traede_name(self) -> str | None:
        return self.engine.traede.name if self.engine.traede else None

    def _problem(self, kind: str, partner: str, units: list[_Unit], exc: PartnerError) -> None:
        reason = exc.message + (f": {exc.response_body.strip()}" if exc.response_body else "")
        for u in units:
            self.report.add_problem(kind, Problem(partner, u.item_id, u.blob_name, reason, exc.status_code))


def _stats(target: object) -> dict:
    stats = getattr(target, "stats", None)
    return stats() if callable(stats) else {"requests": 0, "retries": 0}
