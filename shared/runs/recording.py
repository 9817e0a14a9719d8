"""One run's ledger, and its report kept when the run ends (``Recording``).
"""
from __future__ import annotations

from typing import Any

from ..domain import Source
from .history import RunHistory, keep, why
from .ledger import Ledger
from .report import Problem, SyncReport


class Recording:
    """One run's ledger, and its report kept when the run ends (also when it ends with an error, which the
    kept report then names). Set ``report`` as soon as the run has one::

        with Recording(parts.history, "nightly", context=...) as rec:
            rec.report = SyncReport(ledger=rec.ledger)
            ...

    ``want_ledger``: a ledger also without history (the CLI's ``--report``). ``run_id``: the id to keep the run
    under, chosen when it started (a resubmit names itself in its claim before it sends anything).
    """

    def __init__(self, history: RunHistory | None, kind: str, *, prune: bool = False, want_ledger: bool = False,
                 quiet: bool = False, context: dict[str, Any] | None = None, run_id: str | None = None):
        self.history = history
        self.kind = kind
        self.prune = prune
        self.quiet = quiet
        self.context = context or {}
        self.ledger: Ledger | None = Ledger() if history is not None or want_ledger else None
        self.report: SyncReport | None = None
        self.run_id: str | None = None
        self._chosen = run_id
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
            cause = why(error) if isinstance(error, Exception) else type(error).__name__
            report.add_storage_failure(Problem(Source.RUN, "*", None, f"the run ended with an error: {cause}"))
        if report.ended_at is None:
            report.finish()
        for key, value in self.context.items():
            report.context.setdefault(key, value)
        self.run_id = keep(self.history, report, self.ledger, kind=self.kind, prune=self.prune, quiet=self.quiet,
                           run_id=self._chosen)
        return self.run_id

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            self.keep_now(exc)
        finally:
            if self.ledger is not None:
                self.ledger.close()

