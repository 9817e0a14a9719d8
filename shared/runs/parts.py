"""A run's entries split into parts by product, so one product's history costs one small read per run.
"""
from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ..domain import Outcome
from ..redact import redact_tree
from .ledger import Ledger
from .names import part_of
from .report import STORAGE, SyncReport

INDEX_LIMIT = 50          # a run that touched more products gets one "wide" marker, not one per product


ENTRIES_PER_PART = 2000   # about 1-2 MB a part


MAX_PARTS = 256


# A product's outcome at a partner in one run is the worst of its entries, in this order.
def worst(outcomes: Iterable[str]) -> str:
    """The worst of a product's outcomes in a run (``domain.Outcome`` lists them worst first); an outcome
    this version does not know (a foreign kept run) is shown as it is."""
    found = set(outcomes)
    return next((o.value for o in Outcome if o.value in found), next(iter(sorted(found)), Outcome.DELIVERED.value))


class Parts:
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

    def __enter__(self) -> Parts:
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

