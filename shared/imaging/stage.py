"""The web stage every run passes its images through: each image's verdict (kept in a blob index tag on the
image), its rendition when it is not web-ready (kept in RENDITIONS_CONTAINER), and what a partner is sent.

Between the listing and the signing (``engine.sync``): an image whose tag holds a verdict on its current
bytes costs nothing more (the listing brought the tag); one without is looked at here, with ranged reads,
on a few worker threads, while the run goes on, and only within the run's ``Budget``. Entries leave the
stage in listing order (a product stays together), at most ``WINDOW`` of them waiting at a time.

What a partner gets (``decide``): an image that cannot be decoded is skipped with the reason; one that is
not web-ready (a format browsers cannot show, CMYK, more pixels or bytes than the limits) is sent as its
rendition; the original is sent as it is otherwise, served with its real type when its stored type is
wrong. A rendition not made yet (over the run's budget, WEB_IMAGES=check, a failure) leaves the original
to be sent, as before this stage existed, with a warning naming the image: the next run converts it.
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

from ..catalog.records import CatalogEntry, ImageRecord, SkippedBlob
from ..catalog.web import (
    CHECK,
    CONVERT,
    EXTENSIONS,
    RENDITION_FORMATS,
    TAG,
    Delivery,
    Verdict,
    WebPolicy,
    describe_verdict,
    problem_reason,
    rendition_filename,
    rendition_key,
    served_type,
    tag_safe,
)
from ..runs.report import SyncReport
from .probe import inspect
from .ranges import BlobWindow, ReadLimit
from .render import CannotRender, render

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

log = logging.getLogger(__name__)
WORKERS = 4    # images looked at or converted at once (decoding itself is one at a time: ``render``)
WINDOW = 64    # listed entries that may wait for them, in order
# An image whose look or conversion has not ended after this long (storage hanging or dripping mid-read) is sent
# unchecked, as the listing's own stall limit ends a listing that stops answering.
IMAGE_STALL_SECONDS = 120.0
DOWNLOAD_CHUNK = 4 * 2**20  # an original is downloaded to a temporary file this much a request


class Budget:
    """What one run may still do for images it has not seen: renditions (count and bytes of originals
    read) and seconds (looking and converting alike). Thread-safe."""

    def __init__(self, policy: WebPolicy, clock: Callable[[], float] = time.monotonic):
        self.images, self.bytes, self.seconds = policy.budget_images, policy.budget_bytes, policy.budget_seconds
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self.spent_images = self.spent_bytes = 0

    def time_left(self) -> bool:
        return self._clock() - self._started < self.seconds

    def take_rendition(self, size: int) -> str | None:
        """Reserve one rendition of an original of ``size`` bytes; None, or why not (over which budget)."""
        with self._lock:
            if not self.time_left():
                return f"RENDITION_BUDGET_SECONDS ({self.seconds:g} s)"
            if self.spent_images >= self.images:
                return f"RENDITION_BUDGET_IMAGES ({self.images})"
            if self.spent_bytes + size > self.bytes:
                return f"RENDITION_BUDGET_MEGABYTES ({self.bytes / 2**20:g})"
            self.spent_images += 1
            self.spent_bytes += size
            return None


class WebStage:
    """The web policy at work on one images container: verdicts, renditions, and what each image is sent as."""

    def __init__(self, images: ContainerClient, renditions: ContainerClient, policy: WebPolicy,
                 sign_rendition: Callable[[str], str], *, tags_listed: Callable[[], bool] = lambda: True):
        """``tags_listed``: whether the listing brings the verdict tags (the identity may read them)."""
        self.images = images
        self.renditions = renditions
        self.policy = policy
        self.rendition_url = sign_rendition
        self._tags_listed = tags_listed
        self.tags_writable = True  # False once storage refused to write a verdict tag (no permission)

    def can_keep_verdicts(self) -> bool:
        """Verdicts can be read back from the listing and written: an image looked at now is not looked at
        again. Otherwise each look would be paid again every night, so images are sent unchecked instead."""
        return self.tags_writable and self._tags_listed()

    # -- a run's images -----------------------------------------------------------------------------

    def prepared(self, entries: Iterable[CatalogEntry], report: SyncReport, *, stop: threading.Event | None = None,
                 dry_run: bool = False) -> Iterator[CatalogEntry]:
        """``entries`` in the same order, each image decided (``ImageRecord.delivery``) or skipped: those
        without a verdict on their bytes looked at (and converted) on worker threads within the budget."""
        budget = Budget(self.policy)
        pool: ThreadPoolExecutor | None = None
        waiting: deque[CatalogEntry | tuple[ImageRecord, Future[CatalogEntry]]] = deque()
        source, broke, stalled = iter(entries), None, False

        def result(head: CatalogEntry | tuple[ImageRecord, Future[CatalogEntry]]) -> CatalogEntry:
            nonlocal stalled
            if not isinstance(head, tuple):
                return head
            record, future = head
            try:
                return future.result(timeout=IMAGE_STALL_SECONDS)
            except TimeoutError:
                stalled = True
                return self.decide(record, report, unchecked=f"not checked: looking at it took longer than "
                                                             f"{IMAGE_STALL_SECONDS:g} s (storage stalled?)")

        try:
            while True:
                try:
                    entry = next(source)
                except StopIteration:
                    break
                except Exception as exc:  # the listing broke off: what it listed before still goes on first,
                    broke = exc           # so the engine sends the products that were complete (then raises)
                    break
                if isinstance(entry, ImageRecord) and entry.verdict is None and not self.can_keep_verdicts():
                    waiting.append(self.decide(entry, report, unchecked=UNKEPT, named=False))
                elif isinstance(entry, ImageRecord) and self._needs_work(entry):
                    if budget.time_left() and not (stop is not None and stop.is_set()):
                        pool = pool or ThreadPoolExecutor(WORKERS, thread_name_prefix="web")
                        waiting.append((entry, pool.submit(self._prepare, entry, budget, report, dry_run)))
                    else:
                        waiting.append(self.decide(entry, report, unchecked=f"not checked yet: over this run's "
                                                                            f"RENDITION_BUDGET_SECONDS "
                                                                            f"({budget.seconds:g} s)", named=False))
                elif isinstance(entry, ImageRecord):
                    waiting.append(self.decide(entry, report))
                else:
                    waiting.append(entry)
                while waiting and (len(waiting) > WINDOW or not isinstance(waiting[0], tuple) or waiting[0][1].done()):
                    yield result(waiting.popleft())
            while waiting:
                yield result(waiting.popleft())
            if broke is not None:
                raise broke
        finally:
            if pool is not None:
                pool.shutdown(wait=not stalled, cancel_futures=True)  # a stalled read is left to its timeouts
            close = getattr(entries, "close", None)
            if callable(close):
                close()

    def prepare_one(self, record: ImageRecord, report: SyncReport) -> CatalogEntry:
        """One image, now (the upload path)."""
        if not self._needs_work(record):
            return self.decide(record, report)
        return self._prepare(record, Budget(self.policy), report, dry_run=False)

    def look(self, record: ImageRecord) -> Verdict:
        """The verdict on an image: the one kept in its tag, else read now (ranged reads). Keeps nothing
        (doctor). Raises ``Unchecked`` (why it could not be read) or a storage error."""
        return record.verdict if record.verdict is not None else self._inspect(record)

    def _needs_work(self, record: ImageRecord) -> bool:
        verdict = record.verdict
        if verdict is None:
            return True
        return self.policy.mode == CONVERT and verdict.ok and verdict.rendition != self.policy.fingerprint \
            and bool(self.policy.not_web_ready(verdict, record.size))

    def _prepare(self, record: ImageRecord, budget: Budget, report: SyncReport, dry_run: bool) -> CatalogEntry:
        """Look at an image (and convert it) within ``budget``; storage failing leaves it unchecked."""
        from azure.core.exceptions import AzureError

        try:
            verdict = record.verdict
            if verdict is None:
                if not self.can_keep_verdicts():  # found out while this image waited for a worker
                    return self.decide(record, report, unchecked=UNKEPT, named=False)
                verdict = self._inspect(record)
                report.add_web("checked")
                if not dry_run:
                    self._keep(record, verdict)
                record = replace(record, verdict=verdict)
            why = self.policy.not_web_ready(verdict, record.size) if verdict.ok else []
            if self.policy.mode != CONVERT or not why or verdict.rendition == self.policy.fingerprint:
                return self.decide(record, report)
            if dry_run:
                return self.decide(record, report, pending="dry run: would be converted")
            refused = budget.take_rendition(record.size)
            if refused is not None:
                return self.decide(record, report, pending=f"not converted yet: over this run's {refused}; a later "
                                                           "run converts it")
            return self.decide(self._convert(record, verdict, report), report)
        except Unchecked as exc:
            return self.decide(record, report, unchecked=str(exc))
        except (AzureError, OSError) as exc:
            failure = f"not checked: storage failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})" \
                if str(exc) else f"not checked: {type(exc).__name__}"
            return self.decide(record, report, unchecked=failure)
        except Exception as exc:  # noqa: BLE001 - a file no reader foresaw (or memory ran out): never the run's end
            log.warning("%r could not be looked at: %s: %s", record.blob_name, type(exc).__name__, exc)
            return self.decide(record, report, unchecked=f"not checked: {type(exc).__name__} while reading it")

    # -- what a partner is sent ---------------------------------------------------------------------

    def decide(self, record: ImageRecord, report: SyncReport, *, unchecked: str | None = None,
               pending: str | None = None, named: bool = True) -> CatalogEntry:
        """The record with what a partner is sent for it (``delivery``), or why it is skipped. ``named``: an
        unchecked image is named in the report (not when a whole run's worth are: one note says it)."""
        policy, verdict = self.policy, record.verdict
        if verdict is None:
            report.add_web("unchecked")
            if unchecked and named:
                report.add_not_web_ready(record.blob_name, "sent as it is, not checked (it may not be web-ready)",
                                         unchecked)
            content_type = served_type(record.blob_name, record.content_type, None)
            return replace(record, delivery=Delivery(record.content_key, content_type=content_type)) \
                if content_type else record
        if not verdict.ok:
            report.add_web("undecodable")
            return SkippedBlob(record.blob_name, problem_reason(verdict.problem or "notimage"),
                               detail=f"{describe_verdict(verdict)}, {record.size:,} bytes")
        why = tuple(policy.not_web_ready(verdict, record.size))
        if why and policy.mode == CONVERT and verdict.rendition == policy.fingerprint:
            report.add_web("renditions")
            name = policy.rendition_name(record.blob_name)
            return replace(record, delivery=Delivery(
                rendition_key(record.image_id, record.identity, policy), rendition=name,
                filename=rendition_filename(record.filename, policy), why=why,
                rendition_container=policy.renditions_container))
        warning = None
        if why:
            warning = pending or ("WEB_IMAGES=check: not converted" if policy.mode == CHECK else
                                  "not converted")
            report.add_not_web_ready(record.blob_name, f"sent as it is: {warning}",
                                     f"{describe_verdict(verdict)}: {'; '.join(why)}")
        content_type = served_type(record.blob_name, record.content_type, verdict)
        if content_type:
            report.add_web("retyped")
        if not why and not content_type:
            return record
        return replace(record, delivery=Delivery(record.content_key, content_type=content_type, why=why,
                                                 warning=warning))

    # -- storage --------------------------------------------------------------------------------------

    def _inspect(self, record: ImageRecord) -> Verdict:
        blob = self.images.get_blob_client(record.blob_name)
        conditions = _if_match(record.etag)

        def fetch(offset: int, length: int) -> bytes:
            data: bytes = blob.download_blob(offset=offset, length=length, max_concurrency=1,
                                             **conditions).readall()
            return data

        window = BlobWindow(fetch, record.size)
        try:
            return inspect(window, record.identity)
        except ReadLimit as exc:
            raise Unchecked(f"not checked: {exc}") from exc
        except Exception as exc:
            if _changed(exc):
                raise Unchecked("not checked: the blob changed while it was read (a new upload)") from exc
            raise

    def _keep(self, record: ImageRecord, verdict: Verdict) -> None:
        """Write the verdict into the image's tag, keeping its other tags (``Set Blob Tags`` replaces them
        all). Changes neither its ETag nor its bytes. A tag that cannot be kept costs a look next run."""
        from azure.core.exceptions import AzureError

        value = verdict.encode()
        if not tag_safe(value):
            log.info("verdict of %r not kept: %r is not a valid tag value", record.blob_name, value)
            return
        blob = self.images.get_blob_client(record.blob_name)
        try:
            tags = blob.get_blob_tags() if record.tag_count else {}
            tags = {**(tags or {}), TAG: value}
            if len(tags) > 10:
                log.info("verdict of %r not kept: the blob already has 10 index tags", record.blob_name)
                return
            blob.set_blob_tags(tags)
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 403:
                self.tags_writable = False  # no look is kept: the rest of this process sends unchecked
            log.warning("verdict of %r not kept (%s): it is looked at again by the next run; the app's identity "
                        "needs permission to write blob index tags", record.blob_name,
                        getattr(exc, "error_code", None) or type(exc).__name__)

    def _convert(self, record: ImageRecord, verdict: Verdict, report: SyncReport) -> ImageRecord:
        """Download the original to a temporary file, render it, write the rendition, keep the verdict with
        the rendition's fingerprint. A rendition that cannot be made turns the verdict into its reason."""
        from azure.core.exceptions import AzureError

        started = time.monotonic()
        with tempfile.TemporaryFile(prefix="image-sync-original-") as spool:
            try:
                self._download(record, spool)
            except AzureError as exc:
                if _changed(exc):
                    raise Unchecked("not converted: the blob changed while it was read (a new upload)") from exc
                raise
            spool.seek(0)
            try:
                made = render(spool, self.policy)
            except CannotRender as exc:
                log.info("no rendition of %r: %s", record.blob_name, exc)
                failed = Verdict(verdict.identity, verdict.format, verdict.width, verdict.height, verdict.mode,
                                 problem=exc.code)
                self._keep(record, failed)
                return replace(record, verdict=failed)
        self._write_rendition(record, made.data)
        done = verdict.with_rendition(self.policy.fingerprint)
        self._keep(record, done)
        report.add_web("converted")
        log.debug("rendition of %r: %dx%d, %d bytes, %.2f s", record.blob_name, made.width, made.height,
                  len(made.data), time.monotonic() - started)
        return replace(record, verdict=done)

    def _download(self, record: ImageRecord, spool: IO[bytes]) -> None:
        """The original into ``spool``, ``DOWNLOAD_CHUNK`` bytes a request: the SDK's own download reads its
        first 32 MB into memory, which for ``WORKERS`` downloads at once was most of the stage's peak RSS."""
        blob = self.images.get_blob_client(record.blob_name)
        conditions = _if_match(record.etag)
        for offset in range(0, max(record.size, 1), DOWNLOAD_CHUNK):
            length = min(DOWNLOAD_CHUNK, record.size - offset)
            blob.download_blob(offset=offset, length=length, max_concurrency=1, **conditions).readinto(spool)

    def _write_rendition(self, record: ImageRecord, data: bytes) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        name = self.policy.rendition_name(record.blob_name)
        settings = ContentSettings(content_type=self.policy.rendition_type, cache_control="public, max-age=86400")
        metadata = {"identity": record.identity, "settings": self.policy.fingerprint}
        try:
            self.renditions.upload_blob(name, data, overwrite=True, content_settings=settings, metadata=metadata)
        except ResourceNotFoundError:
            self._create_container()
            self.renditions.upload_blob(name, data, overwrite=True, content_settings=settings, metadata=metadata)

    def _create_container(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            self.renditions.create_container()
        except ResourceExistsError:
            pass

    def forget(self, blob_name: str) -> list[str]:
        """The image is deleted: delete its renditions too (every format's); returns those deleted."""
        from azure.core.exceptions import ResourceNotFoundError

        gone = []
        for extension in sorted(set(EXTENSIONS[f] for f in RENDITION_FORMATS)):
            name = blob_name + extension
            try:
                self.renditions.delete_blob(name)
                gone.append(name)
            except ResourceNotFoundError:
                pass
        return gone


UNKEPT = ("not checked: a verdict could not be kept (the app's identity may not read or write blob index tags), "
          "and looking again every run would cost storage reads each night")


class Unchecked(Exception):
    """The image could not be looked at in this run (why is the message); it is sent as it is."""


def _if_match(etag: str | None) -> dict[str, Any]:
    if not etag:
        return {}
    from azure.core import MatchConditions

    quoted = etag if etag.startswith('"') else f'"{etag}"'
    return {"etag": quoted, "match_condition": MatchConditions.IfNotModified}


def _changed(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) == 412 or getattr(exc, "error_code", None) == "ConditionNotMet"
