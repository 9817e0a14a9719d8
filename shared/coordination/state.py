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
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from ..errors import StateError

log = logging.getLogger(__name__)

PENDING, SETTLED, LOCKS, FENCES = "pending/", "settled/", "locks/", "full-syncs/"
MARK_ATTEMPTS = 8
DEAD_FENCE_SECONDS = 600.0  # a fence blob whose lease lapsed this long ago is removed by the next full sync
SETTING = "SYNC_STATE_CONTAINER"


def _name(prefix: str, item: str) -> str:
    return prefix + quote(item, safe="")


def _item(name: str, prefix: str) -> str:
    return unquote(name[len(prefix):])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


class StateContainer:
    """The state container, created on first write when it is missing (the deploy creates it in Azure)."""

    def __init__(self, service: Any, name: str):
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
            raise StateError(f"{SETTING} {self.name!r} ({where}): {what} failed ({code}: {_first_line(exc)}): "
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


@dataclass(frozen=True, slots=True)
class Mark:
    """A pending mark as read before a send: its ETag (to delete it only if unchanged), its generation (which
    product messages carry) and its age."""

    etag: str
    gen: int  # 0: unknown (a mark written before generations existed)
    age: float


def _gen(metadata: dict[str, str] | None) -> int:
    value = (metadata or {}).get("gen", "")
    return int(value) if value.isdigit() else 0


def _mark(props: Any, now: datetime | None = None) -> Mark:
    created = props.creation_time
    age = ((now or datetime.now(UTC)) - created).total_seconds() if created else 0.0
    return Mark(props.etag, _gen(props.metadata), age)


class PendingMarks:
    """Which products changed and wait for a send (see the module docstring)."""

    def __init__(self, state: StateContainer):
        self.state = state

    def request(self, item: str, *, stale_after: float = float("inf")) -> int | None:
        """Mark ``item`` as changed. Returns the mark's generation when the caller must enqueue a message:
        this call made it pending, or it has been pending for over ``stale_after`` seconds (its message may
        have died with a crashed instance; one more message costs at most one more send). None when it was
        already pending: its message is on its way, and the bump tells a send under way that its listing is
        stale."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        blob = self.state.blob(_name(PENDING, item))
        with self.state.failing(f"marking product {item!r} pending"):
            gen = (self._settled(item) or 0) + 1
            for _ in range(MARK_ATTEMPTS):
                try:
                    self.state.create_empty(blob.blob_name, {"gen": str(gen)})
                    return gen
                except ResourceExistsError:
                    pass
                try:
                    props = blob.get_blob_properties()
                except ResourceNotFoundError:
                    continue  # cleared meanwhile: create it
                try:
                    blob.set_blob_metadata({**(props.metadata or {}), "changed": f"{time.time():.3f}"},
                                           etag=props.etag, match_condition=MatchConditions.IfNotModified)
                except (ResourceNotFoundError, ResourceModifiedError):
                    # Either somebody else bumped it after we read it (which changed it after our blob was
                    # written: as good as our own bump), or a send cleared it (then it must be created anew).
                    if self.read(item) is None:
                        continue
                mark = _mark(props)
                return (mark.gen or gen) if mark.age > stale_after else None
            return gen  # heavy contention: one more message costs at most one more send

    def read(self, item: str) -> Mark | None:
        from azure.core.exceptions import ResourceNotFoundError

        with self.state.failing(f"reading the pending mark of product {item!r}"):
            try:
                return _mark(self.state.blob(_name(PENDING, item)).get_blob_properties())
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
                self.state.call(lambda: self.state.blob(_name(SETTLED, item)).upload_blob(
                    b"", overwrite=True, metadata={"gen": str(mark.gen)}))
            except AzureError as exc:  # its message then sends the product once more: harmless
                log.warning("could not note product %r as settled in %s: %s", item, SETTING, _first_line(exc))
        with self.state.failing(f"clearing the pending mark of product {item!r}"):
            try:
                self.state.blob(_name(PENDING, item)).delete_blob(etag=mark.etag,
                                                                  match_condition=MatchConditions.IfNotModified)
            except ResourceModifiedError:
                return False
            except ResourceNotFoundError:
                return True
        return True

    def settled(self, item: str) -> int | None:
        """The generation of the product's mark last settled, if the container still knows it."""
        with self.state.failing(f"reading whether product {item!r} was settled"):
            return self._settled(item)

    def _settled(self, item: str) -> int | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            metadata = self.state.blob(_name(SETTLED, item)).get_blob_properties().metadata
        except ResourceNotFoundError:
            return None
        return _gen(metadata) or None

    def snapshot(self) -> dict[str, Mark]:
        """Every pending product and its mark."""
        now = datetime.now(UTC)
        with self.state.failing("listing the pending products"):
            return {_item(b.name, PENDING): _mark(b, now) for b in self.state.listing(PENDING, metadata=True)}

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
                    item = _item(b.name, PENDING)
                    if item not in skip and b.creation_time and \
                            (now - b.creation_time).total_seconds() >= after_seconds:
                        found.append(item)
            except ResourceNotFoundError:
                return []
        return found


class _Lease:
    """A blob lease this process holds, renewed by a keeper thread: ``remaining()`` is how long it is
    certainly held (from when the last successful acquire or renewal was *sent*)."""

    def __init__(self, what: str, lease: Any, seconds: float, sent: float):
        self.what = what
        self.lease = lease
        self.seconds = seconds
        self.renewed = sent
        self.lost = False

    def remaining(self) -> float:
        return 0.0 if self.lost else self.renewed + self.seconds - time.monotonic()

    def renew(self) -> bool:
        from azure.core.exceptions import HttpResponseError

        sent = time.monotonic()
        try:
            self.lease.renew()
        except HttpResponseError as exc:
            # Storage answered: the lease is gone (the container was deleted, the lease broken). Whoever sends
            # under it must stop now, and what it sent may have overlapped another sender.
            self.lost = True
            log.warning("lost %s: %s", self.what, _first_line(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - storage unreachable: the lease lasts until it runs out
            if self.remaining() <= 0:
                self.lost = True
            log.warning("could not renew %s (%.0f s left): %s", self.what, max(0.0, self.remaining()),
                        _first_line(exc))
            return False
        self.renewed = sent
        return True


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

        blob = self.state.blob(_name(LOCKS, item))
        with self.state.failing(f"taking the lock of product {item!r}"):
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
                    self._held[item] = _Lease(f"the lock of product {item!r}", lease, self.seconds, sent)
                self._ensure_keeper()
                return True
        return False

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
        try:
            self.state.blob(_name(LOCKS, item)).delete_blob(lease=held.lease)
        except Exception as exc:  # noqa: BLE001 - the lease runs out by itself; nothing to undo
            log.debug("releasing the lock of %r: %s", item, exc)

    def held_by_anyone(self) -> set[str]:
        """Products whose lock is leased right now, by any process."""
        with self.state.failing("listing the product locks"):
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
                        self.name, self.seconds, _first_line(exc))


class FullSyncFences:
    def __init__(self, state: StateContainer, seconds: int = 60):
        self.state = state
        self.seconds = seconds

    def active(self) -> list[FenceInfo]:
        """The fences whose lease is held now, oldest first."""
        with self.state.failing("listing the full-sync fences"):
            blobs = self.state.listing(FENCES, metadata=True)
        fences = []
        for b in blobs:
            if getattr(b.lease, "state", None) != "leased":
                continue  # its holder is gone (or closed it): the lease lapsed
            meta = b.metadata or {}
            created = _number(b.name[len(FENCES):].split("-", 1)[0]) / 1000
            fences.append(FenceInfo(b.name, unquote(meta.get("run", "")), unquote(meta.get("what", "")),
                                    unquote(meta.get("host", "?")), meta.get("pid", "?"),
                                    _number(meta.get("started")) or created,
                                    _number(meta.get("renewed")) or created))
        return sorted(fences, key=lambda f: f.name)

    def open(self, run: str, what: str) -> FullSyncFence:
        self._sweep()
        return FullSyncFence(self.state, run, what, self.seconds).open()

    def older_than(self, fence: FullSyncFence) -> list[FenceInfo]:
        """Fences of other runs raised before ``fence``: full syncs this one must wait for."""
        return [f for f in self.active() if f.run != fence.run and f.name < fence.name]

    def _sweep(self) -> None:
        """Remove fences of crashed syncs, long lapsed (best effort: a leased one cannot be deleted)."""
        cutoff = (time.time() - DEAD_FENCE_SECONDS) * 1000
        try:
            for b in self.state.listing(FENCES):
                if getattr(b.lease, "state", None) != "leased" and _number(b.name[len(FENCES):].split("-")[0]) < cutoff:
                    self.state.blob(b.name).delete_blob()
        except Exception as exc:  # noqa: BLE001 - a lapsed fence blocks nobody; it only takes space
            log.debug("sweeping lapsed fences: %s", exc)


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0
