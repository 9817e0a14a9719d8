"""The words every floor of the package shares: who is sent what, and what became of it.

The ground floor: it imports nothing, so any module may use these names without importing a partner's client
(``Partner.TRAEDE``, not "the tally whose unit is products"), and a typo is a type error, not a silent miss.
``StrEnum`` members are their strings: they compare equal to, print as and serialise as ``"traede"``,
``"not sent"``..., so reports and kept runs read the same as before.
"""
from __future__ import annotations

from enum import StrEnum


class Partner(StrEnum):
    """A partner platform the app sends to."""

    WALLIE = "wallie"
    TRAEDE = "traede"

    @property
    def unit(self) -> str:
        """What one record is: Wallie gets one per image, TRAEDE one per product (its complete set)."""
        return "images" if self is Partner.WALLIE else "products"

    @property
    def base_url_setting(self) -> str:
        return f"{self.name}_BASE_URL"


class Source(StrEnum):
    """Where a problem that is no partner's comes from."""

    STORAGE = "storage"  # the listing (and the skipped blobs of a product, in the run history)
    RUN = "run"          # the run itself ended with an error


Where = Partner | Source


class Outcome(StrEnum):
    """What became of a record (a Wallie image, a TRAEDE product) in a run, worst first (``worst``)."""

    FAILED = "failed"
    REJECTED = "rejected"
    NOT_SENT = "not sent"
    DEFERRED = "deferred"
    SKIPPED = "skipped"
    QUEUED = "queued"
    DELIVERED = "delivered"

    @property
    def is_problem(self) -> bool:
        """Shown in red: the record did not reach the partner and will not without a later run."""
        return self in (Outcome.FAILED, Outcome.REJECTED, Outcome.NOT_SENT)

    @property
    def answered(self) -> bool:
        """The partner gave its verdict on the record (a retry with the same record changes nothing)."""
        return self in (Outcome.DELIVERED, Outcome.REJECTED)

