"""Run history: every run keeps its report in ``RUN_HISTORY_CONTAINER`` for ``RUN_HISTORY_DAYS`` days.

"Why does TRAEDE show the wrong picture for product X?" needs what each run sent, long after the run.
Each run (the timer, each shard, each trigger invocation, the CLI) leaves, all under its UTC start day:

``runs/YYYY/MM/DD/<run-id>.json``
    The report (``SyncReport.to_dict()`` plus the run id, its kind and how many parts it has), without
    what was sent. Its metadata repeats the counts, so ``runs`` lists recent runs without reading one.
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
    ITEMS,
    RUNS,
    SENT,
    WIDE,
    UnknownRun,
    check_run_id,
    day_of,
    is_run_id,
    item_segment,
    new_run_id,
    part_name,
    part_of,
    run_kind,
    run_time,
)
from .parts import MAX_PARTS, Parts, worst
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
        return cls(run_id, m.get("kind", run_kind(run_id)), m.get("mode", "?"), m.get("ok") == "yes",
                   number("images"), number("products"), delivered, number("rejected"), number("failed"),
                   number("deferred"), number("skipped"), seconds, m.get("interrupted") or None)

    @property
    def started(self) -> datetime:
        return run_time(self.run_id)

    def line(self) -> str:
        sent = " ".join(f"{name}={count}" for name, count in self.delivered.items()) or "nothing sent"
        state = "ok" if self.ok else "FAILED"
        if self.interrupted:
            state += f" (stopped by {self.interrupted})"
        deferred = f" deferred={self.deferred}" if self.deferred else ""
        return (f"{self.run_id}  {self.started:%Y-%m-%d %H:%M:%S}Z  {self.kind:<8} {self.mode:<10} {state:<6}  "
                f"images={self.images} products={self.products} delivered: {sent}  rejected={self.rejected} "
                f"failed={self.failed}{deferred} skipped={self.skipped}  {self.seconds:.1f}s")


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

    # -- writing ------------------------------------------------------------------------------------

    def save(self, report: SyncReport, ledger: Ledger | None, *, kind: str) -> str:
        """Keep the report and what was sent; returns the run id. Raises on a storage error."""
        started = self.clock() - timedelta(seconds=report.seconds)
        run_id = new_run_id(kind, started)
        day = day_of(started)
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
            self._put(f"{RUNS}{day}/{run_id}.json", report_body(head), _summary_metadata(report, kind))
        return run_id

    def _put_markers(self, markers: list[tuple[str, dict[str, str]]]) -> None:
        """The per-product index of a run. Best effort: a marker storage refuses (an odd product name)
        costs ``runs --item`` that product, never the run's report."""
        from azure.core.exceptions import AzureError

        for name, meta in markers:
            try:
                self._put(name, b"", meta)
            except AzureError as exc:
                log.warning("run history: no index entry for %r (runs --item will not find it): %s", name, why(exc))

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

    def _days(self) -> Iterator[str]:
        """The days that may hold kept runs, newest first (one more than RUN_HISTORY_DAYS: the prune's edge)."""
        today = self.clock().date()
        for n in range(self.days + 1):
            yield day_of(today - timedelta(days=n))

    def _list(self, prefix: str, *, metadata: bool = False) -> list[BlobProperties]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return list(self.client.list_blobs(name_starts_with=prefix, include=["metadata"] if metadata else None))
        except ResourceNotFoundError:
            return []  # nothing kept yet

    def recent(self, limit: int = 20, *, kind: str | None = None) -> list[RunSummary]:
        """The newest runs first, at most ``limit``; ``kind`` keeps only runs of that kind (nightly, cli-sync...).
        Reads only the listing (each report's counts are its metadata); memory holds ``limit`` runs a day,
        however many blobs a day holds. Blobs that are not a run's report are passed over."""
        import heapq

        found: list[RunSummary] = []
        for day in self._days():
            runs = (RunSummary.from_metadata(b.name.rsplit("/", 1)[-1][:-len(".json")], b.metadata)
                    for b in self._iter(f"{RUNS}{day}/", metadata=True) if b.name.endswith(".json"))
            fitting = (r for r in runs if is_run_id(r.run_id) and (kind is None or r.kind == kind))
            found.extend(heapq.nlargest(limit - len(found), fitting, key=lambda r: r.run_id))
            if len(found) >= limit:
                break
        return found[:limit]

    def _iter(self, prefix: str, *, metadata: bool = False) -> Iterator[BlobProperties]:
        """``_list``, a page at a time."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            yield from self.client.list_blobs(name_starts_with=prefix, include=["metadata"] if metadata else None)
        except ResourceNotFoundError:
            return  # nothing kept yet

    def resolve(self, run_id: str) -> str:
        """A run id as given, or the newest run's for ``latest``."""
        if run_id == "latest":
            newest = self.recent(1)
            if not newest:
                raise UnknownRun(f"no run is kept in RUN_HISTORY_CONTAINER {self.container!r} (the last "
                                 f"{self.days} days): run a sync first")
            return newest[0].run_id
        return check_run_id(run_id)

    def load(self, run_id: str) -> dict[str, Any]:
        """The run's report, without what was sent (see ``sent``): checked, so a reader can trust its types.
        Raises ``UnknownRun``, or ``DamagedHistory`` naming the blob and what is wrong."""
        run_id = self.resolve(run_id)
        name = f"{RUNS}{day_of(run_time(run_id))}/{run_id}.json"
        data = self._read(name, validation.MAX_REPORT_BYTES, "a run report")
        if data is None:
            raise UnknownRun(f"no run {run_id!r} is kept in RUN_HISTORY_CONTAINER {self.container!r} (runs are "
                             f"kept RUN_HISTORY_DAYS={self.days} days; image-sync runs lists them)")
        return check_report(name, data, run_id)

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
        for root in (RUNS, ITEMS, WIDE, SENT):  # reports first: a listed run never lacks its report
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
         prune: bool = False, quiet: bool = False) -> str | None:
    """Keep the run's report (never raises: a report that cannot be kept is logged, the sync goes on),
    then prune old runs (hourly, or now with ``prune``). Returns the run id, or None. ``quiet``: name the
    kept run at DEBUG only (a trigger invocation: thousands a day, each already logs its summary)."""
    if history is None or report.dry_run:
        return None
    try:
        run_id = history.save(report, ledger, kind=kind)
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
    meta = {"kind": kind, "mode": report.mode, "ok": "yes" if report.ok else "no",
            "images": report.images, "products": report.products,
            "delivered": ",".join(f"{name}={count}" for name, count in report.delivered.items()),
            "rejected": len(report.rejected), "failed": len(report.failed), "deferred": len(report.deferred),
            "skipped": len(report.skipped), "seconds": report.seconds, "interrupted": report.interrupted or ""}
    return {k: _meta(v) for k, v in meta.items() if v != ""}

