"""The run report: every catalog image ends up delivered, skipped, rejected, failed or deferred, by name.

Typed per partner (``PartnerTally``, keyed by ``domain.Partner``): the engine records outcomes through
``add_*`` methods; each partner counts in its own unit (``Partner.unit``: images or products). Safe to update
from worker threads.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..catalog.records import SkippedBlob
from ..domain import Outcome, Partner, Source, Where
from ..redact import redact
from .ledger import Ledger

STORAGE = Source.STORAGE  # not a partner: where listing failures are reported


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Problem:
    """A record a partner rejected, one that could not be delivered, or one left to another sender.

    ``reason`` is the cause: the same words for every record it applies to, so output groups by it (a
    partner that refuses 2,000 records for one cause is one line); ``detail`` is what is particular to this
    record (the partner's answer, the code that is missing), kept in the report and the run history."""

    partner: Where
    item_id: str
    blob_name: str | None
    reason: str
    status_code: int | None = None
    retryable: bool = True  # for a failure: can a later attempt with the same configuration succeed?
    detail: str | None = None

    @property
    def text(self) -> str:
        """The cause and this record's detail, as one sentence."""
        return f"{self.reason}: {self.detail}" if self.detail else self.reason

    def line(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code else ""
        blob = f" blob {self.blob_name!r}" if self.blob_name else ""
        return f"{self.partner}: item {self.item_id!r}{blob}{code}: {self.text}"

    def to_dict(self) -> dict[str, Any]:
        out = {"partner": self.partner, "item": self.item_id, "blob": self.blob_name, "reason": self.reason,
               "status_code": self.status_code}
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(slots=True)
class PartnerTally:
    """One partner's outcome of a run, counted in its own unit (Wallie: images; TRAEDE: products)."""

    name: Partner
    unit: str
    delivered: int = 0
    rejected: list[Problem] = field(default_factory=list)
    failed: list[Problem] = field(default_factory=list)
    deferred: list[Problem] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    stopped: str | None = None  # why nothing more was sent to this partner in this run
    unsure: set[str] = field(default_factory=set)  # items a request of unknown outcome carried (see http.Answer)


@dataclass
class SyncReport:
    """Counters and problems of one run."""

    mode: str = "full"
    dry_run: bool = False
    images: int = 0
    products: int = 0
    skipped: list[SkippedBlob] = field(default_factory=list)
    ignored: list[SkippedBlob] = field(default_factory=list)  # metadata values left out (the image went)
    not_web_ready: list[SkippedBlob] = field(default_factory=list)  # sent as it is although not web-ready
    web: dict[str, int] = field(default_factory=dict)    # the web stage's counts (``imaging.stage``)
    storage_failures: list[Problem] = field(default_factory=list)
    tallies: dict[Partner, PartnerTally] = field(default_factory=dict)
    queued: list[str] = field(default_factory=list)      # products handed to the product queue
    notes: list[str] = field(default_factory=list)       # what a person should know about this run
    track: set[str] = field(default_factory=set)         # products whose delivery is recorded...
    delivered_items: set[str] = field(default_factory=set)  # ...here, when their product set arrived
    interrupted: str | None = None                       # the signal that stopped the run, if any
    layout: str = ""                                     # IMAGE_PATH_PATTERN of the run...
    item_separator: str | None = None                    # ...and what follows {item_id} when it leads it
    layout_misses: int = 0                               # image files whose path does not fit it...
    layout_example: str | None = None                    # ...and the first of them
    listing_done: bool = False                           # totals are known once the listing ended
    context: dict[str, Any] = field(default_factory=dict)  # container, partner base URLs (no secrets)
    ledger: Ledger | None = field(default=None, repr=False, compare=False)  # what each partner got
    started_at: str = field(default_factory=_now)
    ended_at: str | None = None
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_dict(cls, kept: dict[str, Any]) -> SyncReport:
        """A report read back from ``to_dict`` (a kept run, checked by ``history.check_report``): enough of it
        for ``grouped_lines``, so a kept run is told in the same lines as the run told them."""
        report = cls(mode=str(kept.get("mode") or "?"), layout=str(kept.get("layout") or ""))
        for name in {**(kept.get("delivered") or {}), **(kept.get("stopped_partners") or {})}:
            if partner := _partner(name):
                report.partner(partner)
        for key, listed in (("skipped", report.skipped), ("ignored", report.ignored),
                            ("not_web_ready", report.not_web_ready)):
            listed.extend(SkippedBlob(str(e.get("blob")), str(e.get("reason")), detail=_text(e.get("detail")))
                          for e in kept.get(key) or [])
        for kind in (Outcome.REJECTED, Outcome.FAILED, Outcome.DEFERRED):
            for e in kept.get(kind.value) or []:
                status = e.get("status_code")
                where = _partner(e.get("partner")) or _source(e.get("partner"))
                problem = Problem(where, str(e.get("item")), _text(e.get("blob")), str(e.get("reason")),
                                  status if isinstance(status, int) else None, detail=_text(e.get("detail")))
                report._file(kind, problem)
        for name, why in (kept.get("stopped_partners") or {}).items():
            if partner := _partner(name):
                report._tally(partner).stopped = str(why)
        return report

    # -- recording ----------------------------------------------------------------------------------

    def partner(self, partner: Partner) -> PartnerTally:
        """Register a partner this run sends to (idempotent) and return its tally."""
        with self._lock:
            return self._tally(partner)

    def add_delivered(self, partner: Partner, count: int, items: Iterable[str] = ()) -> None:
        with self._lock:
            self._tally(partner).delivered += count
            self.delivered_items.update(i for i in items if i in self.track)

    def add_rejected(self, problem: Problem) -> None:
        self._add(Outcome.REJECTED, problem)

    def add_failed(self, problem: Problem) -> None:
        self._add(Outcome.FAILED, problem)

    def add_deferred(self, problem: Problem) -> None:
        self._add(Outcome.DEFERRED, problem)

    def add_unsure(self, partner: Partner, items: Iterable[str]) -> None:
        """Items a request carried whose outcome stayed unknown: the partner may still apply it, later."""
        with self._lock:
            self._tally(partner).unsure.update(items)

    def unsure(self, partner: Partner) -> set[str]:
        with self._lock:
            tally = self.tallies.get(partner)
            return set(tally.unsure) if tally else set()

    def add_storage_failure(self, problem: Problem) -> None:
        with self._lock:
            self.storage_failures.append(_clean(problem))

    def add_skipped(self, entry: SkippedBlob) -> None:
        with self._lock:
            self.skipped.append(entry)
            if entry.layout_miss:
                self.layout_misses += 1
                self.layout_example = self.layout_example or entry.blob_name

    def add_ignored(self, blob_name: str, reason: str, detail: str | None = None) -> None:
        with self._lock:
            self.ignored.append(SkippedBlob(blob_name, reason, detail=detail))

    def add_not_web_ready(self, blob_name: str, reason: str, detail: str | None = None) -> None:
        """An image sent as it is although a partner may not show it (not converted yet, or unchecked)."""
        with self._lock:
            self.not_web_ready.append(SkippedBlob(blob_name, reason, detail=detail))

    def add_web(self, what: str, count: int = 1) -> None:
        """Count what the web stage did: ``checked``, ``converted``, ``renditions`` (sent), ``retyped``
        (served with their real type), ``unchecked``, ``undecodable``."""
        with self._lock:
            self.web[what] = self.web.get(what, 0) + count

    def add_traffic(self, partner: Partner, requests: int, retries: int) -> None:
        with self._lock:
            tally = self._tally(partner)
            tally.requests += requests
            tally.retries += retries

    def stop_partner(self, partner: Partner, why: str) -> None:
        with self._lock:
            tally = self._tally(partner)
            if tally.stopped is None:
                tally.stopped = why

    def _add(self, kind: Outcome, problem: Problem) -> None:
        # A partner may echo our request (URLs, headers) in its error text: the report is printed and saved.
        problem = _clean(problem)
        with self._lock:
            self._file(kind, problem)

    def _file(self, kind: Outcome, problem: Problem) -> None:
        """Put a problem where it belongs: its partner's list of that kind, or the run's own failures."""
        if not isinstance(problem.partner, Partner):
            self.storage_failures.append(problem)
            return
        tally = self._tally(problem.partner)
        {Outcome.REJECTED: tally.rejected, Outcome.FAILED: tally.failed, Outcome.DEFERRED: tally.deferred}[kind] \
            .append(problem)

    def _tally(self, partner: Partner) -> PartnerTally:
        tally = self.tallies.get(partner)
        if tally is None:
            tally = self.tallies[partner] = PartnerTally(partner, partner.unit)
        return tally

    # -- reading ------------------------------------------------------------------------------------

    @property
    def rejected(self) -> list[Problem]:
        return [p for t in self.tallies.values() for p in t.rejected]

    @property
    def failed(self) -> list[Problem]:
        return list(self.storage_failures) + [p for t in self.tallies.values() for p in t.failed]

    @property
    def deferred(self) -> list[Problem]:
        return [p for t in self.tallies.values() for p in t.deferred]

    @property
    def delivered(self) -> dict[Partner, int]:
        return {name: t.delivered for name, t in self.tallies.items()}

    @property
    def requests(self) -> int:
        return sum(t.requests for t in self.tallies.values())

    @property
    def retries(self) -> int:
        return sum(t.retries for t in self.tallies.values())

    @property
    def nothing_fits(self) -> bool:
        """Image files exist, but not one fits IMAGE_PATH_PATTERN: the layout setting is wrong."""
        return self.images == 0 and self.layout_misses > 0

    @property
    def ok(self) -> bool:
        return not self.rejected and not self.failed and not self.nothing_fits

    def layout_line(self) -> str | None:
        """One line when the layout looks wrong: an error when no image fits, a warning when most don't."""
        example = f"e.g. {self.layout_example!r}"
        if self.nothing_fits:
            return (f"configuration error: no image file fits IMAGE_PATH_PATTERN {self.layout!r}: "
                    f"{self.layout_misses} image files were skipped, {example}; set IMAGE_PATH_PATTERN to "
                    "describe where the item id (and colour) are in the blob names")
        if self.layout_misses > self.images:
            return (f"warning: {self.layout_misses} of {self.layout_misses + self.images} image files do not fit "
                    f"IMAGE_PATH_PATTERN {self.layout!r} ({example}): check the layout")
        return None

    def outcome(self, partner: Partner, item_id: str) -> Outcome:
        """What became of a tracked product at ``partner``: failed, rejected, deferred, delivered, or
        "not sent" (e.g. a dry run, or a product the run never reached)."""
        with self._lock:
            tally = self.tallies.get(partner)
            if tally is not None:
                for kind, problems in ((Outcome.FAILED, tally.failed), (Outcome.REJECTED, tally.rejected),
                                       (Outcome.DEFERRED, tally.deferred)):
                    if any(p.item_id == item_id for p in problems):
                        return kind
            return Outcome.DELIVERED if item_id in self.delivered_items else Outcome.NOT_SENT

    def accounting(self) -> dict[str, Any]:
        """Per partner: what it should have received, and where each unit ended up.

        ``unaccounted`` must be 0: a unit that is neither delivered, rejected, failed nor deferred would be
        a silent loss. A storage problem (the listing stopped) is reported under ``storage``: images that
        were never listed cannot be named.
        """
        with self._lock:
            out: dict[str, Any] = {}
            for name, t in sorted(self.tallies.items()):
                expected = self.products if t.unit == "products" else self.images
                out[name] = {"expected": expected, "delivered": t.delivered, "rejected": len(t.rejected),
                             "failed": len(t.failed), "deferred": len(t.deferred),
                             "unaccounted": expected - t.delivered - len(t.rejected) - len(t.failed)
                             - len(t.deferred)}
            out[STORAGE] = {"listed": self.images + len(self.skipped), "images": self.images,
                            "skipped": len(self.skipped), "complete": not self.storage_failures}
            return out

    def merge(self, other: SyncReport) -> None:
        """Add another run's outcome to this one (an operation made of several engine runs)."""
        with self._lock:
            self.images += other.images
            self.products += other.products
            self.skipped.extend(other.skipped)
            self.ignored.extend(other.ignored)
            self.not_web_ready.extend(other.not_web_ready)
            for what, count in other.web.items():
                self.web[what] = self.web.get(what, 0) + count
            self.layout_misses += other.layout_misses
            self.layout_example = self.layout_example or other.layout_example
            self.layout = self.layout or other.layout
            self.storage_failures.extend(other.storage_failures)
            self.queued.extend(other.queued)
            self.notes.extend(other.notes)
            for name, t in other.tallies.items():
                mine = self.tallies.setdefault(name, PartnerTally(name, t.unit))
                mine.delivered += t.delivered
                mine.requests += t.requests
                mine.retries += t.retries
                mine.rejected.extend(t.rejected)
                mine.failed.extend(t.failed)
                mine.deferred.extend(t.deferred)
                mine.stopped = mine.stopped or t.stopped
                mine.unsure |= t.unsure
            self.track |= other.track
            self.delivered_items |= other.delivered_items
            self.interrupted = self.interrupted or other.interrupted

    def finish(self) -> SyncReport:
        self.seconds = round(time.monotonic() - self.started, 3)
        self.ended_at = _now()
        return self

    # -- telling ------------------------------------------------------------------------------------

    def summary(self) -> str:
        verb = "would send" if self.dry_run else "delivered"
        sent = " ".join(f"{t.name}={t.delivered} {t.unit}" for t in self.tallies.values()) or "nothing"
        parts = [
            f"{self.mode} sync{' (dry run)' if self.dry_run else ''}: {self.images} images",
            f"{self.products} products",
            f"{verb} {sent}",
            f"requests={self.requests}", f"retries={self.retries}", f"skipped={len(self.skipped)}",
            f"rejected={len(self.rejected)}", f"failed={len(self.failed)}",
        ]
        if self.ignored:
            parts.append(f"metadata ignored={len(self.ignored)}")
        if self.web.get("renditions"):
            parts.append(f"renditions={self.web['renditions']}")
        if self.not_web_ready:
            parts.append(f"not web-ready={len(self.not_web_ready)}")
        if self.deferred:
            parts.append(f"deferred={len(self.deferred)}")
        if self.queued:
            parts.append(f"queued for TRAEDE={len(self.queued)}")
        if self.interrupted:
            parts.append(f"STOPPED by {self.interrupted}")
        parts.append(f"{self.seconds:.1f}s")
        return ", ".join(parts)

    def grouped_lines(self, sample: int = 3, *, deferred: bool = False) -> list[str]:
        """Skips and problems as one line per cause: the count, the cause and the first few names (with the
        first one's detail). A night with 10,000 junk blobs, or a partner that refused every record, must
        not write 10,000 lines to the logs (Application Insights bills them); ``to_dict`` keeps every one,
        with its detail, for the report. ``deferred``: products left to another sender too (``runs show``)."""
        lines = []
        for word, listed in (("skipped", self.skipped), ("ignored", self.ignored),
                             ("not web-ready", self.not_web_ready)):
            by_reason: dict[str, list[SkippedBlob]] = {}
            for entry in listed:
                by_reason.setdefault(entry.reason, []).append(entry)
            for reason, entries in by_reason.items():
                if len(entries) == 1:
                    lines.append(f"{word}: {entries[0].blob_name!r}: {entries[0].text}")
                else:
                    lines.append(f"{word}: {len(entries)} blobs: {reason}: "
                                 f"{_sample([repr(e.blob_name) for e in entries], sample)}")
        folded = {(t.name, not_sent_reason(t.stopped)) for t in self.tallies.values() if t.stopped}
        kinds = [("rejected", self.rejected), ("failed", self.failed)]
        if deferred:
            kinds.append(("deferred", self.deferred))
        for kind, problems in kinds:
            causes: dict[tuple[Where, str, int | None], list[Problem]] = {}
            for p in problems:
                if (p.partner, p.reason) not in folded:
                    causes.setdefault((p.partner, p.reason, p.status_code), []).append(p)
            for (partner, reason, status), group in causes.items():
                if len(group) == 1:
                    lines.append(f"{kind}: {group[0].line()}")
                    continue
                unit = partner.unit if isinstance(partner, Partner) else "records"
                code = f" (HTTP {status})" if status else ""
                first = next((p for p in group if p.detail), None)
                example = f"; the first: {_name(first)}: {first.detail}" if first is not None else ""
                lines.append(f"{kind}: {partner}: {len(group)} {unit}{code}: {reason}: "
                             f"{_sample([_name(p) for p in group], sample)}{example}")
        for t in self.tallies.values():
            if t.stopped:
                count = sum(1 for p in t.failed if p.reason == not_sent_reason(t.stopped))
                lines.append(f"stopped: {t.name}: {t.stopped}; {count} {t.unit} not sent "
                             "(each is named in the --report file)")
        layout = self.layout_line()
        if layout:
            lines.append(layout)
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "dry_run": self.dry_run, "ok": self.ok, "started_at": self.started_at,
            "ended_at": self.ended_at, **self.context, "layout": self.layout, "interrupted": self.interrupted,
            "layout_misses": self.layout_misses,
            "images": self.images, "products": self.products,
            "delivered": self.delivered, "requests": self.requests, "retries": self.retries,
            "seconds": self.seconds,
            "skipped": [s.to_dict() for s in self.skipped],
            "ignored": [s.to_dict() for s in self.ignored],
            "not_web_ready": [s.to_dict() for s in self.not_web_ready],
            "web": dict(sorted(self.web.items())),
            "rejected": [p.to_dict() for p in self.rejected],
            "failed": [p.to_dict() for p in self.failed],
            "deferred": [p.to_dict() for p in self.deferred],
            "stopped_partners": {t.name: t.stopped for t in self.tallies.values() if t.stopped},
            "unsure": {t.name: sorted(t.unsure) for t in self.tallies.values() if t.unsure},
            "units": {t.name: t.unit for t in self.tallies.values()},
            "queued": list(self.queued), "notes": list(self.notes),
            "accounting": self.accounting(),
        }


def not_sent_reason(stopped: str) -> str:
    """The reason given for every unit a stopped partner did not get."""
    return f"not sent: {stopped}"


def _clean(problem: Problem) -> Problem:
    reason, detail = redact(problem.reason), problem.detail and redact(problem.detail)
    if reason == problem.reason and detail == problem.detail:
        return problem
    return Problem(problem.partner, problem.item_id, problem.blob_name, reason, problem.status_code,
                   problem.retryable, detail)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _name(p: Problem) -> str:
    return f"item {p.item_id!r}" + (f" blob {p.blob_name!r}" if p.blob_name else "")


def _sample(names: list[str], sample: int) -> str:
    return ", ".join(names[:sample]) + (f" and {len(names) - sample} more" if len(names) > sample else "")


def _partner(name: object) -> Partner | None:
    """A partner named in a kept run (None for a name this version does not know)."""
    try:
        return Partner(str(name))
    except ValueError:
        return None


def _source(name: object) -> Source:
    try:
        return Source(str(name))
    except ValueError:
        return Source.RUN
