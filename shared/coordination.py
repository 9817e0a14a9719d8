"""Coordination across threads, processes and Function instances, kept where the work is shared: in
Azure Storage (the ``SYNC_STATE_CONTAINER`` on the images account).

TRAEDE replaces a product's whole image set with each request, so two sends of one product must never
overlap, and each must list the product after the previous send of it finished. Three kinds of blob:

``pending/<item>``
    A mark: "this product changed and waits for a send". The upload or delete that creates it enqueues
    one product message; later changes only *bump* it (a conditional metadata write). Whoever sends the
    product reads the mark's ETag before listing and deletes the mark only if that ETag still holds, so a
    change that lands during a send is never lost: the mark survives and the product is sent again.
``locks/<item>``
    Leased by whoever sends that product; renewed while held and deleted on release. A crashed holder
    blocks the product for at most ``PRODUCT_LOCK_SECONDS`` (the lease runs out). A send never starts an
    HTTP attempt that could outlive the lease (``ProductLocks.remaining``).
``full-syncs/<id>``
    One per full-sync unit (the timer, a shard, the CLI) while it runs, with an expiry it keeps moving.
    Product sends take their lock first, then look for fences, and wait while one is up; a full sync
    raises its fence first, then notes which product locks are held, and leaves those products to their
    holders. Either way one of the two sees the other (both act on strongly consistent storage).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any
from collections.abc import Callable, Iterable
from urllib.parse import quote, unquote

log = logging.getLogger(__name__)

PENDING, LOCKS, FENCES = "pending/", "locks/", "full-syncs/"
MARK_ATTEMPTS = 8
FENCE_TTL_SECONDS = 900.0  # longer than any single invocation (functionTimeout is 10 minutes)
FENCE_REFRESH_SECONDS = 60.0


def _name(prefix: str, item: str) -> str:
    return prefix + quote(item, safe="")


def _item(name: str, prefix: str) -> str:
    return unquote(name[len(prefix):])


class StateContainer:
    """The state container, created on first use when it is missing (the deploy creates it in Azure)."""

    def __init__(self, service: Any, name: str):
        self.client = service.get_container_client(name)
        self.name = name

    def call(self, operation: Callable[[], Any]) -> Any:
        """Run a write; if the container is missing, create it (idempotent) and run it once more."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        try:
            return operation()
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) != "ContainerNotFound":
                raise
        try:
            self.client.create_container()
        except ResourceExistsError:
            pass
        return operation()

    def blob(self, name: str) -> Any:
        return self.client.get_blob_client(name)

    def listing(self, prefix: str, *, metadata: bool = False) -> list[Any]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return list(self.client.list_blobs(name_starts_with=prefix, include=["metadata"] if metadata else None))
        except ResourceNotFoundError:
            return []  # no container yet: nothing is pending, locked or fenced

    def create_empty(self, name: str, metadata: dict[str, str] | None = None) -> None:
        """Create a 0-byte blob; ``ResourceExistsError`` when it exists (If-None-Match: *)."""
        self.call(lambda: self.blob(name).upload_blob(b"", overwrite=False, metadata=metadata))


class PendingMarks:
    """Which products changed and wait for a send (see the module docstring)."""

    def __init__(self, state: StateContainer):
        self.state = state

    def request(self, item: str, *, stale_after: float = float("inf")) -> bool:
        """Mark ``item`` as changed. True when the caller must enqueue a message: this call made it pending,
        or it has been pending for over ``stale_after`` seconds (its message may have died with a crashed
        instance; one more message costs at most one more send). False when it was already pending: its
        message is on its way, and the bump tells a send under way that its listing is stale."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        blob = self.state.blob(_name(PENDING, item))
        for _ in range(MARK_ATTEMPTS):
            try:
                self.state.create_empty(blob.blob_name)
                return True
            except ResourceExistsError:
                pass
            try:
                props = blob.get_blob_properties()
            except ResourceNotFoundError:
                continue  # cleared meanwhile: create it
            try:
                blob.set_blob_metadata({"changed": f"{time.time():.3f}"}, etag=props.etag,
                                       match_condition=MatchConditions.IfNotModified)
            except (ResourceNotFoundError, ResourceModifiedError):
                # Either somebody else bumped it after we read it (which changed it after our blob was
                # written: as good as our own bump), or a send cleared it (then it must be created anew).
                if self.etag(item) is None:
                    continue
            created = props.creation_time
            return created is not None and (datetime.now(UTC) - created).total_seconds() > stale_after
        return True  # heavy contention: one more message costs at most one more send

    def etag(self, item: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            etag: str = self.state.blob(_name(PENDING, item)).get_blob_properties().etag
            return etag
        except ResourceNotFoundError:
            return None

    def clear(self, item: str, etag: str) -> bool:
        """Delete the mark if nobody bumped it since ``etag`` was read: True when the product is settled,
        False when it changed again (it stays pending)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            self.state.blob(_name(PENDING, item)).delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError:
            return False
        except ResourceNotFoundError:
            pass
        return True

    def snapshot(self) -> dict[str, tuple[str, float]]:
        """Every pending product: ``{item: (etag, seconds since it became pending)}``."""
        now = datetime.now(UTC)
        return {_item(b.name, PENDING): (b.etag, (now - b.creation_time).total_seconds() if b.creation_time else 0.0)
                for b in self.state.listing(PENDING)}

    def due(self, after_seconds: float, limit: int, exclude: Iterable[str] = (), *, scan: int = 1000) -> list[str]:
        """Up to ``limit`` products pending for at least ``after_seconds`` (their burst had its time),
        looking at no more than ``scan`` marks: a message must not cost a walk over a huge backlog."""
        from azure.core.exceptions import ResourceNotFoundError

        skip, found = set(exclude), list[str]()
        now = datetime.now(UTC)
        try:
            for n, b in enumerate(self.state.client.list_blobs(name_starts_with=PENDING, results_per_page=200)):
                if n >= scan or len(found) >= limit:
                    break
                item = _item(b.name, PENDING)
                if item not in skip and b.creation_time and (now - b.creation_time).total_seconds() >= after_seconds:
                    found.append(item)
        except ResourceNotFoundError:
            return []
        return found


@dataclass
class _Held:
    lease: Any
    renewed: float  # monotonic time the last acquire/renew was *sent*: the lease lasts at least that long
    lost: bool = False


class ProductLocks:
    """Per-product leases, renewed by one keeper thread while held."""

    def __init__(self, state: StateContainer, seconds: int = 60):
        self.state = state
        self.seconds = seconds
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._keeper: threading.Thread | None = None

    def try_acquire(self, item: str) -> bool:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        blob = self.state.blob(_name(LOCKS, item))
        for _ in range(3):
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
            with self._lock:
                self._held[item] = _Held(lease, sent)
            self._ensure_keeper()
            return True
        return False

    def remaining(self, item: str) -> float:
        """Seconds for which this process certainly still holds ``item``'s lock (0 when lost)."""
        with self._lock:
            held = self._held.get(item)
        if held is None or held.lost:
            return 0.0
        return held.renewed + self.seconds - time.monotonic()

    def release(self, item: str) -> None:
        with self._lock:
            held = self._held.pop(item, None)
        if held is None or held.lost:
            return
        try:
            self.state.blob(_name(LOCKS, item)).delete_blob(lease=held.lease)
        except Exception as exc:  # noqa: BLE001 - the lease runs out by itself; nothing to undo
            log.debug("releasing the lock of %r: %s", item, exc)

    def held_by_anyone(self) -> set[str]:
        """Products whose lock is leased right now, by any process."""
        return {_item(b.name, LOCKS) for b in self.state.listing(LOCKS)
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
                held = list(self._held.items())
                if not held:
                    self._keeper = None  # decided under the lock: a new holder starts a new keeper
                    return
            for item, h in held:
                sent = time.monotonic()
                try:
                    h.lease.renew()
                    h.renewed = sent
                except Exception as exc:  # noqa: BLE001 - a lost lease stops this product's sends
                    if time.monotonic() - h.renewed >= self.seconds:
                        h.lost = True
                    log.warning("could not renew the lock of product %r: %s", item, exc)


@dataclass(frozen=True)
class FenceInfo:
    name: str
    run: str
    what: str
    created: float
    expires: float


class FullSyncFence:
    """A full-sync unit's fence: raised on ``open``, kept fresh by a thread, removed on ``close``."""

    def __init__(self, state: StateContainer, run: str, what: str):
        self.state = state
        self.run = run
        self.what = what
        self.name = f"{FENCES}{int(time.time() * 1000):014d}-{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _metadata(self) -> dict[str, str]:
        return {"run": quote(self.run, safe=""), "what": quote(self.what, safe=""),
                "expires": f"{time.time() + FENCE_TTL_SECONDS:.0f}"}

    def open(self) -> FullSyncFence:
        self.state.create_empty(self.name, self._metadata())
        self._thread = threading.Thread(target=self._refresh, name="full-sync-fence", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(FENCE_REFRESH_SECONDS):
            try:
                self.state.blob(self.name).set_blob_metadata(self._metadata())
            except Exception as exc:  # noqa: BLE001 - it expires later; product sends wait a bit longer
                log.warning("could not refresh the full-sync fence %s: %s", self.name, exc)

    def close(self) -> None:
        self._stop.set()
        try:
            self.state.blob(self.name).delete_blob()
        except Exception as exc:  # noqa: BLE001 - it expires by itself
            log.warning("could not remove the full-sync fence %s (it expires by itself): %s", self.name, exc)


class FullSyncFences:
    def __init__(self, state: StateContainer):
        self.state = state

    def active(self) -> list[FenceInfo]:
        now = time.time()
        fences = []
        for b in self.state.listing(FENCES, metadata=True):
            meta = b.metadata or {}
            try:
                expires = float(meta.get("expires", "0"))
            except ValueError:
                expires = 0.0
            if expires <= now:
                continue  # its holder is gone
            created = float(b.name[len(FENCES):].split("-", 1)[0]) / 1000
            fences.append(FenceInfo(b.name, unquote(meta.get("run", "")), unquote(meta.get("what", "")), created,
                                    expires))
        return sorted(fences, key=lambda f: (f.created, f.name))

    def open(self, run: str, what: str) -> FullSyncFence:
        return FullSyncFence(self.state, run, what).open()

    def older_than(self, fence: FullSyncFence) -> list[FenceInfo]:
        """Fences of other runs raised before ``fence``: full syncs this one must wait for."""
        return [f for f in self.active() if f.run != fence.run and f.name < fence.name]
