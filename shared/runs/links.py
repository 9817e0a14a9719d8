"""Which run resubmitted which: one claim per resubmitted run, so that a run is resubmitted once.

``resubmits/YYYY/MM/DD/<run-id>`` (under the day of the resubmitted run, so it expires with it) is created by a
resubmit before it sends anything, and only if it does not exist yet (``If-None-Match: *``): of two resubmits of
one run (a double click, two operators at once) exactly one creates it and sends; the other is told which run
resubmits it. Its metadata:

``by``     the resubmits' run ids, oldest first (comma-separated); the last one is the current one
``state``  ``running`` until that resubmit's run is kept, then ``done``
``since``  when the current one started (ISO 8601, UTC)
``via``    what started it: ``cli`` or ``http``

The resubmit's own report names the runs it resubmits (``resubmits``), so ``runs show`` of either names the
other. A resubmit that died while running (its process killed) leaves a ``running`` claim: after
``STALE_AFTER`` another resubmit may take it over (conditionally on its ETag, so only one does);
``runs resubmit --again`` resubmits a run again at any time and adds itself to ``by``. A resubmit that ended with
an error before its work was done (storage failed, a full sync held on too long, its report not kept) gives its
claim back: the claim it replaced is put back as it was (a finished one), or the claim is removed (none, or a
dead resubmit's).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from .names import RESUBMITS, day_of, is_run_id, run_time

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

    from .history import RunHistory

log = logging.getLogger(__name__)

RUNNING, DONE = "running", "done"
STALE_AFTER = timedelta(hours=1)  # a claim still "running" after this: its resubmit died (a function ends sooner)
KEPT_LINKS = 20                   # a run resubmitted again and again names its last 20 resubmits


@dataclass(frozen=True, slots=True)
class Claim:
    """A resubmitted run's claim, as read (or as written by this process)."""

    run_id: str               # the resubmitted run
    by: tuple[str, ...]       # its resubmits, oldest first
    state: str
    since: datetime
    via: str
    etag: str
    prior: Claim | None = None  # the claim this one replaced (taken over or resubmitted again): put back on give-back

    @property
    def latest(self) -> str:
        return self.by[-1]

    def stale(self, now: datetime) -> bool:
        return self.state == RUNNING and now - self.since > STALE_AFTER

    def describe(self) -> str:
        """One phrase: who resubmitted the run, and whether it has finished."""
        earlier = f" (after {', '.join(self.by[:-1])})" if len(self.by) > 1 else ""
        state = "finished" if self.state == DONE else f"still running since {self.since:%Y-%m-%d %H:%M:%S}Z"
        return f"resubmitted by {self.latest}{earlier} via {self.via}, {state}"


def claim_name(run_id: str) -> str:
    return f"{RESUBMITS}{day_of(run_time(run_id))}/{run_id}"


class Links:
    """The claims of one run history container."""

    def __init__(self, history: RunHistory):
        self.history = history

    def _blob(self, run_id: str) -> BlobClient:
        return self.history.client.get_blob_client(claim_name(run_id))

    def get(self, run_id: str) -> Claim | None:
        """The run's claim, or None (never resubmitted, or a claim that is not one this app wrote)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._blob(run_id).get_blob_properties()
        except ResourceNotFoundError:
            return None
        meta = props.metadata or {}
        by = tuple(r for r in (meta.get("by") or "").split(",") if is_run_id(r))
        if not by:
            return None
        try:
            since = datetime.fromisoformat(meta.get("since") or "").astimezone(UTC)
        except ValueError:
            since = run_time(by[-1])
        state = DONE if meta.get("state") == DONE else RUNNING
        return Claim(run_id, by, state, since, meta.get("via") or "?", str(props.etag))

    def claim(self, run_id: str, by: str, *, via: str, again: bool = False,
              now: datetime | None = None) -> tuple[Claim | None, Claim | None]:
        """Claim ``run_id`` for the resubmit ``by``: ``(ours, None)`` when this resubmit holds the claim now,
        ``(None, theirs)`` when another resubmit does (or did: a finished one, unless ``again``). A claim still
        running after STALE_AFTER is taken over."""
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        now = now or datetime.now(UTC)
        for _ in range(3):
            existing = None
            try:
                return self._write(run_id, (by,), RUNNING, now, via, None), None
            except ResourceExistsError:
                existing = self.get(run_id)
            if existing is None:
                foreign = self._foreign(run_id)
                if foreign is not None:  # a blob that is no claim of ours (written by hand?): replace it
                    try:
                        return self._write(run_id, (by,), RUNNING, now, via, foreign), None
                    except (ResourceModifiedError, ResourceNotFoundError):
                        pass
                continue  # given back (deleted) meanwhile: try to create it again
            if existing.latest == by:  # our own create, retried after its answer was lost
                return existing, None
            if not (again or existing.stale(now)):
                return None, existing
            if existing.stale(now) and not again:
                log.warning("resubmit of %s: the claim of %s has been running since %s: taking it over", run_id,
                            existing.latest, f"{existing.since:%Y-%m-%d %H:%M:%S}Z")
            try:
                chain = (*existing.by, by)[-KEPT_LINKS:]
                return self._write(run_id, chain, RUNNING, now, via, existing.etag, prior=existing), None
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # another resubmit changed it first: look again
        theirs = self.get(run_id)
        return None, theirs

    def finish(self, claim: Claim) -> None:
        """The resubmit's run is kept: the claim says so (best effort: a claim left running expires)."""
        self._end(claim, give_back=False)

    def give_back(self, claim: Claim) -> None:
        """The resubmit ended before its work was done: the run may be resubmitted again at once."""
        self._end(claim, give_back=True)

    def _end(self, claim: Claim, *, give_back: bool) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError

        try:
            current = self.get(claim.run_id)
            if current is None or current.latest != claim.latest:
                return  # taken over meanwhile: it is the other resubmit's now
            blob = self._blob(claim.run_id)
            prior = claim.prior
            if give_back and prior is not None and not prior.stale(datetime.now(UTC)):
                # resubmitted again (--again) over a finished claim: put that one back as it was
                self._write(claim.run_id, prior.by, prior.state, prior.since, prior.via, current.etag)
            elif give_back:  # nobody had it, or a resubmit that died: it may be resubmitted again at once
                blob.delete_blob(etag=current.etag, match_condition=MatchConditions.IfNotModified)
            else:
                self._write(claim.run_id, current.by, DONE, current.since, current.via, current.etag)
        except AzureError as exc:
            log.warning("resubmit of %s: its claim %s was not %s (%s)", claim.run_id, claim_name(claim.run_id),
                        "given back" if give_back else "marked done", type(exc).__name__)

    def _foreign(self, run_id: str) -> str | None:
        """The ETag of a blob in the claim's place that is no claim this app wrote (None: none there)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._blob(run_id).get_blob_properties()
        except ResourceNotFoundError:
            return None
        by = [r for r in ((props.metadata or {}).get("by") or "").split(",") if is_run_id(r)]
        return None if by else str(props.etag)

    def _write(self, run_id: str, by: tuple[str, ...], state: str, since: datetime, via: str,
               etag: str | None, *, prior: Claim | None = None) -> Claim:
        """Create the claim (``etag`` None: only if there is none) or replace it if it is still as read."""
        from azure.core import MatchConditions

        blob = self._blob(run_id)
        meta = {"by": ",".join(by), "state": state, "since": since.astimezone(UTC).isoformat(timespec="seconds"),
                "via": via}
        if etag is None:
            answer = blob.upload_blob(b"", overwrite=False, metadata=meta)  # If-None-Match: *
        else:
            answer = blob.upload_blob(b"", overwrite=True, metadata=meta, etag=etag,
                                      match_condition=MatchConditions.IfNotModified)
        return Claim(run_id, by, state, since, via, str(answer.get("etag")), prior)
