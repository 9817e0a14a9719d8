"""Leases a dead process cannot hold for long: product locks (``locks/<item>``) and full-sync fences
(``full-syncs/<id>``), renewed while held (see ``coordination``).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from .state import FENCES, LOCKS, SETTING, StateContainer, first_line, item_of, state_blob

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobLeaseClient

log = logging.getLogger(__name__)

# A fence blob last renewed this long ago is removed by the next full sync: longer than PRODUCT_RESEND_SECONDS may
# be (3600), so a crashed full sync is seen by product sends for as long as its requests may still land.
DEAD_FENCE_SECONDS = 3600.0
LEASE_GONE = frozenset({404, 409, 412})  # no such blob or container; lease broken, taken or not present


class _Lease:
    """A blob lease this process holds, renewed by a keeper thread: ``remaining()`` is how long it is
    certainly held (from when the last successful acquire or renewal was *sent*)."""

    def __init__(self, what: str, lease: BlobLeaseClient, seconds: float, sent: float):
        self.what = what
        self.lease = lease
        self.seconds = seconds
        self.renewed = sent
        self.lost = False
        self.inherited = False
        self.released = False  # set before the blob is deleted: a renewal racing the release is no loss

    def remaining(self) -> float:
        return 0.0 if self.lost else self.renewed + self.seconds - time.monotonic()

    def renew(self) -> bool:
        from azure.core.exceptions import HttpResponseError

        sent = time.monotonic()
        try:
            self.lease.renew()
        except HttpResponseError as exc:
            if self.released:
                return False
            if exc.status_code in LEASE_GONE:
                # Storage says the lease is gone (the container deleted, the lease broken or taken). Whoever sends
                # under it must stop now, and what it sent may have overlapped another sender.
                self.lost = True
                log.warning("lost %s in %s: %s", self.what, SETTING, first_line(exc))
                return False
            return self._unrenewed(exc)  # a 5xx, a throttle: like storage out of reach, the lease counts down
        except Exception as exc:  # noqa: BLE001 - storage unreachable: the lease lasts until it runs out
            return False if self.released else self._unrenewed(exc)
        self.renewed = sent
        return True

    def _unrenewed(self, exc: BaseException) -> bool:
        if self.remaining() <= 0:
            self.lost = True
        log.warning("could not renew %s in %s (%.0f s left): %s", self.what, SETTING, max(0.0, self.remaining()),
                    first_line(exc))
        return False


class ProductLocks:
    """Per-product leases, renewed by one keeper thread while held."""

    def __init__(self, state: StateContainer, seconds: int = 60):
        self.state = state
        self.seconds = seconds
        self._held: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self._keeper: threading.Thread | None = None

    def try_acquire(self, item: str) -> bool:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        blob = self.state.blob(state_blob(LOCKS, item))
        with self.state.failing(f"taking the lock of product {item!r}"):
            for attempt in range(3):
                sent = time.monotonic()
                try:
                    lease = blob.acquire_lease(lease_duration=self.seconds)
                except ResourceNotFoundError:
                    try:
                        self.state.create_empty(blob.blob_name)
                    except ResourceExistsError:
                        pass
                    continue
                except ResourceExistsError:  # LeaseAlreadyPresent: someone else sends this product now
                    return False
                held = _Lease(f"the lock of product {item!r}", lease, self.seconds, sent)
                held.inherited = attempt == 0 and self._left_behind(blob)
                with self._lock:
                    self._held[item] = held
                self._ensure_keeper()
                return True
        return False

    def _left_behind(self, blob: BlobClient) -> bool:
        """Whether a lock blob found in place (leased now by us) was left by a holder that never released it: it
        died, maybe with a request in flight. Such a blob is at least one lease old; one that another process has
        just created, racing us for the product, is not (half a lease allows for clock skew)."""
        try:
            created = blob.get_blob_properties().creation_time
        except Exception:  # noqa: BLE001 - unknown: assume the worst, which costs one more send later
            return True
        return created is None or (datetime.now(UTC) - created).total_seconds() > self.seconds / 2

    def inherited(self, item: str) -> bool:
        """Whether ``item``'s lock was left by a holder that never released it (crashed, maybe mid-request):
        what that holder sent may still land at TRAEDE after what this holder sends."""
        with self._lock:
            held = self._held.get(item)
        return held is not None and held.inherited

    def remaining(self, item: str) -> float:
        """Seconds for which this process certainly still holds ``item``'s lock (0 when lost)."""
        with self._lock:
            held = self._held.get(item)
        return 0.0 if held is None else held.remaining()

    def lost(self, item: str) -> bool:
        """Whether this process lost ``item``'s lock while it held it (another sender may have overlapped)."""
        with self._lock:
            held = self._held.get(item)
        return held is not None and held.lost

    def release(self, item: str) -> None:
        with self._lock:
            held = self._held.pop(item, None)
        if held is None or held.lost:
            return
        held.released = True  # the keeper may be renewing it right now, from a list taken before the pop
        try:
            self.state.blob(state_blob(LOCKS, item)).delete_blob(lease=held.lease)
        except Exception as exc:  # noqa: BLE001 - the lease runs out by itself; nothing to undo
            log.debug("releasing the lock of %r: %s", item, exc)

    def held_by_anyone(self) -> set[str]:
        """Products whose lock is leased right now, by any process."""
        with self.state.failing("listing the product locks"):
            return {item_of(b.name, LOCKS) for b in self.state.listing(LOCKS)
                    if getattr(b.lease, "state", None) == "leased"}

    def _ensure_keeper(self) -> None:
        with self._lock:
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep, name="product-locks", daemon=True)
                self._keeper.start()

    def _keep(self) -> None:
        interval = max(1.0, self.seconds / 6)
        while True:
            time.sleep(interval)
            with self._lock:
                held = list(self._held.values())
                if not held:
                    self._keeper = None  # decided under the lock: a new holder starts a new keeper
                    return
            for lease in held:
                lease.renew()  # a lost lease stops this product's sends (``remaining`` reads 0)


@dataclass(frozen=True)
class FenceInfo:
    """A full sync that holds a fence now, as another process sees it."""

    name: str
    run: str
    what: str
    host: str
    pid: str
    started: float   # epoch seconds
    renewed: float   # epoch seconds of the holder's last renewal (its metadata)

    def holder(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        started = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return (f"{self.what}, run {self.run} on host {self.host} (pid {self.pid}), started {started}, "
                f"last renewed {max(0.0, now - self.renewed):.0f} s ago")


class FullSyncFence:
    """A full-sync unit's fence: raised on ``open``, its lease renewed by a thread, removed on ``close``."""

    def __init__(self, state: StateContainer, run: str, what: str, seconds: int = 60):
        self.state = state
        self.run = run
        self.what = what
        self.seconds = seconds
        self.started = time.time()
        self.name = f"{FENCES}{int(self.started * 1000):014d}-{uuid.uuid4().hex[:8]}"
        self._lease: _Lease | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _metadata(self) -> dict[str, str]:
        return {"run": quote(self.run, safe=""), "what": quote(self.what, safe=""),
                "host": quote(socket.gethostname(), safe=""), "pid": str(os.getpid()),
                "started": f"{self.started:.0f}", "renewed": f"{time.time():.0f}"}

    def open(self) -> FullSyncFence:
        with self.state.failing(f"raising the full-sync fence of {self.what}"):
            self.state.create_empty(self.name, self._metadata())
            sent = time.monotonic()
            self._lease = _Lease(f"the full-sync fence {self.name}",
                                 self.state.blob(self.name).acquire_lease(lease_duration=self.seconds),
                                 self.seconds, sent)
        self._thread = threading.Thread(target=self._keep, name="full-sync-fence", daemon=True)
        self._thread.start()
        return self

    def remaining(self) -> float:
        """Seconds for which this fence certainly still stands (0 once closed or lost): the full sync sends
        a product set to TRAEDE only while it does (``http`` cuts an attempt that would outlive it)."""
        lease = self._lease
        return 0.0 if lease is None or self._stop.is_set() else lease.remaining()

    def _keep(self) -> None:
        lease = self._lease
        while lease is not None and not self._stop.wait(max(1.0, self.seconds / 4)):
            if lease.renew():
                try:
                    self.state.blob(self.name).set_blob_metadata(self._metadata(), lease=lease.lease)
                except Exception as exc:  # noqa: BLE001 - only "last renewed" goes stale
                    log.debug("could not note the renewal of %s: %s", self.name, exc)

    def close(self) -> None:
        self._stop.set()
        lease = self._lease
        if lease is None or lease.lost:
            return
        try:
            self.state.blob(self.name).delete_blob(lease=lease.lease)
        except Exception as exc:  # noqa: BLE001 - its lease runs out by itself
            log.warning("could not remove the full-sync fence %s (its lease runs out within %d s): %s",
                        self.name, self.seconds, first_line(exc))


class FullSyncFences:
    def __init__(self, state: StateContainer, seconds: int = 60):
        self.state = state
        self.seconds = seconds

    def active(self) -> list[FenceInfo]:
        """The fences whose lease is held now, oldest first."""
        return self.look()[0]

    def look(self, crashed_within: float = 0.0) -> tuple[list[FenceInfo], list[FenceInfo]]:
        """``(active, crashed)`` in one listing: the fences held now, oldest first, and those whose holder
        died without closing them (a closed fence is deleted) and renewed them less than ``crashed_within``
        seconds ago: requests such a full sync had in flight may still land at TRAEDE."""
        with self.state.failing("listing the full-sync fences"):
            blobs = self.state.listing(FENCES, metadata=True)
        active, crashed = [], []
        now = time.time()
        for b in blobs:
            meta = b.metadata or {}
            created = _number(b.name[len(FENCES):].split("-", 1)[0]) / 1000
            fence = FenceInfo(b.name, unquote(meta.get("run", "")), unquote(meta.get("what", "")),
                              unquote(meta.get("host", "?")), meta.get("pid", "?"),
                              _number(meta.get("started")) or created, _number(meta.get("renewed")) or created)
            if getattr(b.lease, "state", None) == "leased":
                active.append(fence)
            elif now - fence.renewed < crashed_within:
                crashed.append(fence)
        return sorted(active, key=lambda f: f.name), crashed

    def open(self, run: str, what: str) -> FullSyncFence:
        self._sweep()
        return FullSyncFence(self.state, run, what, self.seconds).open()

    def older_than(self, fence: FullSyncFence) -> list[FenceInfo]:
        """Fences of other runs raised before ``fence``: full syncs this one must wait for."""
        return [f for f in self.active() if f.run != fence.run and f.name < fence.name]

    def _sweep(self) -> None:
        """Remove fences of crashed syncs, long lapsed (best effort: a leased one cannot be deleted)."""
        try:
            _active, recent = self.look(crashed_within=DEAD_FENCE_SECONDS)
            keep = {f.name for f in recent}
            for b in self.state.listing(FENCES):
                if getattr(b.lease, "state", None) != "leased" and b.name not in keep:
                    self.state.blob(b.name).delete_blob()
        except Exception as exc:  # noqa: BLE001 - a lapsed fence blocks nobody; it only takes space
            log.debug("sweeping lapsed fences: %s", exc)


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0

