"""``index/latest``: the newest kept run's id, so ``latest`` costs one request however many runs a day keeps.

The run id is the blob's metadata (``run``), so one HEAD reads it. Every save moves it forward only: it reads
the pointer and writes its own run id if that is newer, conditionally on the ETag it read (or on there being
no pointer yet), and reads again when another save got there first. So concurrent runs leave the newest one,
whatever order they finish in. A save writes its report first and the pointer after, so the pointer never
names a run whose report was not written.

It is an index, not the truth: the reports are. A reader that finds it missing, damaged, or naming a run whose
report is gone (pruned, deleted by hand) falls back to listing the newest hour and repairs it, conditionally on
the ETag it read; ``runs`` (the listing) moves it forward when it lists a newer run (one kept by an older
version, or by a save that died between its report and the pointer).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .names import LATEST, is_run_id

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

log = logging.getLogger(__name__)

TRIES = 5  # conditional writes that lost the race to another save, before giving up (the next save moves it)


@dataclass(frozen=True, slots=True)
class Pointed:
    """What the pointer said when it was read: the run id (None: missing or damaged) and its ETag."""

    run_id: str | None
    etag: str | None


class LatestPointer:
    def __init__(self, client: ContainerClient):
        self.client = client
        self.blob = client.get_blob_client(LATEST)

    def read(self) -> Pointed:
        """The pointer as it is now. A pointer whose metadata is not a run id counts as missing."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self.blob.get_blob_properties()
        except ResourceNotFoundError:
            return Pointed(None, None)
        run_id = (props.metadata or {}).get("run", "")
        return Pointed(run_id if is_run_id(run_id) else None, props.etag)

    def advance(self, run_id: str, seen: Pointed | None = None) -> bool:
        """Point at ``run_id`` if it is newer than what the pointer names (``seen``: already read). Returns
        whether it was written. Raises the storage error of the last try."""
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        pointed = seen if seen is not None else self.read()
        for _ in range(TRIES):
            if pointed.run_id is not None and pointed.run_id >= run_id:
                return False
            try:
                self._write(run_id, pointed.etag)
                return True
            except (ResourceExistsError, ResourceModifiedError):
                pointed = self.read()  # another save moved it meanwhile: look again
        log.info("run history: %s not moved to %s after %d tries (other saves kept moving it)", LATEST, run_id, TRIES)
        return False

    def repair(self, run_id: str, seen: Pointed) -> bool:
        """Point at ``run_id`` (the newest run a listing found), backwards too, unless the pointer changed since
        ``seen`` was read (a save moved it: that one is newer). Never raises: a reader still has its answer."""
        from azure.core.exceptions import AzureError

        try:
            self._write(run_id, seen.etag)
            log.info("run history: %s repaired: it said %s, the newest kept run is %s", LATEST,
                     seen.run_id or "nothing", run_id)
            return True
        except AzureError as exc:
            log.debug("run history: %s not repaired (%s): another save moved it, or storage refused",
                      LATEST, type(exc).__name__)
            return False

    def _write(self, run_id: str, etag: str | None) -> None:
        from azure.core import MatchConditions

        if etag is None:  # no pointer yet: only if there still is none (If-None-Match: *)
            self.blob.upload_blob(b"", overwrite=False, metadata={"run": run_id})
        else:
            self.blob.upload_blob(b"", overwrite=True, metadata={"run": run_id}, etag=etag,
                                  match_condition=MatchConditions.IfNotModified)
