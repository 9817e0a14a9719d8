"""The state container (``SYNC_STATE_CONTAINER``): created on first write, and every failure of it named.
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


def being_deleted(exc: BaseException) -> bool:
    """Azure answers 409 ContainerBeingDeleted for a while after a container was deleted."""
    return "beingdeleted" in str(getattr(exc, "error_code", "")).lower().replace("_", "")


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
            if being_deleted(exc):
                hint = ("the container was deleted moments ago and Azure lets it be created again only after "
                        "about 30 s; the work is retried")
            else:
                hint = ("check that storage can be reached (IMAGES_STORAGE) and that the app may create the "
                        "container and write blobs in it ('Storage Blob Data Contributor')")
            raise StateError(f"{SETTING} {self.name!r} ({where}): {what} failed ({code}: {first_line(exc)}): "
                             f"{hint}", being_deleted=being_deleted(exc)) from exc

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
        except ResourceExistsError as exc:
            if being_deleted(exc):
                raise  # named by ``failing``: Azure lets it be created again only in a while
            # else: created by someone else meanwhile
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

