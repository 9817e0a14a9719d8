"""The operations the Functions triggers run, one call each: settings -> parts -> engine -> report.

Parts (HTTP pools, the Wallie token, the delegation key) are built on first use, never at import, and
reused by later invocations in the same worker while the settings stay the same.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from . import redact
from .errors import ImageSyncError
from .report import SyncReport
from .settings import Settings

if TYPE_CHECKING:  # the parts pull in requests and the storage SDK: imported on first use, not at cold start
    from .factory import Components

log = logging.getLogger(__name__)
_lock = threading.Lock()
_cached: "tuple[Settings, Components] | None" = None


class SyncFailed(ImageSyncError):
    """Raised so the Functions host marks the invocation failed (and retries where it retries)."""

    def __init__(self, report: SyncReport, why: str):
        super().__init__(f"{why}: {report.summary()}")
        self.report = report


def components(env=None) -> "Components":
    from .factory import Components

    global _cached
    settings = Settings.from_env(env)
    with _lock:
        if _cached is None or _cached[0] != settings:
            if _cached is not None:
                _cached[1].close()
            _protect_logs(settings)
            _cached = (settings, Components(settings))
        return _cached[1]


def new_image(blob_name: str, env=None) -> SyncReport:
    """The blob trigger: the image to Wallie now, its product to TRAEDE through the product queue."""
    return components(env).products.image_uploaded(blob_name)


def deleted_blob(subject: str, env=None) -> SyncReport | None:
    """A BlobDeleted event: queue its product; None when the event's blob is not in our container."""
    parts = components(env)
    marker = f"/containers/{parts.settings.storage.container}/blobs/"
    _, found, name = subject.partition(marker)
    return parts.products.image_deleted(name) if found and name else None


def full_sync(env=None) -> SyncReport:
    """Everything in this process, behind a full-sync fence (see ``coordination``)."""
    parts = components(env)
    with parts.products.full_sync_unit("full sync") as unit:
        report = parts.engine.full_sync(withhold=unit.withhold, track=unit.pending)
        unit.settle(report)
    return report


def product_message(message: str, env=None) -> SyncReport:
    """One message of the product queue: the product's (and up to nine settled others') complete sets."""
    return components(env).products.run_message(message)


def nightly(env=None):
    """The timer: a full sync in this process, or, for a catalog of more than SYNC_SHARD_PRODUCTS
    products, shards enqueued for ``sync_shard`` (returns a ``shards.FanOut`` then)."""
    from . import shards  # imported on first use: keeps the app's cold start lean

    return shards.nightly(components(env))


def sync_shard(message: str, env=None) -> SyncReport:
    """One queue message of the nightly fan-out."""
    from . import shards

    return shards.run_shard(components(env), message)


def log_report(report: SyncReport, logger: logging.Logger = log) -> None:
    """Log once, at the boundary: skipped at INFO, rejections and failures at ERROR, then the summary."""
    for s in report.skipped:
        logger.info("skipped %r: %s", s.blob_name, s.reason)
    for p in report.rejected:
        logger.error("rejected: %s", p.line())
    for p in report.failed:
        logger.error("failed: %s", p.line())
    logger.log(logging.INFO if report.ok else logging.ERROR, "%s", report.summary())


def raise_if_retry_can_help(report: SyncReport) -> None:
    """Transient failures raise (the host retries, then poisons); rejections do not (retry cannot help)."""
    if report.failed:
        raise SyncFailed(report, f"{len(report.failed)} deliveries failed after retries")


def raise_if_not_ok(report: SyncReport) -> None:
    """For the nightly run: any rejected or failed record marks the invocation failed in monitoring."""
    if not report.ok:
        raise SyncFailed(report, f"{len(report.rejected)} rejected, {len(report.failed)} failed")


def _protect_logs(settings: Settings) -> None:
    for handler in logging.getLogger().handlers:
        redact.install(handler, settings.secrets())
    logging.getLogger("shared").setLevel(settings.log_level)


def reset() -> None:
    """Forget cached parts (tests switch settings between cases)."""
    global _cached
    with _lock:
        if _cached is not None:
            _cached[1].close()
        _cached = None
