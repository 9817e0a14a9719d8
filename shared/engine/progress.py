"""Progress while a run goes on, in any output: a line every ``every`` seconds with counts, and totals and
a rate once they are known. On a terminal it is one line that keeps updating; in a pipe, a CI log or the
Functions host it is a log line at INFO, so a long run is never silent until its end."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..runs.report import SyncReport


def progress_line(report: SyncReport, elapsed: float) -> str:
    rate = f", {report.images / elapsed:,.0f} images/s" if elapsed > 0 and report.images else ""
    listed = f"{report.images:,} images listed" + (" (all)" if report.listing_done else "") + rate
    sent = []
    with report._lock:  # the lanes add to it from their threads
        tallies = list(report.tallies.values())
    for t in tallies:
        total = report.products if t.unit == "products" else report.images
        of = f" of {total:,}" if report.listing_done else ""
        problems = len(t.failed) + len(t.rejected)
        sent.append(f"{t.name} {t.delivered:,}{of} {t.unit}" + (f" ({problems:,} not delivered)" if problems else ""))
    return f"progress: {listed}; delivered {', '.join(sent) or 'nothing yet'}; {elapsed:.0f} s"


class Progress:
    """``with Progress(report, emit, every=10):`` emits ``progress_line`` every ``every`` seconds."""

    def __init__(self, report: SyncReport | Callable[[], SyncReport | None], emit: Callable[[str], None],
                 every: float = 10.0):
        self._report = report if callable(report) else (lambda: report)
        self.emit = emit
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._started = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            report = self._report()
            if report is not None:
                self.emit(progress_line(report, time.monotonic() - self._started))

    def __enter__(self) -> Progress:
        if self.every > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
