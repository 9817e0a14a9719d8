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
4. **A request whose outcome is unknown** (cut off or reset after TRAEDE had all of it, a gateway's 502/504)
   may still be applied by TRAEDE at any later time, after a newer set. So every product it carried is sent
   again once that request must have been applied or dropped: a ``resend`` message, invisible for
   ``PRODUCT_RESEND_SECONDS``, sends the product's then current set. The newest complete set is always
   the last one sent.
5. **A message whose mark is gone** is sent anyway (the state container may have been deleted or emptied),
   unless ``settled/<item>`` proves that this message's own mark was settled by a send that listed the
   product after it.

Full syncs (timer, shards, CLI) raise a fence while they run: product sends wait for it, and the full sync
leaves out the products whose lock is held (see ``coordination``).
"""
from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..catalog.records import SkippedBlob
from ..domain import Partner
from ..errors import ConfigError, ImageSyncError, StateError
from ..runs.ledger import Ledger
from ..runs.report import Problem, SyncReport
from .leases import FenceInfo, FullSyncFence, FullSyncFences, ProductLocks
from .marks import Mark, PendingMarks
from .state import StateContainer

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient

    from ..engine.sync import SyncEngine

log = logging.getLogger(__name__)

MESSAGE_VERSION = 1
PRODUCTS_PER_SEND = 10  # TRAEDE's limit
LOCK_BUSY_RETRY_SECONDS = 5  # at most: another instance sends the product right now, look again after this
FENCE_RETRY_SECONDS = 15  # at most: a full sync is running, look again after this
WAIT_POLL_SECONDS = 1.0
STALE_MARK_SLACK_SECONDS = 60  # a mark pending this much longer than a send takes has probably lost its message
DEFAULT_WAIT_SECONDS = 600.0  # how long the operator's commands wait for a full sync or a product's sender
HOLDER_EVERY_SECONDS = 30.0   # while waiting for a full sync, say again who holds the fence this often
BEING_DELETED_RETRY_SECONDS = 60  # a deleted state container can be created again after about 30 s


class FullSyncBusy(ImageSyncError):
    """Another full sync (or a product's sender) still holds what this one needs after the wait allowed."""


@dataclass(frozen=True)
class ProductMessage:
    """One message of ``PRODUCT_SYNC_QUEUE``: ``{"v": 1, "container": "...", "item": "..."}``, plus ``gen``
    (the generation of the pending mark it was queued for) or ``resend`` (send the product again whether it is
    pending or not: an earlier request's outcome is unknown)."""

    container: str
    item: str
    gen: int | None = None
    resend: bool = False

    def to_json(self) -> str:
        data: dict[str, Any] = {"v": MESSAGE_VERSION, "container": self.container, "item": self.item}
        if self.gen:
            data["gen"] = self.gen
        if self.resend:
            data["resend"] = True
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> ProductMessage:
        try:
            data = json.loads(text)
            if data.get("v") != MESSAGE_VERSION:
                raise ValueError(f"version {data.get('v')!r}, expected {MESSAGE_VERSION}")
            item = data["item"]
            if not isinstance(item, str) or not item:
                raise ValueError("no item")
            gen = data.get("gen")
            return cls(container=str(data["container"]), item=item,
                       gen=gen if isinstance(gen, int) and not isinstance(gen, bool) and gen > 0 else None,
                       resend=data.get("resend") is True)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a product message ({exc}): {text[:200]!r}") from exc


class ProductQueue:
    """The product-level operations that need coordination: uploads, deletes, queue messages, the CLI's
    ``--item`` and ``flush``, and the fence around every full sync."""

    def __init__(self, engine: SyncEngine, state: StateContainer, *, container: str, queue: Callable[[], QueueClient],
                 delay_seconds: float, lock_seconds: int, resend_seconds: float = 300.0,
                 fence_seconds: int = 60):
        self.engine = engine
        self.container = container
        self.marks = PendingMarks(state)
        self.locks = ProductLocks(state, lock_seconds)
        self.fences = FullSyncFences(state, fence_seconds)
        self.delay = delay_seconds
        self.resend_seconds = resend_seconds
        self._queue_factory = queue
        self._queue: QueueClient | None = None

    # -- the triggers -------------------------------------------------------------------------------

    def image_uploaded(self, blob_name: str, *, ledger: Ledger | None = None) -> SyncReport:
        """The new image's record to Wallie now; its product to TRAEDE through the queue. ``ledger`` records
        what Wallie got (the run history keeps it)."""
        if blob_name == self.engine.codes_file:
            return self._codes_file_changed("image", ledger)
        entry = self.engine.catalog.get(blob_name)
        if isinstance(entry, SkippedBlob):
            report = self._report("image", ledger)
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
        report = self._report("delete", None)
        web = self.engine.web
        if web is not None:  # its rendition goes with it (a failure raises: the event is delivered again)
            for name in web.forget(blob_name):
                report.notes.append(f"rendition {name!r} deleted with its image")
        fields = self.engine.catalog.layout.match(blob_name)
        if fields is None:
            report.skipped.append(SkippedBlob(blob_name, "deleted blob's path does not fit IMAGE_PATH_PATTERN: "
                                                         "its product is corrected by the nightly sync"))
        elif self.engine.traede:
            self.request(fields.item_id)
            report.queued.append(fields.item_id)
        return report.finish()

    def _codes_file_changed(self, mode: str, ledger: Ledger | None) -> SyncReport:
        """PARTNER_CODES_FILE was uploaded or deleted: not an image, and no product of its own."""
        report = self._report(mode, ledger)
        report.notes.append(f"{self.engine.codes_file!r} is PARTNER_CODES_FILE: the next run of each product uses "
                            "it (the nightly sync sends every product); nothing to send for it now")
        log.info("%s", report.notes[-1])
        return report.finish()

    def _report(self, mode: str, ledger: Ledger | None) -> SyncReport:
        layout = self.engine.catalog.layout
        return SyncReport(mode=mode, ledger=ledger, layout=layout.pattern, item_separator=layout.item_prefix_separator)

    def request(self, item: str) -> None:
        """Mark ``item`` pending; the call that makes it pending queues its message (and so does a call
        that finds it pending for much longer than a send takes: see ``PendingMarks.request``)."""
        requested = self.marks.request(item, stale_after=self.delay + 2 * self.locks.seconds + STALE_MARK_SLACK_SECONDS)
        if requested is None:
            return
        try:
            self.enqueue(ProductMessage(self.container, item, gen=requested.gen), self.delay)
        except Exception:
            # No message, no mark: the host retries this invocation, which marks and queues again.
            self.marks.withdraw(item, requested)
            raise

    def enqueue(self, message: ProductMessage, delay: float) -> None:
        from azure.core.exceptions import AzureError

        try:
            if self._queue is None:
                from ..storage.clients import ensure_queue

                queue = self._queue_factory()
                ensure_queue(queue)
                self._queue = queue
            self._queue.send_message(message.to_json(), visibility_timeout=max(0, math.ceil(delay)))
        except AzureError as exc:
            code = getattr(exc, "error_code", None) or type(exc).__name__
            name = getattr(self._queue, "queue_name", "") or "the product queue"
            text = str(exc).strip().splitlines()
            raise StateError(f"PRODUCT_SYNC_QUEUE {name!r}: queueing product {message.item!r} failed ({code}: "
                             f"{text[0][:200] if text else ''}): check that storage can be reached and that the "
                             "app may send messages there ('Storage Queue Data Contributor')") from exc

    def resend_later(self, items: Iterable[str], report: SyncReport) -> None:
        """Send these products again once the requests of unknown outcome that carried them must have been
        applied or dropped by TRAEDE (``PRODUCT_RESEND_SECONDS``): then the newest set is the last one sent."""
        items = sorted(set(items))
        for item in items:
            self.enqueue(ProductMessage(self.container, item, resend=True), self.resend_seconds)
        if items:
            shown = ", ".join(repr(i) for i in items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
            report.notes.append(f"{len(items)} products are sent to TRAEDE again in {self.resend_seconds:g} s "
                                f"(PRODUCT_RESEND_SECONDS): a request that carried them was cut off after TRAEDE "
                                f"had it, so TRAEDE may still apply it later, after a newer set: {shown}")

    def run_message(self, text: str, *, ledger: Ledger | None = None) -> SyncReport:
        """One message of the product queue, as the host hands it over."""
        message = ProductMessage.from_json(text)
        if message.container != self.container:
            raise ConfigError(f"product message is for container {message.container!r}, but IMAGES_CONTAINER is "
                              f"{self.container!r}")
        report = SyncReport(mode="product", ledger=ledger)
        try:
            if not message.resend and not self._still_due(message, report):
                return report.finish()
            return self._send([message.item], report, message=message)
        except StateError as exc:
            if not exc.being_deleted:
                raise
            # Azure re-creates a deleted container only after a while: wait for it rather than fail this message
            # five times into the poison queue (the product would then wait for the nightly sync).
            self.enqueue(message, BEING_DELETED_RETRY_SECONDS)
            report.notes.append(f"{exc}; the product is looked at again in {BEING_DELETED_RETRY_SECONDS} s")
            log.warning("%s", report.notes[-1])
            return report.finish()

    def _still_due(self, message: ProductMessage, report: SyncReport) -> bool:
        """Whether a message must send its product: yes while it is pending, and also when its mark is gone,
        unless the container proves that this message's mark, or a newer one, was settled."""
        if self.marks.read(message.item) is not None:
            return True
        settled = self.marks.settled(message.item)
        if message.gen and settled is not None and settled >= message.gen:
            report.notes.append("already sent: a send that listed the product after this message was queued "
                                "has finished")
            return False
        report.notes.append(f"product {message.item!r} has no pending mark in SYNC_STATE_CONTAINER and nothing "
                            "there says it was sent since (the container was deleted or emptied?): it is sent "
                            "anyway; an extra complete set is harmless")
        log.warning("%s", report.notes[-1])
        return True

    # -- the operator -------------------------------------------------------------------------------

    def sync_now(self, items: Iterable[str], *, empty_sets: bool = False,
                 on_wait: Callable[[str], None] | None = None, report: SyncReport | None = None,
                 wait_seconds: float = DEFAULT_WAIT_SECONDS, wallie: bool = True) -> SyncReport:
        """``sync --item``: these products now, whether pending or not, waiting (at most ``wait_seconds``)
        for a sender or a full sync that has them. A product without any image is sent as an empty set only
        with ``empty_sets``. ``wallie``: their images' records to Wallie too (a resubmit of a product only
        TRAEDE failed sends its set alone)."""
        report = report or SyncReport()
        report.mode = "items"
        wanted = list(dict.fromkeys(items))
        for start in range(0, len(wanted), PRODUCTS_PER_SEND):
            part = SyncReport(mode="product", ledger=report.ledger)
            report.merge(self._send(wanted[start:start + PRODUCTS_PER_SEND], part, operator=_Operator(
                on_wait, wait_seconds, force=True), wallie=wallie, empty_sets=empty_sets))
        return report.finish()

    def flush(self, *, on_wait: Callable[[str], None] | None = None, ledger: Ledger | None = None,
              wait_seconds: float = DEFAULT_WAIT_SECONDS) -> SyncReport:
        """``flush``: every pending product now, without waiting for its delay."""
        report = SyncReport(mode="flush", ledger=ledger)
        pending = sorted(self.marks.snapshot())
        for start in range(0, len(pending), PRODUCTS_PER_SEND):
            part = SyncReport(mode="product", ledger=ledger)
            report.merge(self._send(pending[start:start + PRODUCTS_PER_SEND], part,
                                    operator=_Operator(on_wait, wait_seconds)))
        return report.finish()

    def pending(self) -> dict[str, float]:
        """Pending products and for how many seconds each has been pending."""
        return {item: mark.age for item, mark in self.marks.snapshot().items()}

    # -- the send -----------------------------------------------------------------------------------

    def _send(self, items: list[str], report: SyncReport, *, message: ProductMessage | None = None,
              operator: _Operator | None = None, wallie: bool = False, empty_sets: bool = True) -> SyncReport:
        """Lock, (claim more,) check fences, read marks, list, send, settle marks, unlock. Either for a queue
        ``message`` (never waits: defers by queueing it again) or for the ``operator`` (waits, bounded)."""
        held: list[str] = []
        try:
            held = self._take_locks(items, report, message, operator)
            if not held:
                return report.finish()
            overtaken = self._fences_clear(operator)
            if overtaken is None:
                assert message is not None  # the operator waits or raises
                retry = max(2, min(FENCE_RETRY_SECONDS, math.ceil(2 * self.delay)))
                self.enqueue(message, retry)
                report.add_deferred(Problem(Partner.TRAEDE, message.item, None, "a full sync is running; the "
                                            f"product is looked at again in {retry} s"))
                return report.finish()
            if message is not None:  # fill the request with other products whose burst settled
                for other in self.marks.due(self.delay, 3 * PRODUCTS_PER_SEND, exclude=held):
                    if len(held) >= PRODUCTS_PER_SEND:
                        break
                    if self.locks.try_acquire(other):
                        held.append(other)
            marks = {item: self.marks.read(item) for item in held}
            forced = message is not None or (operator is not None and operator.force)
            batch = [item for item in held if marks[item] is not None or (forced and item in items)]
            if not batch:
                report.notes.append("already sent: no product of this message is pending any more")
                return report.finish()
            sent = self.engine.send_products(batch, guard=lambda: min(self.locks.remaining(i) for i in batch),
                                             wallie=wallie, mode=report.mode, empty_sets=empty_sets,
                                             ledger=report.ledger)
            report.merge(sent)
            self._settle(batch, marks, sent, report, overtaken)
        finally:
            for item in held:
                self.locks.release(item)
        return report.finish()

    def _take_locks(self, items: list[str], report: SyncReport, message: ProductMessage | None,
                    operator: _Operator | None) -> list[str]:
        held = []
        for item in items:
            if operator is not None:
                self._lock(item, operator)
            elif not self.locks.try_acquire(item):
                assert message is not None
                retry = max(1, min(LOCK_BUSY_RETRY_SECONDS, math.ceil(self.delay)))
                self.enqueue(message, retry)
                report.add_deferred(Problem(Partner.TRAEDE, item, None, "another instance is sending this "
                                            f"product now; it is looked at again in {retry} s"))
                continue
            held.append(item)
        return held

    def _settle(self, batch: list[str], marks: dict[str, Mark | None], sent: SyncReport, report: SyncReport,
                overtaken: bool) -> None:
        """Clear the marks of products TRAEDE answered for (delivered or rejected: a retry cannot change it);
        a mark bumped during the send stays, and its product is queued again. Products a request of unknown
        outcome carried, whose lock was lost during the send or left by a holder that died (maybe mid-request),
        and every product sent while a crashed full sync's requests may still land (``overtaken``), are sent
        again later: after whatever else is in flight for them must have landed."""
        maybe_overtaken = {item for item in batch
                           if overtaken or self.locks.lost(item) or self.locks.inherited(item)}
        self.resend_later(sent.unsure(Partner.TRAEDE) | maybe_overtaken, report)  # first: it keeps TRAEDE right
        for item in batch:
            mark = marks[item]
            if mark is not None and sent.outcome(Partner.TRAEDE, item).answered \
                    and not self.marks.clear(item, mark):
                self.enqueue(ProductMessage(self.container, item, gen=mark.gen or None), self.delay)  # next set

    def _lock(self, item: str, operator: _Operator) -> None:
        if self.locks.try_acquire(item):
            return
        limit = min(self.locks.seconds + 30, operator.seconds)  # a crashed sender's lock lapses well before
        deadline = time.monotonic() + limit
        operator.say(f"product {item!r} is being sent by another instance: waiting for it (at most {limit:g} s: "
                     "a crashed sender's lock runs out after PRODUCT_LOCK_SECONDS)")
        while time.monotonic() < deadline:
            time.sleep(WAIT_POLL_SECONDS)
            if self.locks.try_acquire(item):
                return
        raise FullSyncBusy(f"product {item!r} stayed locked by another instance for {limit:g} s; nothing more was "
                           "sent")

    def _fences_clear(self, operator: _Operator | None) -> bool | None:
        """None while a full sync runs (the operator waits for it instead, at most ``wait_seconds``). Else
        whether a full sync died recently without closing its fence: requests it had in flight may still land
        at TRAEDE after what is sent now."""
        active, crashed = self.fences.look(crashed_within=self.resend_seconds)
        if active:
            if operator is None:
                return None
            operator.wait_for(self.fences.active, "a full sync is running")
            active, crashed = self.fences.look(crashed_within=self.resend_seconds)
        return bool(crashed)

    # -- full syncs ---------------------------------------------------------------------------------

    def full_sync_unit(self, what: str, *, run: str | None = None, wait_seconds: float = 300,
                       on_wait: Callable[[str], None] | None = None) -> FullSyncUnit:
        return FullSyncUnit(self, what, run or uuid.uuid4().hex, _Operator(on_wait, wait_seconds))

    def fenced(self, what: str, sync: Callable[[FullSyncUnit], SyncReport], *, run: str | None = None,
               wait_seconds: float = 300, on_wait: Callable[[str], None] | None = None) -> SyncReport:
        """A full sync (or a shard of one) behind its fence: ``sync(unit)`` runs once the fence is up,
        leaving out ``unit.withhold`` (products whose lock is held) and sending to TRAEDE only while
        ``unit.guard()`` says the fence stands; then the pending products it delivered are settled, and those
        a request of unknown outcome carried are sent again later."""
        with self.full_sync_unit(what, run=run, wait_seconds=wait_seconds, on_wait=on_wait) as unit:
            report = sync(unit)
            unit.settle(report)
            self.resend_later(report.unsure(Partner.TRAEDE), report)
        return report


class _Operator:
    """How the operator's commands wait: telling who holds what, and for at most ``seconds``."""

    def __init__(self, on_wait: Callable[[str], None] | None, seconds: float, *, force: bool = False):
        self.on_wait = on_wait
        self.seconds = seconds
        self.force = force

    def say(self, line: str) -> None:
        if self.on_wait:
            self.on_wait(line)

    def wait_for(self, fences: Callable[[], list[FenceInfo]], why: str) -> None:
        """Poll until ``fences()`` is empty, naming the holder now and then; ``FullSyncBusy`` after
        ``seconds``. A crashed holder's fence lapses within FULL_SYNC_FENCE_SECONDS, so this ends then."""
        started = time.monotonic()
        told_at, told = 0.0, ""
        while holders := fences():
            holder = holders[0].holder()
            waited = time.monotonic() - started
            if waited >= self.seconds:
                raise FullSyncBusy(f"{why} after waiting {self.seconds:g} s: {holder}; nothing was sent (try again "
                                   "when it has finished, or give --wait more seconds)")
            if not told or holders[0].name != told or time.monotonic() - told_at >= HOLDER_EVERY_SECONDS:
                self.say(f"waiting ({waited:.0f} s of at most {self.seconds:g} s): {why}: {holder} (a fence "
                         "that is not renewed lapses within FULL_SYNC_FENCE_SECONDS: a crashed sync blocks no "
                         "longer)")
                told, told_at = holders[0].name, time.monotonic()
            time.sleep(WAIT_POLL_SECONDS * 2)


class FullSyncUnit:
    """``with queue.full_sync_unit("nightly") as unit: engine.full_sync(withhold=unit.withhold, ...)``

    Raises the fence, waits (bounded) for older full syncs of other runs, notes the held product locks (their
    products are left to their holders) and the pending marks; on success, ``settle(report)`` clears the marks
    of pending products the full sync delivered after the fence was up.
    """

    def __init__(self, queue: ProductQueue, what: str, run: str, operator: _Operator):
        self.queue, self.what, self.run, self.operator = queue, what, run, operator
        self.fence: FullSyncFence | None = None
        self.withhold: frozenset[str] = frozenset()
        self.pending: dict[str, Mark] = {}

    def guard(self) -> float:
        """Seconds for which this unit's fence certainly stands (a TRAEDE attempt never outlives it)."""
        return self.fence.remaining() if self.fence is not None else 0.0

    def __enter__(self) -> FullSyncUnit:
        fences = self.queue.fences
        self.fence = fences.open(self.run, self.what)
        try:
            fence = self.fence
            self.operator.wait_for(lambda: fences.older_than(fence), "another full sync is still running")
            self.pending = self.queue.marks.snapshot()
            self.withhold = frozenset(self.queue.locks.held_by_anyone())
        except BaseException:
            self.fence.close()
            raise
        return self

    def settle(self, report: SyncReport) -> None:
        """Clear the marks the full sync made obsolete: products it delivered after the fence was up. Storage
        failing stops this at once: a mark left behind costs one more send of its product, nothing else."""
        try:
            for item, mark in self.pending.items():
                if item not in self.withhold and item in report.delivered_items:
                    self.queue.marks.clear(item, mark)
        except StateError as exc:
            log.warning("pending products not settled after the full sync (each is sent once more by its "
                        "message, which is harmless): %s", exc)

    def __exit__(self, *exc: object) -> None:
        if self.fence is not None:
            self.fence.close()
