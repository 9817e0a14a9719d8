"""The sync engine: catalog -> SAS URLs -> Wallie batches and TRAEDE product sets.

One engine serves the blob trigger (one new image), the delete trigger (one product), the nightly
timer and the CLI (everything). Partners upsert, so every operation is safe to repeat.
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


class WallieTarget(Protocol):
    name: str
    batch_size: int

    def send_images(self, records: list[dict]) -> None: ...


class TraedeTarget(Protocol):
    name: str
    batch_size: int

    def sync_products(self, products: list[dict]) -> None: ...


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

    def full_sync(self, item_ids: Iterable[str] | None = None, *, dry_run: bool = False) -> SyncReport:
        """Every image (or every image of ``item_ids``) to Wallie, every product's full set to TRAEDE."""
        report = SyncReport(mode="full" if item_ids is None else "items", dry_run=dry_run)
        entries = self.catalog.scan() if item_ids is None else self._entries_of(item_ids, report)
        return self._sync(entries, report, item_ids)

    def sync_entries(self, entries: Iterable[CatalogEntry], *, mode: str = "shard") -> SyncReport:
        """Like ``full_sync``, over the entries given (one shard's blobs): every product in them is sent
        whole, so the caller must hand over all images of each product it includes."""
        return self._sync(entries, SyncReport(mode=mode), None)

    def _sync(self, entries: Iterable[CatalogEntry], report: SyncReport,
              item_ids: Iterable[str] | None) -> SyncReport:
        with _Runner(self, report) as run:
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
                    if self.wallie:
                        wallie_batch.append(_Unit(wallie_record(entry, url), entry.item_id, entry.blob_name))
                        if len(wallie_batch) >= self.wallie.batch_size:
                            run.submit_wallie(wallie_batch)
                            wallie_batch = []
            except AzureError as exc:
                listing_error = exc
            else:
                listing_error = None
            if wallie_batch:
                run.submit_wallie(wallie_batch)  # every listed image is complete on its own: upsert it
            for item_id in list(item_ids or ()):
                products.setdefault(item_id, [])  # an asked-for product with no images left: empty set
            report.products = len(products)
            if listing_error is None:
                run.submit_products(products)
            else:
                self._listing_failed(report, products, listing_error)
        return report.finish()

    def _listing_failed(self, report: SyncReport, products: dict, exc: Exception) -> None:
        """The container could not be listed to the end: TRAEDE gets nothing, because a product whose
        images were only partly listed would lose the rest there (full-set semantics)."""
        reason = f"listing the container stopped after {report.images + len(report.skipped)} blobs " \
                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        report.add_problem("failed", Problem("storage", "*", None, reason))
        if self.traede:
            for item_id in products:
                report.add_problem("failed", Problem(self.traede.name, item_id, None,
                                                     "not sent: the listing did not complete, and a partial "
                                                     "set would delete images at TRAEDE"))

    def new_image(self, blob_name: str) -> SyncReport:
        """A blob just arrived: that image to Wallie, its product's complete set to TRAEDE."""
        report = SyncReport(mode="image")
        entry = self.catalog.get(blob_name)
        if isinstance(entry, SkippedBlob):
            report.skipped.append(entry)
            return report.finish()
        url = self.sign(entry.blob_name)
        report.images = 1
        with _Runner(self, report) as run:
            if self.wallie:
                run.submit_wallie([_Unit(wallie_record(entry, url), entry.item_id, entry.blob_name)])
            if self.traede:
                images, skipped = self.catalog.product(entry.item_id)
                if not any(i.blob_name == entry.blob_name for i in images):
                    images.append(entry)  # listing may lag the event; never leave the new image out
                signed = [(i, url if i.blob_name == entry.blob_name else self.sign(i.blob_name)) for i in images]
                report.products = 1
                run.submit_products({entry.item_id: signed})
        return report.finish()

    def deleted_image(self, blob_name: str) -> SyncReport:
        """A blob was deleted: re-send its product's remaining images, so TRAEDE drops the deleted one."""
        report = SyncReport(mode="delete")
        fields = self.catalog.layout.match(blob_name)
        if fields is None:
            report.skipped.append(SkippedBlob(blob_name, "deleted blob's path does not fit IMAGE_PATH_PATTERN: "
                                                         "its product is corrected by the nightly sync"))
            return report.finish()
        return self.full_sync([fields.item_id])._retitle("delete")

    # -- helpers ----------------------------------------------------------------------------------

    def _entries_of(self, item_ids: Iterable[str], report: SyncReport) -> Iterator[CatalogEntry]:
        for item_id in dict.fromkeys(item_ids):
            images, skipped = self.catalog.product(item_id)
            yield from skipped
            yield from images


class _Runner:
    """Delivers units on a bounded thread pool and records every outcome in the report."""

    def __init__(self, engine: SyncEngine, report: SyncReport):
        self.engine = engine
        self.report = report
        self.pool = ThreadPoolExecutor(max_workers=engine.concurrency, thread_name_prefix="sync")
        # Bound the queue so memory does not grow with the catalog while the partners catch up.
        self.slots = threading.BoundedSemaphore(engine.concurrency * 2)
        self.futures: list[Future] = []
        self.targets = [t for t in (engine.wallie, engine.traede) if t is not None]
        report.partners = [t.name for t in self.targets]
        self.before = {t.name: _stats(t) for t in self.targets}

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

    def submit_wallie(self, units: list[_Unit]) -> None:
        target = self.engine.wallie
        self._submit(target.name, lambda batch: target.send_images([u.payload for u in batch]), units)

    def submit_products(self, products: dict[str, list[tuple[ImageRecord, str]]]) -> None:
        target = self.engine.traede
        if target is None:
            return
        attr = self.engine.color_attribute
        chunk: list[_Unit] = []
        for item_id, signed in products.items():
            urls = {img.blob_name: url for img, url in signed}
            payload = traede_product(item_id, [img for img, _ in signed], lambda i: urls[i.blob_name],
                                     color_attribute=attr)
            chunk.append(_Unit(payload, item_id, None))
            if len(chunk) >= target.batch_size:
                self._submit(target.name, lambda batch: target.sync_products([u.payload for u in batch]), chunk)
                chunk = []
        if chunk:
            self._submit(target.name, lambda batch: target.sync_products([u.payload for u in batch]), chunk)

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
        self.report.add_delivered(partner, len(units))
        if self.engine.progress:
            self.engine.progress(self.report)

    def _problem(self, kind: str, partner: str, units: list[_Unit], exc: PartnerError) -> None:
        reason = exc.message + (f": {exc.response_body.strip()}" if exc.response_body else "")
        for u in units:
            self.report.add_problem(kind, Problem(partner, u.item_id, u.blob_name, reason, exc.status_code))


def _stats(target: object) -> dict:
    stats = getattr(target, "stats", None)
    return stats() if callable(stats) else {"requests": 0, "retries": 0}
