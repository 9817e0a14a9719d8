"""Each partner's own lane: its workers, its queue and its breaker. A dead, slow or throttled partner costs
only itself: the listing never waits for it, and the other partner's first request and throughput do not
depend on it.

- **Own workers.** ``workers`` threads per partner take batches from the lane's queue; the Wallie token is
  fetched by a Wallie worker, never by the listing.
- **Never blocks the listing.** The queue keeps at most ``MEMORY_RECORDS`` records and ``MEMORY_BYTES`` bytes
  in memory and spills the rest to a temporary file, so memory stays flat while a slow partner catches up,
  whatever the size of its records (a TRAEDE product carries all its images).
- **Stops once.** Credentials refused, a redirect, or ``BREAKER_FAILURES`` calls in a row that failed after
  all their retries stop the lane: the rest of its queue is reported as not sent, each unit by name, with one reason.
- **Graceful stop.** When the run's ``stop`` event is set the workers take no new batch; what is queued is
  reported as not sent. ``abort()`` cuts the requests still in flight.
- **Isolates records.** A rejected or too large batch is split until the offending records stand alone.
"""
from __future__ import annotations

import logging
import pickle
import struct
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..catalog.records import ImageRecord
from ..domain import Outcome
from ..errors import PartnerError, RejectedError, StopPartnerError, TooLargeError, TransientError
from ..runs.report import Problem, SyncReport, not_sent_reason
from .target import Target

log = logging.getLogger(__name__)
# What a lane holds in memory before it spills batches to disk: enough that a lane keeping pace never spills,
# bounded when a partner is slow. By count and by bytes: 5,000 TRAEDE products of a few KB each (one entry
# and one SAS URL per image) held ~25 MB, and a product of 200 images is 50 times larger than one of 4.
MEMORY_RECORDS = 5000
MEMORY_BYTES = 4 * 2**20
BREAKER_FAILURES = 3  # calls in a row that failed after all their retries: the partner looks down
_LENGTH = struct.Struct("<I")


@dataclass(slots=True)
class Unit:
    """One record on its way to a partner (a Wallie record, a TRAEDE product), and what names it."""

    payload: dict[str, Any]
    item_id: str
    blob_name: str | None
    records: tuple[ImageRecord, ...] = ()  # a product set's images, in the payload's order (for the report's ledger)
    size: int = 0  # about what it holds in memory, in bytes (0: the lane estimates it from the payload)


class _SpillQueue:
    """A FIFO of batches: up to ``memory`` records and ``memory_bytes`` bytes in memory, the rest in a
    temporary file (one batch is always let in, so a batch larger than the bound still moves)."""

    def __init__(self, memory: int, memory_bytes: int = MEMORY_BYTES):
        self.memory = memory
        self.memory_bytes = memory_bytes
        self._in_memory = 0  # records in the batches held in memory
        self._bytes = 0  # ...and about the bytes they hold
        self.peak_records = self.peak_bytes = 0  # the most held in memory at once (the tests read them)
        self._items: deque[tuple[list[Unit], int]] = deque()
        self._file: Any = None
        self._write_at = self._read_at = 0
        self._on_disk = 0
        self.spilled = 0
        self._closed = False
        self._cond = threading.Condition()

    def put(self, batch: list[Unit]) -> None:
        size = batch_bytes(batch)
        with self._cond:
            fits = self._in_memory + len(batch) <= self.memory and self._bytes + size <= self.memory_bytes
            if (fits or not self._items) and not self._on_disk:
                self._items.append((batch, size))
                self._in_memory += len(batch)
                self._bytes += size
                self.peak_records = max(self.peak_records, self._in_memory)
                self.peak_bytes = max(self.peak_bytes, self._bytes)
            else:
                if self._file is None:
                    self._file = tempfile.TemporaryFile(prefix="image-sync-lane-")
                data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
                self._file.seek(self._write_at)
                self._file.write(_LENGTH.pack(len(data)) + data)
                self._write_at = self._file.tell()
                self._on_disk += 1
                self.spilled += 1
            self._cond.notify()

    def take(self) -> list[Unit] | None:
        """The next batch; waits while the queue is empty and open; None once closed and empty."""
        with self._cond:
            while not self._items and not self._on_disk and not self._closed:
                self._cond.wait()
            batch: list[Unit]
            if self._items:
                batch, size = self._items.popleft()
                self._in_memory -= len(batch)
                self._bytes -= size
                return batch
            if self._on_disk:
                self._file.seek(self._read_at)
                (size,) = _LENGTH.unpack(self._file.read(_LENGTH.size))
                batch = pickle.loads(self._file.read(size))
                self._read_at = self._file.tell()
                self._on_disk -= 1
                if not self._on_disk:  # drained: start the file over
                    self._file.seek(0)
                    self._file.truncate()
                    self._write_at = self._read_at = 0
                return batch
            return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def dispose(self) -> None:
        if self._file is not None:
            self._file.close()


class Lane:
    def __init__(self, target: Target, report: SyncReport, *, workers: int, stop: threading.Event,
                 guard: Callable[[], float] | None = None, track_items: bool = False,
                 memory_records: int | None = None, memory_bytes: int | None = None):
        self.target = target
        self.name = target.name
        self.report = report
        self.stop = stop
        self.guard = guard
        self.track_items = track_items
        self.queue = _SpillQueue(MEMORY_RECORDS if memory_records is None else memory_records,
                                 MEMORY_BYTES if memory_bytes is None else memory_bytes)
        self._lock = threading.Lock()
        self._stopped: str | None = None  # why this partner gets nothing more in this run
        self._stopped_retryable = True
        self._failed_calls = 0
        report.partner(self.name)
        self._before = target.stats()
        self._threads = [threading.Thread(target=self._work, name=f"{self.name}-lane-{n}", daemon=True)
                         for n in range(workers)]
        for thread in self._threads:
            thread.start()

    def put(self, units: list[Unit]) -> None:
        if units:
            self.queue.put(units)

    def finish(self) -> None:
        """No more batches: wait until the queue is empty and the workers are done; count the traffic."""
        self.queue.close()
        for thread in self._threads:
            thread.join()
        self.queue.dispose()
        after = self.target.stats()
        self.report.add_traffic(self.name, after["requests"] - self._before["requests"],
                                after["retries"] - self._before["retries"])

    def abort(self) -> None:
        """Cut the requests in flight (the run was stopped and its grace period is over)."""
        self.target.abort()

    # -- the workers --------------------------------------------------------------------------------

    def _work(self) -> None:
        while (batch := self.queue.take()) is not None:
            try:
                if self._stopped:
                    self._fail(batch, not_sent_reason(self._stopped), retryable=self._stopped_retryable)
                elif self.stop.is_set():
                    reason = getattr(self.stop, "reason", None) or "a stop request"
                    self._fail(batch, f"not sent: the run was stopped ({reason}) before it was sent")
                else:
                    self._deliver(batch)
            except Exception as exc:  # noqa: BLE001 - a bug or a broken output must not lose the batch silently
                log.exception("%s lane: unexpected error", self.name)
                self._fail(batch, f"failed: unexpected error in the {self.name} lane: {type(exc).__name__}: {exc}")

    def _deliver(self, units: list[Unit]) -> None:
        """Send a batch; on a rejection (or 413) split it until the offending records stand alone."""
        try:
            sent = self.target.send(units_payloads(units), guard=self.guard)
        except PartnerError as exc:
            if exc.unsure:
                self._unsure(units)
            self._failed(units, exc)
            return
        if sent is not None and sent.unsure:
            self._unsure(units)
        with self._lock:
            self._failed_calls = 0
        self.report.add_delivered(self.name, len(units), items=[u.item_id for u in units] if self.track_items else ())
        self._record(units, Outcome.DELIVERED)

    def _failed(self, units: list[Unit], exc: PartnerError) -> None:
        if isinstance(exc, RejectedError):
            if len(units) > 1:
                mid = len(units) // 2
                self._deliver(units[:mid])
                self._deliver(units[mid:])
                return
            cause, detail = _cause(exc)
            if isinstance(exc, TooLargeError):
                cause = f"too large for {self.name} even on its own: {cause}"
            for u in units:
                self.report.add_rejected(Problem(self.name, u.item_id, u.blob_name, cause, exc.status_code,
                                                 detail=detail))
            self._record(units, Outcome.REJECTED, cause, detail)
        elif isinstance(exc, StopPartnerError):
            # Retrying with the same credentials or address cannot help: stop, with one reason for all.
            self._stop(_reason(exc), retryable=False)
            self._fail(units, not_sent_reason(self._stopped or _reason(exc)), exc.status_code, retryable=False)
        else:
            cause, detail = _cause(exc)
            self._fail(units, cause, exc.status_code, retryable=isinstance(exc, TransientError), detail=detail)
            if isinstance(exc, TransientError) and not self.stop.is_set():
                with self._lock:
                    self._failed_calls += 1
                    failed = self._failed_calls
                if failed >= BREAKER_FAILURES:
                    self._stop(f"{failed} calls in a row failed after their retries ({self.name} looks down; "
                               "a later run re-sends)", retryable=True)

    def _unsure(self, units: list[Unit]) -> None:
        """A request of these units may still be applied later (see ``http.Answer``)."""
        self.report.add_unsure(self.name, (u.item_id for u in units))

    def _stop(self, why: str, *, retryable: bool) -> None:
        """Send nothing more to this partner in this run; every unit left gets one reason."""
        with self._lock:
            if self._stopped is None:
                self._stopped = why
                self._stopped_retryable = retryable
                self.report.stop_partner(self.name, why)

    def _fail(self, units: list[Unit], reason: str, status: int | None = None, *, retryable: bool = True,
              detail: str | None = None) -> None:
        for u in units:
            self.report.add_failed(Problem(self.name, u.item_id, u.blob_name, reason, status, retryable, detail))
        self._record(units, Outcome.NOT_SENT if reason.startswith("not sent") else Outcome.FAILED, reason, detail)

    def _record(self, units: list[Unit], outcome: Outcome, reason: str | None = None,
                detail: str | None = None) -> None:
        ledger = self.report.ledger
        if ledger is not None:
            for u in units:
                ledger.record(self.name, u, outcome, reason, detail)


def units_payloads(units: list[Unit]) -> list[dict[str, Any]]:
    return [u.payload for u in units]


def batch_bytes(units: list[Unit]) -> int:
    """About the memory a batch holds: each unit's ``size`` (or an estimate from its payload), and the
    image records a product keeps for the report's ledger."""
    return sum((u.size or _UNIT_BYTES + approx_bytes(u.payload)) + _RECORD_BYTES * len(u.records) for u in units)


_UNIT_BYTES = 100  # the Unit and its slot in the batch
_RECORD_BYTES = 700  # an ImageRecord (its name, ids and key) kept with a product for the ledger


def approx_bytes(value: Any) -> int:
    """About what a JSON-like value holds in memory (CPython 3.11 object sizes, rounded up)."""
    if isinstance(value, str):
        return 50 + len(value)
    if isinstance(value, dict):
        return 100 + 40 * len(value) + sum(approx_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return 60 + 8 * len(value) + sum(approx_bytes(v) for v in value)
    return 32


def _reason(exc: PartnerError) -> str:
    body = " ".join((exc.response_body or "").split())
    return exc.message + (f": {body}" if body else "")


def _cause(exc: PartnerError) -> tuple[str, str | None]:
    """(cause, detail) of a record's problem: the cause alike for every record (output groups by it), the
    detail its own (how many attempts, the partner's answer: kept in the report)."""
    body = " ".join((exc.response_body or "").split())
    detail = "; ".join(part for part in (exc.detail, body) if part)
    return exc.cause, detail or None


