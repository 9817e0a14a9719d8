"""Run history: every run keeps its report in ``RUN_HISTORY_CONTAINER`` for ``RUN_HISTORY_DAYS`` days.

"Why does TRAEDE show the wrong picture for product X?" needs what each run sent, long after the run.
Each run (the timer, each shard, each trigger invocation, the CLI) leaves, all under its UTC start day:

``runs/YYYY/MM/DD/HH/<run-id>.json``
    The report (``SyncReport.to_dict()`` plus the run id, its kind and how many parts it has), without
    what was sent. Its metadata repeats the counts, so ``runs`` lists recent runs without reading one; the
    hour in the name lets it list the newest hours only, never a whole day of thousands of runs. (Runs kept
    by an older version are ``runs/YYYY/MM/DD/<run-id>.json``: still listed and read until they expire.)
``sent/YYYY/MM/DD/<run-id>/<part>.jsonl``
    What each partner was sent: the ledger's entries, one JSON object a line, each with its ``partner``;
    plus, marked ``"synthetic": true``, an entry for a product problem the ledger does not hold (withheld,
    deferred, not listed to the end), for a product queued for TRAEDE, and for each skipped blob of a
    product (partner ``storage``). Split into parts by a hash of the product id: one part for a small
    run, up to 256 for a full sync, so one product's history costs one small read per run.
``items/YYYY/MM/DD/<item>/<run-id>``
    An empty marker per product of a run that touched at most ``INDEX_LIMIT`` products (uploads,
    deletes, product syncs, ``sync --item``), with its outcome per partner as metadata.
``wide/YYYY/MM/DD/<run-id>``
    One marker for a run that touched more (full syncs, shards), with the range of product ids it
    covered: ``runs --item`` reads that product's part of each such run whose range holds it.
``failed/YYYY/MM/DD/<run-id>``
    A marker, with the report's metadata, for each run that failed or was stopped: ``runs --failed`` and
    ``runs resubmit --failed-since`` list these, never the runs that went well.
``resubmits/YYYY/MM/DD/<run-id>``
    The claim of the resubmit of that run (``links``): which run resubmitted it.
``index/latest``
    The newest run's id (``pointer``): ``latest`` in one request, repaired from a listing when it is wrong.

Run ids sort by time: ``20261123T020000.123Z-nightly-1a2b3c``. Retention deletes whole days older than
``RUN_HISTORY_DAYS``: at most once an hour per process and at every nightly run, at most ``PRUNE_BUDGET``
blobs a time (the rest the next time). Keeping a report never fails a sync: ``keep`` logs one line and
carries on. Secrets stay out: the ledger keeps URLs without their query, and everything is redacted.
"""
from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from ..redact import redact, redact_tree
from . import validation
from .ledger import Ledger
from .names import (
    FAILED,
    ITEMS,
    RESUBMITS,
    RUNS,
    SENT,
    WIDE,
    UnknownRun,
    check_run_id,
    day_of,
    day_report_name,
    is_run_id,
    item_segment,
    new_run_id,
    part_name,
    part_of,
    report_name,
    run_kind,
    run_of,
    run_time,
)
from .parts import MAX_PARTS, Parts, worst
from .pointer import LatestPointer
from .report import SyncReport
from .validation import DamagedHistory, check_report, parse_entry, report_body

if TYPE_CHECKING:
    from azure.storage.blob import BlobProperties, BlobServiceClient

log = logging.getLogger(__name__)


UPLOADS_IN_FLIGHT = 4      # parts uploaded at once


PRUNE_EVERY_SECONDS = 3600.0


PRUNE_BUDGET = 10_000     # blobs deleted at most per prune; a backlog goes at the next one


_META_SAFE = " =,;/:.-_()*"


_prune_lock = threading.Lock()


_last_prune: dict[str, float] = {}  # per container URL: when this process last pruned it


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _meta(value: object) -> str:
    return quote(str(value), safe=_META_SAFE)


def _unmeta(metadata: dict[str, str] | None) -> dict[str, str]:
    return {k.lower(): unquote(v) for k, v in (metadata or {}).items()}


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One kept run, as ``runs`` lists it (from the report's metadata: no report is read)."""

    run_id: str
    kind: str
    mode: str
    ok: bool
    images: int
    products: int
    delivered: dict[str, int]
    rejected: int
    failed: int
    deferred: int
    skipped: int
    seconds: float
    interrupted: str | None
    resubmits: str | None = None  # the run this one resubmits (the first, when it resubmits several)
    resubmits_count: int = 0

    @classmethod
    def from_metadata(cls, run_id: str, metadata: dict[str, str] | None) -> RunSummary:
        m = _unmeta(metadata)

        def number(key: str) -> int:
            value = m.get(key, "0")
            return _count(value)

        delivered = {}
        for pair in filter(None, m.get("delivered", "").split(",")):
            name, _, count = pair.partition("=")
            delivered[name] = _count(count)
        try:
            seconds = float(m.get("seconds", "0"))
        except ValueError:
            seconds = 0.0
        resubmits = m.get("resubmits") or None
        return cls(run_id, m.get("kind", run_kind(run_id)), m.get("mode", "?"), m.get("ok") == "yes",
                   number("images"), number("products"), delivered, number("rejected"), number("failed"),
                   number("deferred"), number("skipped"), seconds, m.get("interrupted") or None,
                   resubmits if resubmits and is_run_id(resubmits) else None, number("resubmits_count"))

    @property
    def started(self) -> datetime:
        return run_time(self.run_id)

    @property
    def failed_run(self) -> bool:
        """A run ``runs --failed`` lists: a record rejected or failed, or the run was stopped."""
        return not self.ok or self.interrupted is not None

    def line(self) -> str:
        sent = " ".join(f"{name}={count}" for name, count in self.delivered.items()) or "nothing sent"
        state = "ok" if self.ok else "FAILED"
        if self.interrupted:
            state += f" (stopped by {self.interrupted})"
        deferred = f" deferred={self.deferred}" if self.deferred else ""
        link = ""
        if self.resubmits:
            more = f" and {self.resubmits_count - 1} more" if self.resubmits_count > 1 else ""
            link = f"  resubmit of {self.resubmits}{more}"
        return (f"{self.run_id}  {self.started:%Y-%m-%d %H:%M:%S}Z  {self.kind:<8} {self.mode:<10} {state:<6}  "
                f"images={self.images} products={self.products} delivered: {sent}  rejected={self.rejected} "
                f"failed={self.failed}{deferred} skipped={self.skipped}  {self.seconds:.1f}s{link}")


@dataclass(slots=True)
class ItemRun:
    """One run that touched a product, and what it sent to each partner for it."""

    run_id: str
    container: str
    entries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def started(self) -> datetime:
        return run_time(self.run_id)

    def outcomes(self) -> dict[str, str]:
        """Per partner, the worst outcome of the product's entries."""
        seen: dict[str, list[str]] = {}
        for entry in self.entries:
            seen.setdefault(str(entry.get("partner")), []).append(str(entry.get("outcome")))
        return {partner: worst(found) for partner, found in seen.items()}


class RunHistory:
    """Keeps, lists, reads and prunes run reports in one container of the images account."""

    def __init__(self, service: BlobServiceClient, container: str, *, days: int,
                 clock: Callable[[], datetime] = _utcnow):
        self.client = service.get_container_client(container)
        self.container = container
        self.days = days
        self.clock = clock
        self.pointer = LatestPointer(self.client)

    # -- writing ------------------------------------------------------------------------------------

    def save(self, report: SyncReport, ledger: Ledger | None, *, kind: str, run_id: str | None = None) -> str:
        """Keep the report and what was sent; returns the run id (``run_id``: one chosen when the run started,
        as a resubmit does, to name itself in its claim). Raises on a storage error."""
        run_id = run_id or new_run_id(kind, self.clock() - timedelta(seconds=report.seconds))
        day = day_of(run_time(run_id))
        images_container = str(report.context.get("container") or "")
        with Parts(report, ledger) as parts:
            self._put_all((f"{SENT}{day}/{run_id}/{number:03d}.jsonl", data) for number, data in parts.chunks())
            index = {"parts": str(parts.count), "container": images_container}
            if parts.outcomes is not None:
                markers: list[tuple[str, dict[str, str]]] = []
                for item, outcomes in sorted(parts.outcomes.items()):
                    meta = {**index, **{_meta_key(p): _meta(o) for p, o in outcomes.items()}}
                    markers.append((f"{ITEMS}{day}/{item_segment(item)}/{run_id}", meta))
                self._put_markers(markers)
            elif parts.first is not None and parts.last is not None:
                self._put(f"{WIDE}{day}/{run_id}", b"", {**index, "first": _meta(parts.first),
                                                         "last": _meta(parts.last)})
            head = {**report.to_dict(), "run": run_id, "kind": kind, "parts": parts.count}
            summary = _summary_metadata(report, kind)
            self._put(report_name(run_id), report_body(head), summary)
        if not report.ok or report.interrupted:
            self._put_markers([(f"{FAILED}{day}/{run_id}", summary)], what="runs --failed will not list the run")
        self._advance(run_id)
        return run_id

    def _advance(self, run_id: str) -> None:
        """Move ``index/latest`` forward to this run (best effort: a reader repairs it from a listing)."""
        from azure.core.exceptions import AzureError

        try:
            self.pointer.advance(run_id)
        except AzureError as exc:
            log.warning("run history: %s not moved to %s (readers fall back to listing): %s",
                        self.pointer.blob.blob_name, run_id, why(exc))

    def _put_markers(self, markers: list[tuple[str, dict[str, str]]], *,
                     what: str = "runs --item will not find it") -> None:
        """The per-product index of a run. Best effort: a marker storage refuses (an odd product name)
        costs ``runs --item`` that product, never the run's report."""
        from azure.core.exceptions import AzureError

        for name, meta in markers:
            try:
                self._put(name, b"", meta)
            except AzureError as exc:
                log.warning("run history: no index entry for %r (%s): %s", name, what, why(exc))

    def _put_all(self, blobs: Iterable[tuple[str, bytes]]) -> None:
        """Upload several blobs, ``UPLOADS_IN_FLIGHT`` at a time (a full sync's parts are ~60 MB): at most
        that many parts are in memory at once. The first error is raised once the others have ended."""
        from concurrent.futures import Future, ThreadPoolExecutor

        pending: list[Future[None]] = []
        with ThreadPoolExecutor(UPLOADS_IN_FLIGHT, thread_name_prefix="image-sync-history") as pool:
            for name, data in blobs:
                if len(pending) >= UPLOADS_IN_FLIGHT:
                    pending.pop(0).result()
                pending.append(pool.submit(self._put, name, data))
            for future in pending:
                future.result()

    def _put(self, name: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        blob = self.client.get_blob_client(name)
        try:
            blob.upload_blob(data, overwrite=True, metadata=metadata)
            return
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) != "ContainerNotFound":
                raise
        try:
            self.client.create_container()  # the deploy creates it in Azure; locally the first run does
        except ResourceExistsError:
            pass
        blob.upload_blob(data, overwrite=True, metadata=metadata)

    # -- reading ------------------------------------------------------------------------------------

    def _days(self, since: datetime | None = None) -> Iterator[str]:
        """The days that may hold kept runs, newest first (one more than RUN_HISTORY_DAYS: the prune's edge),
        back to the day of ``since`` at the most."""
        today = self.clock().date()
        for n in range(self.days + 1):
            day = today - timedelta(days=n)
            if since is not None and day < since.date():
                return
            yield day_of(day)

    def _list(self, prefix: str, *, metadata: bool = False) -> list[BlobProperties]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return list(self.client.list_blobs(name_starts_with=prefix, include=["metadata"] if metadata else None))
        except ResourceNotFoundError:
            return []  # nothing kept yet

    def _walk(self, prefix: str) -> tuple[list[str], list[BlobProperties]]:
        """One level under ``prefix``: the folders (hours, ``HH/``, newest first) and the blobs (with metadata)."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import BlobProperties

        folders: list[str] = []
        blobs: list[BlobProperties] = []
        try:
            for entry in self.client.walk_blobs(name_starts_with=prefix, include=["metadata"], delimiter="/"):
                if isinstance(entry, BlobProperties):
                    blobs.append(entry)
                elif entry.name.endswith("/"):
                    hour = entry.name[len(prefix):-1]
                    if len(hour) == 2 and hour.isascii() and hour.isdigit():
                        folders.append(entry.name)  # (a folder of another shape is not ours)
        except ResourceNotFoundError:
            pass  # nothing kept yet
        return sorted(folders, reverse=True), blobs

    def recent(self, limit: int | None = 20, *, kind: str | None = None, since: datetime | None = None,
               failed: bool = False) -> list[RunSummary]:
        """The newest runs first (see ``_recent``); an unfiltered listing moves ``index/latest`` forward if it
        lists a newer run than the pointer names (one kept by an older version, or by a save that died between
        its report and the pointer)."""
        found = self._recent(limit, kind=kind, since=since, failed=failed)
        if found and not failed and kind is None:
            self._advance(found[0].run_id)
        return found

    def _recent(self, limit: int | None, *, kind: str | None = None, since: datetime | None = None,
                failed: bool = False) -> list[RunSummary]:
        """The newest runs first, at most ``limit`` (None: all); ``kind`` keeps only runs of that kind (nightly,
        cli-sync...), ``since`` only runs started since then, ``failed`` only runs that failed or were stopped.

        Reads only listings (each report's counts are its metadata): per day, one listing of its hours, then
        its hours newest first until ``limit`` runs are found, so the newest runs cost a few requests however
        many runs a day keeps; ``failed`` lists the ``failed/`` markers instead of the runs. Blobs that are not a
        run's report are passed over."""
        import heapq

        def fits(run: RunSummary) -> bool:
            return (kind is None or run.kind == kind) and (since is None or run.started >= since) \
                and (not failed or run.failed_run)

        found: list[RunSummary] = []
        for day in self._days(since):
            need = None if limit is None else limit - len(found)
            hours, blobs = self._walk(f"{RUNS}{day}/")
            day_runs = [r for r in _summaries(blobs) if fits(r)]  # kept by an older version: under the day
            if failed:
                day_runs += [r for r in _summaries(self._iter(f"{FAILED}{day}/", metadata=True)) if fits(r)]
            else:
                from_hours: list[RunSummary] = []
                for hour in hours:
                    if need is not None and len(from_hours) >= need:
                        break  # every hour left is older than what was found
                    from_hours += [r for r in _summaries(self._iter(hour, metadata=True)) if fits(r)]
                day_runs += from_hours
            unique = {r.run_id: r for r in day_runs}.values()
            found += heapq.nlargest(need, unique, key=lambda r: r.run_id) if need is not None else \
                sorted(unique, key=lambda r: r.run_id, reverse=True)
            if limit is not None and len(found) >= limit:
                break
        return found if limit is None else found[:limit]

    def _iter(self, prefix: str, *, metadata: bool = False) -> Iterator[BlobProperties]:
        """``_list``, a page at a time."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            yield from self.client.list_blobs(name_starts_with=prefix, include=["metadata"] if metadata else None)
        except ResourceNotFoundError:
            return  # nothing kept yet

    def resolve(self, run_id: str) -> str:
        """A run id as given, or the newest run's for ``latest`` (``index/latest``, checked: its report is kept)."""
        if run_id == "latest":
            return self._latest(read=False)[0]
        return check_run_id(run_id)

    def _latest(self, *, read: bool) -> tuple[str, bytes | None, str]:
        """The newest run, and with ``read`` its report's bytes and blob name. ``index/latest`` first; when it
        is missing, damaged or names a run whose report is gone, the listing (and the pointer is repaired)."""
        pointed = self.pointer.read()
        if pointed.run_id is not None:
            if read:
                data, name = self._report_bytes(pointed.run_id)
                if data is not None:
                    return pointed.run_id, data, name
            elif self._report_kept(pointed.run_id):
                return pointed.run_id, None, ""
        newest = self._recent(1)
        if not newest:
            raise UnknownRun(f"no run is kept in RUN_HISTORY_CONTAINER {self.container!r} (the last "
                             f"{self.days} days): run a sync first")
        self.pointer.repair(newest[0].run_id, pointed)
        run_id = newest[0].run_id
        if read:
            data, name = self._report_bytes(run_id)
            return run_id, data, name
        return run_id, None, ""

    def load(self, run_id: str) -> dict[str, Any]:
        """The run's report, without what was sent (see ``sent``): checked, so a reader can trust its types.
        Raises ``UnknownRun``, or ``DamagedHistory`` naming the blob and what is wrong."""
        if run_id == "latest":
            run_id, data, name = self._latest(read=True)
        else:
            run_id = check_run_id(run_id)
            data, name = self._report_bytes(run_id)
        if data is None:
            raise UnknownRun(f"no run {run_id!r} is kept in RUN_HISTORY_CONTAINER {self.container!r} (runs are "
                             f"kept RUN_HISTORY_DAYS={self.days} days; image-sync runs lists them)")
        return check_report(name, data, run_id)

    def _report_bytes(self, run_id: str) -> tuple[bytes | None, str]:
        """A run's report as kept (under its hour, or under its day by an older version), and its blob's name."""
        for name in (report_name(run_id), day_report_name(run_id)):
            data = self._read(name, validation.MAX_REPORT_BYTES, "a run report")
            if data is not None:
                return data, name
        return None, report_name(run_id)

    def _report_kept(self, run_id: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        for name in (report_name(run_id), day_report_name(run_id)):
            try:
                self.client.get_blob_client(name).get_blob_properties()
                return True
            except ResourceNotFoundError:
                continue
        return False

    def read_part(self, run_id: str, part: int, damage: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """The entries of one part of a run, in the order they were kept. A line that is not an entry this
        app wrote is left out, and a part too large to be one is not read: each is one line in ``damage``
        (None: a warning in the log) naming the blob and what is wrong."""
        name = part_name(run_id, part)
        try:
            data = self._read(name, validation.MAX_PART_BYTES, "a part of a run's entries")
        except DamagedHistory as exc:
            _tell(damage, f"{exc}; its entries are left out")
            return
        if data is None:
            return  # a part no product hashed to
        bad, first = 0, ""
        for number, raw in enumerate(io.BytesIO(data), start=1):
            if not raw.strip():
                continue
            entry, problem = parse_entry(raw)
            if entry is not None:
                yield entry
                continue
            bad += 1
            first = first or f"line {number}: {problem}"
        if bad:
            _tell(damage, f"run history: {name}: {bad} line{'s' if bad > 1 else ''} left out, not an entry this app "
                          f"wrote ({first})")

    def _read(self, name: str, limit: int, what: str) -> bytes | None:
        """A blob's bytes (None: no such blob), never more than ``limit``: a larger blob is named, not read."""
        from azure.core.exceptions import ResourceNotFoundError

        blob = self.client.get_blob_client(name)
        try:
            size = int(blob.get_blob_properties().size or 0)
            if size > limit:
                raise DamagedHistory(f"run history: {name} is {size:,} bytes, more than the {limit:,} {what} may "
                                     "have: not one this app wrote, or damaged")
            if size == 0:
                return b""
            data: bytes = blob.download_blob(offset=0, length=min(size, limit) + 1).readall()
        except ResourceNotFoundError:
            return None
        if len(data) > limit:  # replaced by a larger blob since its size was read
            raise DamagedHistory(f"run history: {name} is more than the {limit:,} bytes {what} may have")
        return data

    def sent(self, run_id: str, parts: int, damage: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every entry the run kept, part by part (within a part, in the order they were recorded)."""
        for part in range(max(1, min(parts, MAX_PARTS))):
            yield from self.read_part(run_id, part, damage)

    def ledger(self, run_id: str, parts: int, damage: list[str] | None = None) -> Ledger:
        """What the run sent, as a ``Ledger`` again (for ``write_report_to``), without synthetic entries;
        redacted again (a run kept by an older version)."""
        ledger = Ledger()
        for entry in self.sent(run_id, parts, damage):
            partner = str(entry.pop("partner", "?"))
            if not entry.get("synthetic"):
                ledger.add_entry(partner, json.dumps(redact_tree(entry), ensure_ascii=False))
        return ledger

    def item_runs(self, item: str, *, limit: int = 10, damage: list[str] | None = None) -> list[ItemRun]:
        """The newest runs that touched ``item`` (at most ``limit``), with what each partner was sent for it.

        Per day: the product's own markers (small runs), and the wide runs whose range of products holds it,
        whose one part for this product is read. Never reads a whole report. A code is looked up in each
        spelling a folder may have (NFC, and NFD as a Mac names folders)."""
        from ..catalog.partner_codes import nfc_forms

        forms = nfc_forms(item)
        found: list[ItemRun] = []
        for day in self._days():
            candidates: dict[str, tuple[int, str]] = {}
            for form in forms:
                for blob in self._list(f"{ITEMS}{day}/{item_segment(form)}/", metadata=True):
                    meta = _unmeta(blob.metadata)
                    candidates[blob.name.rsplit("/", 1)[-1]] = (_int(meta.get("parts")), meta.get("container", ""))
            for blob in self._list(f"{WIDE}{day}/", metadata=True):
                meta = _unmeta(blob.metadata)
                if any(meta.get("first", "") <= form <= meta.get("last", "") for form in forms):
                    candidates[blob.name.rsplit("/", 1)[-1]] = (_int(meta.get("parts")), meta.get("container", ""))
            for run_id in sorted(candidates, reverse=True):
                if not is_run_id(run_id):
                    continue
                parts, container = candidates[run_id]
                entries = [e for part in dict.fromkeys(part_of(form, parts) for form in forms)
                           for e in self.read_part(run_id, part, damage) if e.get("item") in forms]
                if entries:
                    found.append(ItemRun(run_id, container, entries))
                    if len(found) >= limit:
                        return found
        return found

    # -- retention ----------------------------------------------------------------------------------

    def prune(self, *, force: bool = False) -> int:
        """Delete the days older than RUN_HISTORY_DAYS: at most once an hour per process (``force``: now, as
        the nightly run does), at most PRUNE_BUDGET blobs. Returns how many blobs were deleted."""
        key = self.client.url
        with _prune_lock:
            last = _last_prune.get(key)
            if not force and last is not None and time.monotonic() - last < PRUNE_EVERY_SECONDS:
                return 0
            _last_prune[key] = time.monotonic()
        cutoff = (self.clock() - timedelta(days=self.days)).date()
        deleted = 0
        for root in (FAILED, RUNS, ITEMS, WIDE, SENT, RESUBMITS):  # what lists runs first, then the reports
            for prefix in self._expired(root, cutoff):
                names = []
                for blob in self.client.list_blobs(name_starts_with=prefix):
                    names.append(blob.name)
                    if deleted + len(names) >= PRUNE_BUDGET:
                        break
                deleted += self._delete(names)
                if deleted >= PRUNE_BUDGET:
                    log.info("run history: deleted %d blobs older than %d days; more are left for the next time",
                             deleted, self.days)
                    return deleted
        if deleted:
            log.info("run history: deleted %d blobs older than %d days", deleted, self.days)
        return deleted

    def _expired(self, root: str, cutoff: date) -> Iterator[str]:
        """Prefixes under ``root`` (a year, a month or a day) that hold only days before ``cutoff``."""
        from azure.core.exceptions import ResourceNotFoundError

        limits = (cutoff.year, cutoff.month, cutoff.day)

        def walk(prefix: str, level: int) -> Iterator[str]:
            try:
                entries = [e.name for e in self.client.walk_blobs(name_starts_with=prefix, delimiter="/")]
            except ResourceNotFoundError:
                return
            for name in entries:
                part = name[len(prefix):].rstrip("/")
                if not name.endswith("/") or not (part.isascii() and part.isdigit()):
                    continue  # not ours
                if int(part) < limits[level]:
                    yield name
                elif int(part) == limits[level] and level < 2:
                    yield from walk(name, level + 1)

        yield from walk(root, 0)

    def _delete(self, names: list[str]) -> int:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        deleted = 0
        for start in range(0, len(names), 256):
            chunk = names[start:start + 256]
            try:  # one batch request; a blob another process deleted meanwhile is simply gone (404)
                answers = self.client.delete_blobs(*chunk, raise_on_any_failure=False)
                deleted += sum(1 for a in answers if getattr(a, "status_code", 202) == 202)
                continue
            except AzureError:
                pass  # a store without batch support: one by one
            for name in chunk:
                try:
                    self.client.delete_blob(name)
                    deleted += 1
                except ResourceNotFoundError:
                    pass
        return deleted


def keep(history: RunHistory | None, report: SyncReport, ledger: Ledger | None, *, kind: str,
         prune: bool = False, quiet: bool = False, run_id: str | None = None) -> str | None:
    """Keep the run's report (never raises: a report that cannot be kept is logged, the sync goes on),
    then prune old runs (hourly, or now with ``prune``). Returns the run id, or None. ``quiet``: name the
    kept run at DEBUG only (a trigger invocation: thousands a day, each already logs its summary).
    ``run_id``: the id the run chose when it started (a resubmit)."""
    if history is None or report.dry_run:
        return None
    try:
        run_id = history.save(report, ledger, kind=kind, run_id=run_id)
    except Exception as exc:  # noqa: BLE001 - the history must never fail a sync
        log.warning("run report not kept in RUN_HISTORY_CONTAINER %r (the sync itself is not affected): %s",
                    history.container, why(exc))
        return None  # and no prune: the same storage would refuse it too, in a second line
    log.log(logging.DEBUG if quiet else logging.INFO, "run report kept: image-sync runs show %s", run_id)
    try:
        history.prune(force=prune)
    except Exception as exc:  # noqa: BLE001
        log.warning("old run reports not pruned from RUN_HISTORY_CONTAINER %r: %s", history.container, why(exc))
    return run_id


def _tell(damage: list[str] | None, line: str) -> None:
    if damage is None:
        log.warning("%s", line)
    else:
        damage.append(line)




def why(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return redact(f"{type(exc).__name__}: {text[0] if text else ''}")[:300]  # redacted, then cut


def _int(value: str | None) -> int:
    return max(1, _count(value or ""))


def _count(text: str) -> int:
    """A count from metadata (anyone's to write): digits only, of a sane length, else 0."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 15 else 0


def _meta_key(partner: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", partner.lower()) or "partner"


def _summary_metadata(report: SyncReport, kind: str) -> dict[str, str]:
    resubmits = report.context.get("resubmits")
    resubmits = [str(r) for r in resubmits] if isinstance(resubmits, list) else []
    meta = {"kind": kind, "mode": report.mode, "ok": "yes" if report.ok else "no",
            "images": report.images, "products": report.products,
            "delivered": ",".join(f"{name}={count}" for name, count in report.delivered.items()),
            "rejected": len(report.rejected), "failed": len(report.failed), "deferred": len(report.deferred),
            "skipped": len(report.skipped), "seconds": report.seconds, "interrupted": report.interrupted or "",
            "resubmits": resubmits[0] if resubmits else "", "resubmits_count": len(resubmits) or ""}
    return {k: _meta(v) for k, v in meta.items() if v != ""}


def _summaries(blobs: Iterable[BlobProperties]) -> Iterator[RunSummary]:
    """The runs among listed blobs (a report, or a ``failed/`` marker), from their metadata."""
    for blob in blobs:
        name = blob.name
        if name.startswith(RUNS) and not name.endswith(".json"):
            continue
        run_id = run_of(name)
        if run_id is not None:
            yield RunSummary.from_metadata(run_id, blob.metadata)

