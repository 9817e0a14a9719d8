"""Pending marks: which products changed and wait for a send, and which generation of a mark was settled
(``pending/<item>``, ``settled/<item>``; see ``coordination``).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .state import PENDING, SETTING, SETTLED, StateContainer, first_line, item_of, state_blob

if TYPE_CHECKING:
    from azure.storage.blob import BlobProperties

log = logging.getLogger(__name__)

MARK_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class Mark:
    """A pending mark as read before a send: its ETag (to delete it only if unchanged), its generation (which
    product messages carry) and its age."""

    etag: str
    gen: int  # 0: unknown (a mark written before generations existed)
    age: float


@dataclass(frozen=True, slots=True)
class Requested:
    """A mark the caller must queue a message for: its generation (0: unknown, so its message is never taken for
    settled), and the ETag when this call created it."""

    gen: int
    created_etag: str | None


def _gen(metadata: dict[str, str] | None) -> int:
    value = (metadata or {}).get("gen", "")
    return int(value) if value.isdigit() else 0


def _mark(props: BlobProperties, now: datetime | None = None) -> Mark:
    created = props.creation_time
    age = ((now or datetime.now(UTC)) - created).total_seconds() if created else 0.0
    return Mark(props.etag, _gen(props.metadata), age)


class PendingMarks:
    """Which products changed and wait for a send (see the module docstring)."""

    def __init__(self, state: StateContainer):
        self.state = state

    def request(self, item: str, *, stale_after: float = float("inf")) -> Requested | None:
        """Mark ``item`` as changed. Returns the mark's generation when the caller must enqueue a message:
        this call made it pending, or it has been pending for over ``stale_after`` seconds (its message may
        have died with a crashed instance; one more message costs at most one more send). None when it was
        already pending: its message is on its way, and the bump tells a send under way that its listing is
        stale."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        blob = self.state.blob(state_blob(PENDING, item))
        with self.state.failing(f"marking product {item!r} pending"):
            for _ in range(MARK_ATTEMPTS):
                # Most calls of a burst find the mark in place: look first (a bump costs two requests). Only a
                # call that creates it reads the settled generation, after it saw the mark gone: a send clears a
                # mark after noting it settled, so the new mark's generation is always higher.
                try:
                    props = blob.get_blob_properties()
                except ResourceNotFoundError:
                    gen = (self._settled(item) or 0) + 1
                    try:
                        metadata = {"gen": str(gen)}
                        created = self.state.call(lambda: blob.upload_blob(b"", overwrite=False,  # If-None-Match: *
                                                                           metadata=metadata))  # noqa: B023
                        return Requested(gen, created.get("etag"))
                    except ResourceExistsError:
                        continue  # another call created it meanwhile: bump that one
                try:
                    blob.set_blob_metadata({**(props.metadata or {}), "changed": f"{time.time():.3f}"},
                                           etag=props.etag, match_condition=MatchConditions.IfNotModified)
                except (ResourceNotFoundError, ResourceModifiedError):
                    # Either somebody else bumped it after we read it (which changed it after our blob was
                    # written: as good as our own bump), or a send cleared it (then it must be created anew).
                    if self.read(item) is None:
                        continue
                mark = _mark(props)
                return Requested(mark.gen, None) if mark.age > stale_after else None
            # Heavy contention: one more message costs at most one more send; without a generation (0) it is
            # never taken for settled.
            return Requested(0, None)

    def withdraw(self, item: str, requested: Requested) -> None:
        """Undo a mark this process just created and could not queue a message for (the host retries the
        invocation, which marks and queues again): only if nobody bumped it since, and noting nothing settled."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        if requested.created_etag is None:
            return  # not ours: its own message is on its way, or the stale rescue queues one
        with self.state.failing(f"withdrawing the pending mark of product {item!r}"):
            try:
                self.state.blob(state_blob(PENDING, item)).delete_blob(
                    etag=requested.created_etag, match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceNotFoundError):
                pass  # bumped meanwhile: it stays, and its next change after the stale time queues a message

    def read(self, item: str) -> Mark | None:
        from azure.core.exceptions import ResourceNotFoundError

        with self.state.failing(f"reading the pending mark of product {item!r}"):
            try:
                return _mark(self.state.blob(state_blob(PENDING, item)).get_blob_properties())
            except ResourceNotFoundError:
                return None

    def clear(self, item: str, mark: Mark) -> bool:
        """Note the mark's generation as settled and delete the mark if nobody bumped it since ``mark`` was
        read: True when the product is settled, False when it changed again (it stays pending). The note
        comes first, so a new mark, made once this one is gone, always gets a higher generation."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError

        if mark.gen:
            try:
                self.state.call(lambda: self.state.blob(state_blob(SETTLED, item)).upload_blob(
                    b"", overwrite=True, metadata={"gen": str(mark.gen)}))
            except AzureError as exc:  # its message then sends the product once more: harmless
                log.warning("could not note product %r as settled in %s: %s", item, SETTING, first_line(exc))
        with self.state.failing(f"clearing the pending mark of product {item!r}"):
            try:
                self.state.blob(state_blob(PENDING, item)).delete_blob(etag=mark.etag,
                                                                  match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceNotFoundError):
                # Bumped (a change landed during the send), or gone although nobody settled it (the container was
                # deleted meanwhile, and with it any bump): either way the product goes once more.
                return False
        return True

    def settled(self, item: str) -> int | None:
        """The generation of the product's mark last settled, if the container still knows it."""
        with self.state.failing(f"reading whether product {item!r} was settled"):
            return self._settled(item)

    def _settled(self, item: str) -> int | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            metadata = self.state.blob(state_blob(SETTLED, item)).get_blob_properties().metadata
        except ResourceNotFoundError:
            return None
        return _gen(metadata) or None

    def snapshot(self) -> dict[str, Mark]:
        """Every pending product and its mark."""
        now = datetime.now(UTC)
        with self.state.failing("listing the pending products"):
            return {item_of(b.name, PENDING): _mark(b, now) for b in self.state.listing(PENDING, metadata=True)}

    def due(self, after_seconds: float, limit: int, exclude: Iterable[str] = (), *, scan: int = 1000) -> list[str]:
        """Up to ``limit`` products pending for at least ``after_seconds`` (their burst had its time),
        looking at no more than ``scan`` marks: a message must not cost a walk over a huge backlog."""
        from azure.core.exceptions import ResourceNotFoundError

        skip, found = set(exclude), list[str]()
        now = datetime.now(UTC)
        with self.state.failing("listing the pending products"):
            try:
                for n, b in enumerate(self.state.client.list_blobs(name_starts_with=PENDING, results_per_page=200)):
                    if n >= scan or len(found) >= limit:
                        break
                    item = item_of(b.name, PENDING)
                    if item not in skip and b.creation_time and \
                            (now - b.creation_time).total_seconds() >= after_seconds:
                        found.append(item)
            except ResourceNotFoundError:
                return []
        return found

