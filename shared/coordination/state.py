"""Coordination across threads, processes and Function instances, kept where the work is shared: in
Azure Storage (the ``SYNC_STATE_CONTAINER`` on the images account).

TRAEDE replaces a product's whole image set with each request, so two sends of one product must never
overlap, and each must list the product after the previous send of it finished. Four kinds of blob:

``pending/<item>``
    A mark: "this product changed and waits for a send". The upload or delete that creates it enqueues
    one product message carrying the mark's generation (``gen``: one more than the last settled one, so a
    product's generations only grow); later changes only *bump* it (a conditional metadata write). Whoever
    sends the product reads the mark before listing and deletes it only if its ETag still holds, so a change
    that lands during a send is never lost: the mark survives and the product is sent again.
``settled/<item>``
    Written just before a mark is deleted after its send: the generation that was settled. A product message
    whose mark is gone is dropped only when this proves that its mark, or a newer one, was settled by a send
    that listed the product after the message was queued; otherwise (the container was deleted or emptied
    meanwhile, and generations start again from 1) the product is sent anyway: an extra complete set is
    harmless, a lost one is not.
``locks/<item>``
    Leased by whoever sends that product; renewed while held and deleted on release. A crashed holder
    blocks the product for at most ``PRODUCT_LOCK_SECONDS`` (the lease runs out).
``full-syncs/<id>``
    One per full-sync unit (the timer, a shard, the CLI) while it runs: a blob leased for
    ``FULL_SYNC_FENCE_SECONDS`` and renewed while the sync runs, with its holder in the metadata (run, host,
    pid, when it started and was last renewed). A crashed full sync's fence lapses within that time: no
    clock of any instance decides it, the lease does. Product sends take their lock first, then look for
    fences, and wait while one is up; a full sync raises its fence first, then notes which product locks are
    held, and leaves those products to their holders. Either way one of the two sees the other (both act
    on strongly consistent storage).

Every failure to read or write the container is a ``StateError`` that names ``SYNC_STATE_CONTAINER`` and
what to check. A missing container is created again by the first write.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from ..errors import StateError

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobProperties, BlobServiceClient

log = logging.getLogger(__name__)


PENDING, SETTLED, LOCKS, FENCES = "pending/", "settled/", "locks/", "full-syncs/"


SETTING = "SYNC_STATE_CONTAINER"


def state_blob(prefix: str, item: str) -> str:
    return prefix + quote(item, safe="")


def item_of(name: str, prefix: str) -> str:
    return unquote(name[len(prefix):])


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


class StateContainer:
    """The state container, created on first write when it is missing (the deploy creates it in Azure)."""

    def __init__(self, service: BlobServiceClient, name: str):
        self.client = service.get_container_client(name)
        self.name = name

    @contextmanager
    def failing(self, what: str) -> Iterator[None]:
        """Turn a storage error into a ``StateError`` naming the setting and what to check."""
        from azure.core.exceptions import AzureError

        try:
            yield
        except AzureError as exc:
            code = getattr(exc, "error_code", None) or type(exc).__name__
            where = self.client.url.split("?")[0]
            if str(code) in ("ContainerBeingDeleted", "StorageErrorCode.CONTAINER_BEING_DELETED"):
                hint = ("the container was deleted moments ago and Azure lets it be created again only after "
                        "about 30 s; the work is retried")
            else:
                hint = ("check that storage can be reached (IMAGES_STORAGE) and that the app may create the "
                        "container and write blobs in it ('Storage Blob Data Contributor')")
            raise StateError(f"{SETTING} {self.name!r} ({where}): {what} failed ({code}: {first_line(exc)}): "
                             f"{hint}") from exc

    def call(self, operation: Callable[[], Any]) -> Any:
        """Run a write; if the container is missing, create it (idempotent) and run it once more."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        try:
            return operation()
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) != "ContainerNotFound":
                raise
        # Expected on a first run; a container deleted later is told by the messages it strands (``_still_due``).
        log.debug("%s %r did not exist: creating it", SETTING, self.name)
        try:
            self.client.create_container()
        except ResourceExistsError:
            pass  # created by someone else meanwhile (or being deleted: the retry below says so)
        return operation()

    def blob(self, name: str) -> BlobClient:
        return self.client.get_blob_client(name)

    def listing(self, prefix: str, *, metadata: bool = False) -> list[BlobProperties]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return list(self.client.list_blobs(name_starts_with=prefix, include=["metadata"] if metadata else None))
        except ResourceNotFoundError:
            return []  # no container yet: nothing is pending, locked or fenced

    def create_empty(self, name: str, metadata: dict[str, str] | None = None) -> None:
        """Create a 0-byte blob; ``ResourceExistsError`` when it exists (If-None-Match: *)."""
        self.call(lambda: self.blob(name).upload_blob(b"", overwrite=False, metadata=metadata))

