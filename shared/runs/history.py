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
import math
import re
import secrets
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, UTC
from typing import IO, Any
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import quote, unquote

from ..domain import Source
from ..errors import ImageSyncError
from ..redact import redact, redact_tree
from .ledger import Ledger
from .report import STORAGE, Problem, SyncReport

log = logging.getLogger(__name__)

RUNS, SENT, ITEMS, WIDE = "runs/", "sent/", "items/", "wide/"
INDEX_LIMIT = 50          # a run that touched more products gets one "wide" marker, not one per product
ENTRIES_PER_PART = 2000   # about 1-2 MB a part
MAX_PARTS = 256
UPLOADS_IN_FLIGHT = 4      # parts uploaded at once
PRUNE_EVERY_SECONDS = 3600.0
PRUNE_BUDGET = 10_000     # blobs deleted at most per prune; a backlog goes at the next one
# A product's outcome at a partner in one run is the worst of its entries, in this order.
OUTCOMES = ("failed", "rejected", "not sent", "deferred", "skipped", "queued", "delivered")
# What a reader reads at most: a blob larger than this is not one this app wrote (or is damaged), and is named
# instead of read. A kept report is trimmed to fit (see ``save``); a part holds ~2,000 entries (1-4 MB).
MAX_REPORT_BYTES = 32 * 1024 * 1024
MAX_PART_BYTES = 64 * 1024 * 1024
MAX_ENTRY_BYTES = 4 * 1024 * 1024    # one line of a part: one product's set, a few KB
KEPT_PER_LIST = 10_000               # a report above MAX_REPORT_BYTES keeps this many of each list
_RUN_ID = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})\.(\d{3})Z-([a-z0-9-]{1,24})-([0-9a-f]{6})")
_META_SAFE = " =,;/:.-_()*"

_prune_lock = threading.Lock()
_last_prune: dict[str, float] = {}  # per container URL: when this process last pruned it


class UnknownRun(ImageSyncError):
    """No run with this id is kept (a typo, or older than RUN_HISTORY_DAYS)."""


class DamagedHistory(ImageSyncError):
    """A kept report is not one this app wrote: not JSON, wrong types, too large. The message names the blob
    and what is wrong, in one line; the rest of the history stays readable."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


# What kept runs are, by what started them (the triggers in ``jobs``, the CLI): ``runs --kind``.
RUN_KINDS = ("nightly", "shard", "full", "upload", "delete", "product", "cli-sync", "cli-flush")


# -- run ids -------------------------------------------------------------------------------------------

def new_run_id(kind: str, started: datetime) -> str:
    """``<UTC start, ms>Z-<kind>-<6 hex>``: sorts by start time, names what ran, never collides."""
    started = started.astimezone(UTC)
    slug = re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")[:24].strip("-") or "run"
    return f"{started:%Y%m%dT%H%M%S}.{started.microsecond // 1000:03d}Z-{slug}-{secrets.token_hex(3)}"


def check_run_id(text: str) -> str:
    if not _RUN_ID.fullmatch(text):
        raise UnknownRun(f"{text!r} is not a run id: expected one like 20261123T020000.123Z-nightly-1a2b3c "
                         "(image-sync runs lists them), or 'latest'")
    run_time(text)  # a real time, too
    return text


def is_run_id(text: str) -> bool:
    """A run id this app could have made: its shape, and a real time."""
    try:
        run_time(text)
    except UnknownRun:
        return False
    return True


def run_time(run_id: str) -> datetime:
    m = _RUN_ID.fullmatch(run_id)
    if not m:
        raise UnknownRun(f"{run_id!r} is not a run id")
    y, mo, d, h, mi, s, ms = (int(g) for g in m.groups()[:7])
    try:
        return datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=UTC)
    except ValueError as exc:  # the shape of a run id, but no such time (month 13, 30 February)
        raise UnknownRun(f"{run_id!r} is not a run id: {exc}") from exc


def run_kind(run_id: str) -> str:
    m = _RUN_ID.fullmatch(run_id)
    return m.group(8) if m else "?"


def _day(when: date | datetime) -> str:
    return f"{when:%Y/%m/%d}"


def part_of(item: str, parts: int) -> int:
    """The part holding a product's entries: stable across processes and Python versions (not hash())."""
    return zlib.crc32(item.encode("utf-8")) % parts if parts > 1 else 0


def _part_name(run_id: str, part: int) -> str:
    return f"{SENT}{_day(run_time(run_id))}/{run_id}/{part:03d}.jsonl"


def worst(outcomes: Iterable[str]) -> str:
    found = set(outcomes)
    return next((o for o in OUTCOMES if o in found), next(iter(sorted(found)), "delivered"))


def _meta(value: object) -> str:
    return quote(str(value), safe=_META_SAFE)


def _unmeta(metadata: dict[str, str] | None) -> dict[str, str]:
    return {k.lower(): unquote(v) for k, v in (metadata or {}).items()}


# -- what is read back ---------------------------------------------------------------------------------

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


# -- the store -----------------------------------------------------------------------------------------

class RunHistory:
    """Keeps, lists, reads and prunes run reports in one container of the images account."""

    def __init__(self, service: Any, container: str, *, days: int, clock: Callable[[], datetime] = _utcnow):
        self.client = service.get_container_client(container)
        self.container = container
        self.days = days
        self.clock = clock

    # -- writing ------------------------------------------------------------------------------------

    def save(self, report: SyncReport, ledger: Ledger | None, *, kind: str) -> str:
        """Keep the report and what was sent; returns the run id. Raises on a storage error."""
        started = self.clock() - timedelta(seconds=report.seconds)
        run_id = new_run_id(kind, started)
        day = _day(started)
        images_container = str(report.context.get("container") or "")
        with _Parts(report, ledger) as parts:
            self._put_all((f"{SENT}{day}/{run_id}/{number:03d}.jsonl", data) for number, data in parts.chunks())
            index = {"parts": str(parts.count), "container": images_container}
            if parts.outcomes is not None:
                markers: list[tuple[str, dict[str, str]]] = []
                for item, outcomes in sorted(parts.outcomes.items()):
                    meta = {**index, **{_meta_key(p): _meta(o) for p, o in outcomes.items()}}
                    markers.append((f"{ITEMS}{day}/{_item_segment(item)}/{run_id}", meta))
                self._put_markers(markers)
            elif parts.first is not None and parts.last is not None:
                self._put(f"{WIDE}{day}/{run_id}", b"", {**index, "first": _meta(parts.first),
                                                         "last": _meta(parts.last)})
            head = {**report.to_dict(), "run": run_id, "kind": kind, "parts": parts.count}
            self._put(f"{RUNS}{day}/{run_id}.json", _report_body(head), _summary_metadata(report, kind))
        return run_id

    def _put_markers(self, markers: list[tuple[str, dict[str, str]]]) -> None:
        """The per-product index of a run. Best effort: a marker storage refuses (an odd product name)
        costs ``runs --item`` that product, never the run's report."""
        from azure.core.exceptions import AzureError

        for name, meta in markers:
            try:
                self._put(name, b"", meta)
            except AzureError as exc:
                log.warning("run history: no index entry for %r (runs --item will not find it): %s", name, _why(exc))

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
            yield _day(today - timedelta(days=n))

    def _list(self, prefix: str, *, metadata: bool = False) -> list[Any]:
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

    def _iter(self, prefix: str, *, metadata: bool = False) -> Iterator[Any]:
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
        name = f"{RUNS}{_day(run_time(run_id))}/{run_id}.json"
        data = self._read(name, MAX_REPORT_BYTES, "a run report")
        if data is None:
            raise UnknownRun(f"no run {run_id!r} is kept in RUN_HISTORY_CONTAINER {self.container!r} (runs are "
                             f"kept RUN_HISTORY_DAYS={self.days} days; image-sync runs lists them)")
        return check_report(name, data, run_id)

    def read_part(self, run_id: str, part: int, damage: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """The entries of one part of a run, in the order they were kept. A line that is not an entry this
        app wrote is left out, and a part too large to be one is not read: each is one line in ``damage``
        (None: a warning in the log) naming the blob and what is wrong."""
        name = _part_name(run_id, part)
        try:
            data = self._read(name, MAX_PART_BYTES, "a part of a run's entries")
        except DamagedHistory as exc:
            _tell(damage, f"{exc}; its entries are left out")
            return
        if data is None:
            return  # a part no product hashed to
        bad, first = 0, ""
        for number, raw in enumerate(io.BytesIO(data), start=1):
            if not raw.strip():
                continue
            entry, problem = _entry(raw)
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
                for blob in self._list(f"{ITEMS}{day}/{_item_segment(form)}/", metadata=True):
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
                    history.container, _why(exc))
        return None  # and no prune: the same storage would refuse it too, in a second line
    log.log(logging.DEBUG if quiet else logging.INFO, "run report kept: image-sync runs show %s", run_id)
    try:
        history.prune(force=prune)
    except Exception as exc:  # noqa: BLE001
        log.warning("old run reports not pruned from RUN_HISTORY_CONTAINER %r: %s", history.container, _why(exc))
    return run_id


def _tell(damage: list[str] | None, line: str) -> None:
    if damage is None:
        log.warning("%s", line)
    else:
        damage.append(line)


def _kind_of(value: Any) -> str:
    """What a JSON value is, for a message: 'a string', 'a list', 'null'..."""
    if value is None:
        return "null"
    names = {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _parse(data: bytes) -> tuple[Any, str | None]:
    """JSON from bytes, or why not (one phrase)."""
    try:
        return json.loads(data.decode("utf-8")), None
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start})"
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as exc:  # JSONDecodeError, and numbers of more than 4,300 digits
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        return None, f"not JSON ({getattr(exc, 'msg', str(exc))}{where})"


_REPORT_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **{key: ("a list of objects", lambda v: isinstance(v, list) and all(isinstance(e, dict) for e in v))
       for key in ("skipped", "ignored", "rejected", "failed", "deferred")},
    **{key: ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(e, str) for e in v))
       for key in ("notes", "queued")},
    **{key: ("a string", lambda v: isinstance(v, str))
       for key in ("run", "kind", "mode", "started_at", "ended_at", "container", "layout", "interrupted", "storage")},
    **{key: ("a whole number >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)
       for key in ("images", "products", "requests", "retries", "layout_misses")},
    "parts": (f"a whole number from 1 to {MAX_PARTS}",
              lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_PARTS),
    "seconds": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    **{key: ("true or false", lambda v: isinstance(v, bool)) for key in ("ok", "dry_run")},
    "delivered": ("an object of counts", lambda v: isinstance(v, dict) and all(
        isinstance(c, int) and not isinstance(c, bool) for c in v.values())),
    **{key: ("an object", lambda v: isinstance(v, dict)) for key in ("partners", "stopped_partners", "accounting",
                                                                     "truncated")},
}


def check_report(name: str, data: bytes, run_id: str) -> dict[str, Any]:
    """A kept report read back, with every field a reader uses of the type it expects; ``DamagedHistory``
    names the blob and the first thing that is wrong."""
    head, problem = _parse(data)
    if problem is None and not isinstance(head, dict):
        problem = f"{_kind_of(head)}, not a JSON object"
    if problem is not None:
        raise DamagedHistory(f"run history: {name} is not a run report: {problem}")
    for key, (expected, fits) in _REPORT_TYPES.items():
        value = head.get(key)
        if value is not None and not fits(value):
            raise DamagedHistory(f"run history: {name} is not a run report this app wrote: {key!r} is "
                                 f"{_kind_of(value)}, expected {expected}")
    if head.get("run") not in (None, run_id):
        raise DamagedHistory(f"run history: {name} names another run, {str(head['run'])[:80]!r}")
    checked: dict[str, Any] = head
    return checked


def _entry(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """One line of a part as an entry, or why it is not one."""
    if len(raw) > MAX_ENTRY_BYTES:
        return None, f"{len(raw):,} bytes, more than the {MAX_ENTRY_BYTES:,} an entry may have"
    entry, problem = _parse(raw)
    if problem is not None:
        return None, problem
    if not isinstance(entry, dict):
        return None, f"{_kind_of(entry)}, not a JSON object"
    for key in ("partner", "item", "outcome"):
        if not isinstance(entry.get(key), str):
            return None, f"{key!r} is {_kind_of(entry.get(key))}, expected a string"
    for key in ("reason", "blob", "item_number"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            return None, f"{key!r} is {_kind_of(entry[key])}, expected a string"
    images = entry.get("images")
    if images is not None and not (isinstance(images, list) and all(isinstance(i, dict) for i in images)):
        return None, f"'images' is {_kind_of(images)}, expected a list of objects"
    return entry, ""


def listed(head: dict[str, Any], key: str) -> int:
    """How many entries a report's list had (a report kept trimmed says how many there were)."""
    truncated = head.get("truncated") or {}
    count = truncated.get(key)
    return count if isinstance(count, int) else len(head.get(key) or [])


def _report_body(head: dict[str, Any]) -> bytes:
    """The kept report as JSON, at most MAX_REPORT_BYTES: a run with hundreds of thousands of skipped blobs
    keeps the first KEPT_PER_LIST of each list (and how many there were); ``--report`` names every one."""
    body = json.dumps(redact_tree(head), indent=2, ensure_ascii=False).encode("utf-8")
    if len(body) <= MAX_REPORT_BYTES:
        return body
    trimmed, cut = dict(head), {}
    for key in ("skipped", "ignored", "rejected", "failed", "deferred"):
        if len(trimmed.get(key) or []) > KEPT_PER_LIST:
            cut[key] = len(trimmed[key])
            trimmed[key] = trimmed[key][:KEPT_PER_LIST]
    trimmed["truncated"] = cut
    trimmed["notes"] = [*(head.get("notes") or []),
                        f"this kept report names the first {KEPT_PER_LIST:,} of each list "
                        f"({', '.join(f'{k} {n:,}' for k, n in cut.items())}); the sync's --report file names "
                        "every one"]
    body = json.dumps(redact_tree(trimmed), indent=2, ensure_ascii=False).encode("utf-8")
    if len(body) > MAX_REPORT_BYTES:  # a few enormous reasons: keep the counts only
        for key in cut or ("skipped", "ignored", "rejected", "failed", "deferred"):
            cut.setdefault(key, len(head.get(key) or []))
            trimmed[key] = []
        body = json.dumps(redact_tree(trimmed), indent=2, ensure_ascii=False).encode("utf-8")
    return body


def _item_segment(item: str) -> str:
    """A product id as one path segment of a blob name: quoted, dots too ('.' and '..' would be dropped by
    web clients before the request is signed)."""
    return quote(item, safe="").replace(".", "%2E")


def _why(exc: Exception) -> str:
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


class _Parts:
    """Splits a run's entries into parts by product, in two passes over a temporary file: memory holds one
    byte per entry and one part at a time, whatever the size of the run."""

    def __init__(self, report: SyncReport, ledger: Ledger | None):
        self.report = report
        self.ledger = ledger
        rough = (ledger.count() if ledger else 0) + len(report.queued) + len(report.skipped) + \
            sum(len(t.rejected) + len(t.failed) + len(t.deferred) for t in report.tallies.values())
        self.count = min(MAX_PARTS, max(1, math.ceil(rough / ENTRIES_PER_PART)))
        self.outcomes: dict[str, dict[str, str]] | None = {}
        self.first: str | None = None
        self.last: str | None = None
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="image-sync-history-")
        self._sizes = [0] * self.count
        self._order = bytearray()
        self._in_ledger: set[tuple[str, str]] = set()  # (partner, item) of problems the ledger holds
        self._separator = report.item_separator

    def __enter__(self) -> _Parts:
        self._split()
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def _lines(self, *, first_pass: bool) -> Iterator[tuple[str, str, str, bytes]]:
        """(item, partner, outcome, line) of every entry: the ledger's, then the synthetic ones. The second
        pass yields the same lines in the same order, without parsing the ledger's again."""
        problems = {(p.partner, p.item_id) for t in self.report.tallies.values()
                    for p in (*t.rejected, *t.failed, *t.deferred)}
        in_ledger = self._in_ledger
        if self.ledger is not None:
            for partner in self.ledger.partners():
                prefix = '{"partner": ' + json.dumps(partner, ensure_ascii=False) + ", "
                for text in self.ledger.entries(partner):
                    line = (prefix + text[1:] + "\n").encode("utf-8")
                    if not first_pass:
                        yield "", partner, "", line
                        continue
                    entry = json.loads(text)
                    item = str(entry.get("item"))
                    if (partner, item) in problems:
                        in_ledger.add((partner, item))
                    yield item, partner, str(entry.get("outcome")), line
        for kind, problem in ((k, p) for t in self.report.tallies.values()
                              for k, ps in (("failed", t.failed), ("rejected", t.rejected), ("deferred", t.deferred))
                              for p in ps):
            if problem.item_id == "*" or (problem.partner, problem.item_id) in in_ledger:
                continue
            entry = {"partner": problem.partner, "item": problem.item_id, "outcome": kind, "reason": problem.reason,
                     "status_code": problem.status_code, "blob": problem.blob_name, "synthetic": True}
            if problem.detail:
                entry["detail"] = problem.detail
            yield problem.item_id, problem.partner, kind, _line(entry)
        partner = next((name for name, t in self.report.tallies.items() if t.unit == "products"), "traede")
        for item in self.report.queued:
            entry = {"partner": partner, "item": item, "outcome": "queued", "synthetic": True,
                     "reason": "queued for the product sync, which sends the product's complete set"}
            yield item, partner, "queued", _line(entry)
        if self._separator:
            for skipped in self.report.skipped:
                item, sep, _ = skipped.blob_name.partition(self._separator)
                if sep and item:
                    entry = {"partner": STORAGE, "item": item, "outcome": "skipped", "synthetic": True,
                             **skipped.to_dict()}
                    yield item, STORAGE, "skipped", _line(entry)

    def _split(self) -> None:
        # Pass 1: which part each entry goes to, how big each part is, and the index (outcomes or range).
        for item, partner, outcome, line in self._lines(first_pass=True):
            part = part_of(item, self.count)
            self._order.append(part)
            self._sizes[part] += len(line)
            self.first = item if self.first is None or item < self.first else self.first
            self.last = item if self.last is None or item > self.last else self.last
            if self.outcomes is not None:
                if item not in self.outcomes and len(self.outcomes) >= INDEX_LIMIT:
                    self.outcomes = None  # a wide run: one marker with the range instead
                else:
                    mine = self.outcomes.setdefault(item, {})
                    mine[partner] = worst((mine.get(partner, outcome), outcome))
        # Pass 2: each line at its part's place in one file, so each part is one contiguous read.
        offsets, at = [], 0
        for size in self._sizes:
            offsets.append(at)
            at += size
        for n, (_, _, _, line) in enumerate(self._lines(first_pass=False)):
            part = self._order[n]
            self._file.seek(offsets[part])
            self._file.write(line)
            offsets[part] += len(line)
        self._starts = [o - s for o, s in zip(offsets, self._sizes, strict=True)]

    def chunks(self) -> Iterator[tuple[int, bytes]]:
        for part, (start, size) in enumerate(zip(self._starts, self._sizes, strict=True)):
            if size:
                self._file.seek(start)
                yield part, self._file.read(size)


def _line(entry: dict[str, Any]) -> bytes:
    return (json.dumps(redact_tree(entry), ensure_ascii=False) + "\n").encode("utf-8")


class Recording:
    """One run's ledger, and its report kept when the run ends (also when it ends with an error, which the
    kept report then names). Set ``report`` as soon as the run has one::

        with Recording(parts.history, "nightly", context=...) as rec:
            rec.report = SyncReport(ledger=rec.ledger)
            ...

    ``want_ledger``: a ledger also without history (the CLI's ``--report``).
    """

    def __init__(self, history: RunHistory | None, kind: str, *, prune: bool = False, want_ledger: bool = False,
                 quiet: bool = False, context: dict[str, Any] | None = None):
        self.history = history
        self.kind = kind
        self.prune = prune
        self.quiet = quiet
        self.context = context or {}
        self.ledger: Ledger | None = Ledger() if history is not None or want_ledger else None
        self.report: SyncReport | None = None
        self.run_id: str | None = None
        self._kept = False

    def __enter__(self) -> Recording:
        return self

    def keep_now(self, error: BaseException | None = None) -> str | None:
        """Keep the report now (once; the end of the ``with`` does it otherwise). The CLI keeps it before
        it prints the summary, so that the summary stays its last line."""
        report = self.report
        if report is None or self._kept:
            return self.run_id
        self._kept = True
        if error is not None:
            why = _why(error) if isinstance(error, Exception) else type(error).__name__
            report.add_storage_failure(Problem(Source.RUN, "*", None, f"the run ended with an error: {why}"))
        if report.ended_at is None:
            report.finish()
        for key, value in self.context.items():
            report.context.setdefault(key, value)
        self.run_id = keep(self.history, report, self.ledger, kind=self.kind, prune=self.prune, quiet=self.quiet)
        return self.run_id

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            self.keep_now(exc)
        finally:
            if self.ledger is not None:
                self.ledger.close()
