"""Burst-safe product sends: uploads and deletes mark their product pending; the product queue sends each
pending product's complete set to TRAEDE once its burst has settled, one sender per product at a time.

Why: TRAEDE deletes every image a request leaves out. When a studio uploads twenty images of a product
at once, twenty trigger invocations each listing and sending the product race each other, and a set
listed early can reach TRAEDE after a fuller one listed later. So the blob and delete triggers no longer
send the product themselves:

1. ``image_uploaded`` sends the new image's Wallie record at once (records are independent upserts) and
   marks its product pending (``coordination.PendingMarks``). Only the call that *creates* the mark puts a
   message on ``PRODUCT_SYNC_QUEUE``, invisible for ``PRODUCT_SYNC_DELAY_SECONDS``: the rest of the
   burst joins the same mark, so twenty uploads cost one product send.
2. ``product_sync`` (the queue trigger) takes the product's lock, claims up to nine other products whose
   burst has also settled (one TRAEDE request carries up to ten), notes each mark's ETag, lists the
   products, sends their complete sets, and deletes each mark only if it was not bumped meanwhile. A
   change during the send keeps the mark and queues the product again; nothing is ever left behind.
3. A transient failure raises, so the host retries the message and finally moves it to
   ``<PRODUCT_SYNC_QUEUE>-poison``, which names the product. A rejected product is logged with TRAEDE's
   reason and not retried. A crashed sender's lock runs out after ``PRODUCT_LOCK_SECONDS``.

Full syncs (timer, shards, CLI) raise a fence while they run: product sends wait for it, and the full sync
leaves out the products whose lock is held (see ``coordination``).
"""
from __future__ import annotations

import json
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Iterable

from .catalog import SkippedBlob
from .coordination import FullSyncFence, FullSyncFences, PendingMarks, ProductLocks, StateContainer
from .errors import ConfigError, ImageSyncError
from .report import Problem, SyncReport

if TYPE_CHECKING:
    from .sync import SyncEngine

log = logging.getLogger(__name__)

MESSAGE_VERSION = 1
PRODUCTS_PER_SEND = 10  # TRAEDE's limit
LOCK_BUSY_RETRY_SECONDS = 5  # at most: another instance sends the product right now, look again after this
FENCE_RETRY_SECONDS = 15  # at most: a full sync is running, look again after this
WAIT_POLL_SECONDS = 1.0
STALE_MARK_SLACK_SECONDS = 60  # a mark pending this much longer than a send takes has probably lost its message


class FullSyncBusy(ImageSyncError):
    """Another full sync is still running after the wait allowed: this one did not start."""


@dataclass(frozen=True)
class ProductMessage:
    """One message of ``PRODUCT_SYNC_QUEUE``: ``{"v": 1, "container": "...", "item": "..."}``."""

    container: str
    item: str

    def to_json(self) -> str:
        return json.dumps({"v": MESSAGE_VERSION, "container": self.container, "item": self.item},
                          separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> ProductMessage:
        try:
            data = json.loads(text)
            if data.get("v") != MESSAGE_VERSION:
                raise ValueError(f"version {data.get('v')!r}, expected {MESSAGE_VERSION}")
            item = data["item"]
            if not isinstance(item, str) or not item:
                raise ValueError("no item")
            return cls(container=str(data["container"]), item=item)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a product message ({exc}): {text[:200]!r}") from exc


class ProductQueue:
    """The product-level operations that need coordination: uploads, deletes, queue messages, the CLI's
    ``--item`` and ``flush``, and the fence around every full sync."""

    def __init__(self, engine: SyncEngine, state: StateContainer, *, container: str, queue: Callable[[], Any],
                 delay_seconds: float, lock_seconds: int):
        self.engine = engine
        self.container = container
        self.marks = PendingMarks(state)
        self.locks = ProductLocks(state, lock_seconds)
        self.fences = FullSyncFences(state)
        self.delay = delay_seconds
        self._queue_factory = queue
        self._queue: Any = None

    @property
    def _partner(self) -> str:
        from .traede import TraedeClient

        return self.engine.traede.name if self.engine.traede else TraedeClient.name

    # -- the triggers -------------------------------------------------------------------------------

    def image_uploaded(self, blob_name: str, *, ledger: Any = None) -> SyncReport:
        """The new image's record to Wallie now; its product to TRAEDE through the queue. ``ledger`` records
        what Wallie got (the run history keeps it)."""
        if blob_name == self.engine.codes_file:
            return self._codes_file_changed("image", ledger)
        entry = self.engine.catalog.get(blob_name)
        if isinstance(entry, SkippedBlob):
            report = SyncReport(mode="image", ledger=ledger, layout=self.engine.catalog.layout.pattern)
            report.skipped.append(entry)
            return report.finish()
        report = self.engine.send_image(entry, ledger=ledger)
        if self.engine.traede:
            self.request(entry.item_id)
            report.queued.append(entry.item_id)
        return report

    def image_deleted(self, blob_name: str) -> SyncReport:
        """A blob was deleted: its product's remaining set goes to TRAEDE through the queue."""
        if blob_name == self.engine.codes_file:
            return self._codes_file_changed("delete", None)
        report = SyncReport(mode="delete", layout=self.engine.catalog.layout.pattern)
        fields = self.engine.catalog.layout.match(blob_name)
        if fields is None:
            report.skipped.append(SkippedBlob(blob_name, "deleted blob's path does not fit IMAGE_PATH_PATTERN: "
                                                         "its product is corrected by the nightly sync"))
        elif self.engine.traede:
            self.request(fields.item_id)
            report.queued.append(fields.item_id)
        return report.finish()

    def _codes_file_changed(self, mode: str, ledger: Any) -> SyncReport:
        """PARTNER_CODES_FILE was uploaded or deleted: not an image, and no product of its own."""
        report = SyncReport(mode=mode, ledger=ledger, layout=self.engine.catalog.layout.pattern)
        report.notes.append(f"{self.engine.codes_file!r} is PARTNER_CODES_FILE: the next run of each product uses "
                            "it (the nightly sync sends every product); nothing to send for it now")
        log.info("%s", report.notes[-1])
        return report.finish()

    def request(self, item: str) -> None:
        """Mark ``item`` pending; the call that makes it pending queues its message (and so does a call
        that finds it pending for much longer than a send takes: see ``PendingMarks.request``)."""
        if not self.marks.request(item, stale_after=self.delay + 2 * self.locks.seconds + STALE_MARK_SLACK_SECONDS):
            return
        try:
            self.enqueue(item, self.delay)
        except Exception:
            # No message, no mark: the host retries this invocation, which marks and queues again.
            etag = self.marks.etag(item)
            if etag is not None:
                self.marks.clear(item, etag)
            raise

    def enqueue(self, item: str, delay: float) -> None:
        if self._queue is None:
            from .storage import ensure_queue

            queue = self._queue_factory()
            ensure_queue(queue)
            self._queue = queue
        self._queue.send_message(ProductMessage(self.container, item).to_json(),
                                 visibility_timeout=max(0, math.ceil(delay)))

    def run_message(self, text: str, *, ledger: Any = None) -> SyncReport:
        """One message of the product queue, as the host hands it over."""
        message = ProductMessage.from_json(text)
        if message.container != self.container:
            raise ConfigError(f"product message is for container {message.container!r}, but IMAGES_CONTAINER is "
                              f"{self.container!r}")
        return self._send([message.item], wait=False, ledger=ledger)

    # -- the operator -------------------------------------------------------------------------------

    def sync_now(self, items: Iterable[str], *, empty_sets: bool = False,
                 on_wait: Callable[[str], None] | None = None, report: SyncReport | None = None) -> SyncReport:
        """``sync --item``: these products now, whether pending or not, waiting for a sender or a full sync
        that has them. A product without any image is sent as an empty set only with ``empty_sets``."""
        report = report or SyncReport()
        report.mode = "items"
        wanted = list(dict.fromkeys(items))
        for start in range(0, len(wanted), PRODUCTS_PER_SEND):
            report.merge(self._send(wanted[start:start + PRODUCTS_PER_SEND], wait=True, force=True,
                                    wallie=True, empty_sets=empty_sets, on_wait=on_wait, ledger=report.ledger))
        return report.finish()

    def flush(self, *, on_wait: Callable[[str], None] | None = None, ledger: Any = None) -> SyncReport:
        """``flush``: every pending product now, without waiting for its delay."""
        report = SyncReport(mode="flush", ledger=ledger)
        pending = sorted(self.marks.snapshot())
        for start in range(0, len(pending), PRODUCTS_PER_SEND):
            report.merge(self._send(pending[start:start + PRODUCTS_PER_SEND], wait=True, on_wait=on_wait,
                                    ledger=ledger))
        return report.finish()

    def pending(self) -> dict[str, float]:
        """Pending products and for how many seconds each has been pending."""
        return {item: age for item, (_, age) in self.marks.snapshot().items()}

    # -- the send -----------------------------------------------------------------------------------

    def _send(self, items: list[str], *, wait: bool, force: bool = False, wallie: bool = False,
              empty_sets: bool = True, on_wait: Callable[[str], None] | None = None,
              ledger: Any = None) -> SyncReport:
        """Lock, (claim more,) check fences, note marks, list, send, settle marks, unlock."""
        report = SyncReport(mode="product", ledger=ledger)
        if not force:
            items = [i for i in items if self.marks.etag(i) is not None]
            if not items:
                report.notes.append("already sent: no product of this message is pending any more")
                return report.finish()
        held: list[str] = []
        try:
            busy_retry = max(1, min(LOCK_BUSY_RETRY_SECONDS, math.ceil(self.delay)))
            for item in items:
                if not self._lock(item, wait, on_wait):
                    self.enqueue(item, busy_retry)
                    report.add_deferred(Problem(self._partner, item, None, "another instance is sending this "
                                                f"product now; it is looked at again in {busy_retry} s"))
                    continue
                held.append(item)
            if not held:
                return report.finish()
            if not wait:  # the queue path: fill the request with other products whose burst settled
                for other in self.marks.due(self.delay, 3 * PRODUCTS_PER_SEND, exclude=held):
                    if len(held) >= PRODUCTS_PER_SEND:
                        break
                    if self.locks.try_acquire(other):
                        held.append(other)
            if not self._fences_clear(wait, on_wait):
                fence_retry = max(2, min(FENCE_RETRY_SECONDS, math.ceil(2 * self.delay)))
                for item in items:
                    if item in held:
                        self.enqueue(item, fence_retry)
                        report.add_deferred(Problem(self._partner, item, None, "a full sync is running; the product "
                                                    f"is looked at again in {fence_retry} s"))
                return report.finish()
            etags = {item: self.marks.etag(item) for item in held}
            batch = [item for item in held if etags[item] is not None or (force and item in items)]
            if not batch:
                report.notes.append("already sent: no product of this message is pending any more")
                return report.finish()
            sent = self.engine.send_products(batch, guard=lambda: min(self.locks.remaining(i) for i in batch),
                                             wallie=wallie, mode=report.mode, empty_sets=empty_sets,
                                             ledger=ledger)
            report.merge(sent)
            for item in batch:
                etag = etags[item]
                if etag is not None and sent.outcome(self._partner, item) in ("delivered", "rejected") \
                        and not self.marks.clear(item, etag):
                    self.enqueue(item, self.delay)  # it changed during the send: its new set goes next
        finally:
            for item in held:
                self.locks.release(item)
        return report.finish()

    def _lock(self, item: str, wait: bool, on_wait: Callable[[str], None] | None) -> bool:
        if self.locks.try_acquire(item):
            return True
        if not wait:
            return False
        deadline = time.monotonic() + self.locks.seconds + 30
        if on_wait:
            on_wait(f"product {item!r} is being sent by another instance: waiting for it")
        while time.monotonic() < deadline:
            time.sleep(WAIT_POLL_SECONDS)
            if self.locks.try_acquire(item):
                return True
        raise FullSyncBusy(f"product {item!r} stayed locked by another instance for {self.locks.seconds + 30} s")

    def _fences_clear(self, wait: bool, on_wait: Callable[[str], None] | None) -> bool:
        fences = self.fences.active()
        if not fences:
            return True
        if not wait:
            return False
        if on_wait:
            on_wait(f"a full sync is running ({fences[0].what}): waiting for it to finish")
        while self.fences.active():
            time.sleep(WAIT_POLL_SECONDS * 2)
        return True

    # -- full syncs ---------------------------------------------------------------------------------

    def full_sync_unit(self, what: str, *, run: str | None = None, wait_seconds: float = 300,
                       on_wait: Callable[[str], None] | None = None) -> FullSyncUnit:
        return FullSyncUnit(self, what, run or uuid.uuid4().hex, wait_seconds, on_wait)

    def fenced(self, what: str, sync: Callable[[frozenset[str], Iterable[str]], SyncReport], *,
               run: str | None = None, wait_seconds: float = 300,
               on_wait: Callable[[str], None] | None = None) -> SyncReport:
        """A full sync (or a shard of one) behind its fence: ``sync(withhold, track)`` runs once the fence
        is up, leaving out the products whose lock is held; then the pending products it delivered are
        settled."""
        with self.full_sync_unit(what, run=run, wait_seconds=wait_seconds, on_wait=on_wait) as unit:
            report = sync(unit.withhold, unit.pending)
            unit.settle(report)
        return report


class FullSyncUnit:
    """``with queue.full_sync_unit("nightly") as unit: engine.full_sync(withhold=unit.withhold)``

    Raises the fence, waits for older full syncs of other runs, notes the held product locks (their
    products are left to their holders) and the pending marks; on success, ``settle(report)`` clears the
    marks of pending products the full sync delivered after the fence was up.
    """

    def __init__(self, queue: ProductQueue, what: str, run: str, wait_seconds: float,
                 on_wait: Callable[[str], None] | None):
        self.queue, self.what, self.run = queue, what, run
        self.wait_seconds, self.on_wait = wait_seconds, on_wait
        self.fence: FullSyncFence | None = None
        self.withhold: frozenset[str] = frozenset()
        self.pending: dict[str, tuple[str, float]] = {}

    def __enter__(self) -> FullSyncUnit:
        fences = self.queue.fences
        self.fence = fences.open(self.run, self.what)
        try:
            started, told = time.monotonic(), False
            while older := fences.older_than(self.fence):
                if time.monotonic() - started > self.wait_seconds:
                    raise FullSyncBusy(f"another full sync is still running ({older[0].what}, run {older[0].run}) "
                                       f"after waiting {self.wait_seconds:g} s: try again when it has finished")
                if self.on_wait and not told:
                    self.on_wait(f"waiting for the full sync already running ({older[0].what}) to finish")
                    told = True
                time.sleep(WAIT_POLL_SECONDS * 2)
            self.pending = self.queue.marks.snapshot()
            self.withhold = frozenset(self.queue.locks.held_by_anyone())
        except BaseException:
            self.fence.close()
            raise
        return self

    def settle(self, report: SyncReport) -> None:
        """Clear the marks the full sync made obsolete: products it delivered after the fence was up."""
        for item, (etag, _) in self.pending.items():
            if item not in self.withhold and item in report.delivered_items:
                self.queue.marks.clear(item, etag)

    def __exit__(self, *exc: object) -> None:
        if self.fence is not None:
            self.fence.close()
