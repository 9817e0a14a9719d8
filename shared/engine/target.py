"""What the engine sends to: a partner's lane, as the engine and its lanes see it.

``WallieClient``, ``TraedeClient`` and the CLI's dry-run printer all satisfy ``Target``: the engine never asks
a client anything this protocol does not say (no ``getattr`` for what a target may or may not have).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..domain import Partner
from ..partners.http import Answer

Guard = Callable[[], float]  # seconds for which the lock or fence that makes a send safe certainly holds


class Target(Protocol):
    """A partner as the engine sees it."""

    name: Partner
    batch_size: int  # records a request carries at most (TRAEDE: 10 products)

    def send(self, payloads: list[dict[str, Any]], guard: Guard | None = None) -> Answer | None:
        """Deliver one batch or raise ``PartnerError``; the answer says whether an earlier attempt's outcome
        stayed unknown (None: nothing to say, e.g. the dry run)."""

    def stats(self) -> dict[str, int]:
        """Requests and retries so far (``requests``, ``retries``)."""

    def abort(self) -> None:
        """Cut the requests in flight (a stopping run whose grace period is over); a no-op where none are."""

    def close(self) -> None:
        """Release connections."""
