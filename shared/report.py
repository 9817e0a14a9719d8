"""The run report: every catalog image ends up delivered, skipped or failed, each with its reason."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterable

from .redact import redact


@dataclass(frozen=True)
class Problem:
    """A record a partner rejected, or that could not be delivered after retries."""

    partner: str
    item_id: str
    blob_name: str | None
    reason: str
    status_code: int | None = None

    def line(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code else ""
        blob = f" blob {self.blob_name!r}" if self.blob_name else ""
        return f"{self.partner}: item {self.item_id!r}{blob}{code}: {self.reason}"


@dataclass
class SyncReport:
    """Counters and problems of one run; safe to update from worker threads."""

    mode: str = "full"
    dry_run: bool = False
    images: int = 0
    products: int = 0
    skipped: list = field(default_factory=list)          # SkippedBlob
    rejected: list = field(default_factory=list)         # Problem
    failed: list = field(default_factory=list)           # Problem
    deferred: list = field(default_factory=list)         # Problem: left to another process (not a failure)
    delivered: dict = field(default_factory=lambda: {"wallie": 0, "traede": 0})
    partners: list = field(default_factory=list)         # names of the partners this run sends to
    queued: list = field(default_factory=list)           # products handed to the product queue
    notes: list = field(default_factory=list)            # what a person should know about this run
    track: set = field(default_factory=set)              # products whose TRAEDE delivery is recorded...
    delivered_items: set = field(default_factory=set)    # ...here, when delivered
    requests: int = 0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counters: int) -> None:
        with self._lock:
            for name, value in counters.items():
                setattr(self, name, getattr(self, name) + value)

    def add_delivered(self, partner: str, count: int, items: Iterable[str] = ()) -> None:
        with self._lock:
            self.delivered[partner] = self.delivered.get(partner, 0) + count
            self.delivered_items.update(i for i in items if i in self.track)

    def add_problem(self, kind: str, problem: Problem) -> None:
        # A partner may echo our request (SAS URLs) in its error text: the report is printed and saved.
        clean = redact(problem.reason)
        if clean != problem.reason:
            problem = Problem(problem.partner, problem.item_id, problem.blob_name, clean, problem.status_code)
        with self._lock:
            getattr(self, kind).append(problem)

    def add_deferred(self, problem: Problem) -> None:
        with self._lock:
            self.deferred.append(problem)

    def outcome(self, partner: str, item_id: str) -> str:
        """What became of a tracked product at ``partner``: failed, rejected, deferred, delivered, or
        "not sent" (e.g. a dry run, or a product the run never reached)."""
        with self._lock:
            for kind in ("failed", "rejected", "deferred"):
                if any(p.partner == partner and p.item_id == item_id for p in getattr(self, kind)):
                    return kind
            return "delivered" if item_id in self.delivered_items else "not sent"

    def merge(self, other: "SyncReport") -> None:
        """Add another run's outcome to this one (an operation made of several engine runs)."""
        with self._lock:
            for name in ("images", "products", "requests", "retries"):
                setattr(self, name, getattr(self, name) + getattr(other, name))
            for name in ("skipped", "rejected", "failed", "deferred", "queued", "notes"):
                getattr(self, name).extend(getattr(other, name))
            for partner, count in other.delivered.items():
                self.delivered[partner] = self.delivered.get(partner, 0) + count
            self.partners = list(dict.fromkeys(self.partners + other.partners))
            self.track |= other.track
            self.delivered_items |= other.delivered_items

    def accounting(self) -> dict:
        """Per partner: what it should have received, and where each unit ended up.

        Wallie counts images, TRAEDE counts products. ``unaccounted`` must be 0: a unit that is neither
        delivered, rejected nor failed would be a silent loss. A storage problem (the listing stopped)
        is reported under ``storage``: images that were never listed cannot be named.
        """
        with self._lock:
            out = {}
            named = set(self.partners) or {p for p, n in self.delivered.items() if n}
            for partner in sorted(named | {p.partner for p in self.rejected + self.failed} - {"storage"}):
                expected = self.products if partner == "traede" else self.images
                delivered = self.delivered.get(partner, 0)
                rejected = sum(1 for p in self.rejected if p.partner == partner)
                failed = sum(1 for p in self.failed if p.partner == partner)
                deferred = sum(1 for p in self.deferred if p.partner == partner)
                out[partner] = {"expected": expected, "delivered": delivered, "rejected": rejected,
                                "failed": failed, "deferred": deferred,
                                "unaccounted": expected - delivered - rejected - failed - deferred}
            out["storage"] = {"listed": self.images + len(self.skipped), "images": self.images,
                              "skipped": len(self.skipped),
                              "complete": not any(p.partner == "storage" for p in self.failed)}
            return out

    def finish(self) -> "SyncReport":
        self.seconds = round(time.monotonic() - self.started, 3)
        return self

    @property
    def ok(self) -> bool:
        return not self.rejected and not self.failed

    def summary(self) -> str:
        verb = "would send" if self.dry_run else "delivered"
        parts = [
            f"{self.mode} sync{' (dry run)' if self.dry_run else ''}: {self.images} images",
            f"{self.products} products",
            f"{verb} wallie={self.delivered.get('wallie', 0)} images traede={self.delivered.get('traede', 0)} products",
            f"requests={self.requests}", f"retries={self.retries}", f"skipped={len(self.skipped)}",
            f"rejected={len(self.rejected)}", f"failed={len(self.failed)}", f"{self.seconds:.1f}s",
        ]
        if self.deferred:
            parts.insert(-1, f"deferred={len(self.deferred)}")
        if self.queued:
            parts.insert(-1, f"queued for TRAEDE={len(self.queued)}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode, "dry_run": self.dry_run, "ok": self.ok,
            "images": self.images, "products": self.products,
            "delivered": dict(self.delivered), "requests": self.requests, "retries": self.retries,
            "seconds": self.seconds,
            "skipped": [{"blob": s.blob_name, "reason": s.reason} for s in self.skipped],
            "rejected": [_problem_dict(p) for p in self.rejected],
            "failed": [_problem_dict(p) for p in self.failed],
            "deferred": [_problem_dict(p) for p in self.deferred],
            "queued": list(self.queued), "notes": list(self.notes),
            "accounting": self.accounting(),
        }


def _problem_dict(p: Problem) -> dict:
    return {"partner": p.partner, "item": p.item_id, "blob": p.blob_name, "reason": p.reason,
            "status_code": p.status_code}
