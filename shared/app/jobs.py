"""The operations the Functions triggers run, one call each: settings -> parts -> engine -> report.

Parts (HTTP pools, the Wallie token, the delegation key) are built on first use, never at import, and
reused by later invocations in the same worker while the settings stay the same.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .. import redact
from ..config.settings import Settings
from ..coordination import shards
from ..coordination.shards import FanOut
from ..engine.stopping import Stopper
from ..errors import ConfigError, ImageSyncError
from ..runs.recording import Recording
from ..runs.report import SyncReport
from ..storage.clients import ensure_queue, queue_client

if TYPE_CHECKING:  # the parts pull in requests and the storage SDK: imported on first use, not at cold start
    from ..engine.progress import Progress
    from .factory import Components

Env = Mapping[str, str] | None  # settings to use instead of the environment (tests)
log = logging.getLogger(__name__)
PROGRESS_SECONDS = 10.0
_lock = threading.Lock()
_cached: tuple[Settings, Components] | None = None

# In a Functions worker (the host sets FUNCTIONS_WORKER_RUNTIME), SIGTERM on scale-in stops the running
# invocations gracefully (see ``stopping``): they report what was not sent and fail, so the host retries
# them; after the grace period the worker goes away as before. The app is imported on the main thread.
STOPPER = Stopper()
if os.environ.get("FUNCTIONS_WORKER_RUNTIME"):
    STOPPER.install(then_exit=True)


class SyncFailed(ImageSyncError):
    """Raised so the Functions host marks the invocation failed (and retries where it retries)."""

    def __init__(self, report: SyncReport, why: str):
        super().__init__(f"{why}: {report.summary()}")
        self.report = report


def components(env: Env = None) -> Components:
    from .factory import Components

    global _cached
    settings = Settings.from_env(env)
    with _lock:
        if _cached is None or _cached[0] != settings:
            if _cached is not None:
                _cached[1].close()
            _protect_logs(settings)
            parts = Components(settings, stop=STOPPER.stop)
            STOPPER.on_abort(parts.abort)
            _cached = (settings, parts)
        return _cached[1]


# Every operation below keeps its report in the run history (RUN_HISTORY_CONTAINER, see ``history``):
# ``_recording`` gives the run a ledger of what each partner got, and keeps report and ledger when the run
# ends. Keeping it never fails the run.

def new_image(blob_name: str, env: Env = None) -> SyncReport:
    """The blob trigger: the image to Wallie now, its product to TRAEDE through the product queue."""
    parts = components(env)
    with _recording(parts, "upload", quiet=True) as rec:
        rec.report = parts.product_queue.image_uploaded(blob_name, ledger=rec.ledger)
        return rec.report


def deleted_blob(subject: str, env: Env = None) -> SyncReport | None:
    """A BlobDeleted event: queue its product; None when the event's blob is not in our container."""
    parts = components(env)
    marker = f"/containers/{parts.settings.storage.container}/blobs/"
    _, found, name = subject.partition(marker)
    if not (found and name):
        return None
    with _recording(parts, "delete", quiet=True) as rec:
        rec.report = parts.product_queue.image_deleted(name)
        return rec.report


def product_message(message: str, env: Env = None) -> SyncReport:
    """One message of the product queue: the product's (and up to nine settled others') complete sets."""
    parts = components(env)
    with _recording(parts, "product", quiet=True) as rec:
        rec.report = parts.product_queue.run_message(message, ledger=rec.ledger)
        return rec.report


def nightly(env: Env = None) -> SyncReport | FanOut:
    """The timer: a full sync in this process, or, for a catalog of more than SYNC_SHARD_PRODUCTS
    products, shards enqueued for ``sync_shard`` (returns a ``shards.FanOut`` then). It also deletes run
    reports older than RUN_HISTORY_DAYS."""
    parts = components(env)
    with _recording(parts, "nightly", prune=True) as rec:
        report = rec.report = _started(parts, "nightly sync", rec)
        with _progress(report):
            outcome = nightly_work(parts, report)
        if not isinstance(outcome, SyncReport):  # fanned out: the shards keep their own reports
            report.mode = "fan-out"
            report.notes.append(outcome.summary())
        return outcome


def nightly_work(parts: Components, report: SyncReport | None = None) -> SyncReport | FanOut:
    """The timer's work (``nightly`` without the run history around it: the benchmark runs it too): plan
    shards and enqueue them, or sync everything here when sharding does not apply. Planning only lists names;
    each shard (or the single full sync) raises its own fence while it sends."""
    started = time.monotonic()
    settings = parts.settings
    run = f"nightly-{uuid.uuid4().hex[:12]}"
    planned = shards.plan(parts.catalog, settings.sync_shard_products, settings.storage.container, run)
    if planned is None:
        return parts.product_queue.fenced("nightly sync", lambda fence: parts.engine.full_sync(
            fence=fence, report=report), run=run)
    planned_shards, groups, listed = planned
    queue = queue_client(settings.storage, settings.sync_shard_queue, parts.credential,
                         needed_for="needed to fan the nightly sync out because the catalog has more than "
                                    "SYNC_SHARD_PRODUCTS products")
    try:
        ensure_queue(queue)
        for shard in planned_shards:
            queue.send_message(shard.to_json())
    finally:
        queue.close()
    return shards.FanOut(shards=len(planned_shards), groups=groups, queue=settings.sync_shard_queue,
                         per_shard=settings.sync_shard_products, listed=listed,
                         seconds=round(time.monotonic() - started, 3))


def sync_shard(message: str, env: Env = None) -> SyncReport:
    """One queue message of the nightly fan-out: its products' images to Wallie, each of its products' full
    set to TRAEDE, behind the shard's own fence (shards of one night never wait for each other)."""
    parts = components(env)
    with _recording(parts, "shard") as rec:
        report = rec.report = _started(parts, "nightly shard", rec)
        with _progress(report):
            return shard_work(parts, message, report)


def shard_work(parts: Components, message: str, report: SyncReport | None = None) -> SyncReport:
    """One shard's work (``sync_shard`` without the run history around it: the benchmark runs it too)."""
    shard = shards.Shard.from_json(message)
    if shard.container != parts.settings.storage.container:
        raise ConfigError(f"shard message is for container {shard.container!r}, but IMAGES_CONTAINER is "
                          f"{parts.settings.storage.container!r}")
    what = f"shard {shard.index + 1}/{shard.count}"
    if report is not None:  # which products it covers: a resubmit of a shard stopped midway finishes them
        report.context["shard"] = {"after": shard.after, "upto": shard.upto}
    return parts.product_queue.fenced(f"nightly {what}", lambda fence: parts.engine.sync_entries(
        shards.shard_entries(parts.catalog, shard), mode=what, fence=fence, report=report),
        run=shard.run or f"shard-{uuid.uuid4().hex}")


def contact_sheet_page(run: str | None, item: str | None, env: Env = None) -> tuple[int, str]:
    """The HTTP page: ``(status, body)``, the contact sheet of a run (an id or ``latest``) or of a product
    (HTML, 200), or one line of text saying what is wrong (400, 404)."""
    from datetime import timedelta

    from ..runs import contact_sheet
    from ..runs.names import UnknownRun
    from ..runs.validation import DamagedHistory

    if run and item:
        return 400, "give run=<run id> (or latest) or item=<product id>, not both"
    parts = components(env)
    if parts.history is None:
        return 404, "RUN_HISTORY_CONTAINER is empty, so runs keep no report"
    sign = contact_sheet.signer(parts.service, start_skew=timedelta(minutes=parts.settings.sas_start_skew_minutes))
    default = parts.settings.storage.container
    try:
        if item:
            page = contact_sheet.product_sheet(parts.history, item, sign, default_container=default, served=True)
            if page is None:
                return 404, f"no kept run touched product {item!r} in the last {parts.history.days} days"
            return 200, page
        run_id = parts.history.resolve(run or "latest")
        return 200, contact_sheet.run_sheet(parts.history, run_id, sign, default_container=default, served=True)
    except UnknownRun as exc:
        return 404, str(exc)
    except DamagedHistory as exc:  # the run's report is not one this app wrote: named, never a traceback
        return 500, str(exc)


# A resubmit from the HTTP page waits this long at most for a product's sender or a full sync (the page's
# request must answer within the platform's 230 s): then 503, and the button may be pressed again.
HTTP_RESUBMIT_WAIT_SECONDS = 120.0


def resubmit(run: str | None, env: Env = None) -> tuple[int, dict[str, object]]:
    """The HTTP resubmit of one kept run (see ``resubmit``): ``(status, answer as JSON)``. Idempotent per run: of
    two requests for one run (a double click) one resubmits it, the other answers with that resubmit."""
    from azure.core.exceptions import AzureError

    from ..coordination.product_queue import FullSyncBusy
    from ..runs.history import why
    from ..runs.names import UnknownRun
    from ..runs.validation import DamagedHistory
    from . import resubmit as rs

    if not run or not run.strip():
        return 400, {"error": "give run=<run id> (image-sync runs lists them)"}
    if run.strip() == "latest":
        return 400, {"error": "name the run by its id, not latest: by the time a second request arrives, latest may "
                              "be another run (the resubmit itself)"}
    parts = components(env)
    if parts.history is None:
        return 404, {"error": "RUN_HISTORY_CONTAINER is empty, so runs keep no report"}
    try:
        done = rs.resubmit(parts, [run.strip()], via="http", wait_seconds=HTTP_RESUBMIT_WAIT_SECONDS)
    except UnknownRun as exc:
        return 404, {"error": str(exc)}
    except DamagedHistory as exc:
        return 500, {"error": str(exc)}
    except ConfigError as exc:
        return 409, {"error": redact.redact(str(exc))}
    except FullSyncBusy as exc:
        return 503, {"error": f"not resubmitted: {exc}; press it again later", "retry": True}
    except AzureError as exc:  # storage (the history, the state) out of reach: the claim was given back
        return 503, {"error": f"not resubmitted: storage did not answer as expected ({why(exc)}); press it again "
                              "later", "retry": True}
    answer: dict[str, object] = {"run": run.strip()}
    if done.report is not None and done.run_id is not None:
        report = done.report
        log_report(report, log)
        return 200, {**answer, "resubmit": done.run_id, "created": True, "state": "done", "ok": report.ok,
                     "summary": redact.redact(report.summary()),
                     "lines": [redact.redact(line) for line in report.grouped_lines(deferred=True)],
                     "notes": [redact.redact(note) for note in report.notes]}
    if done.already:
        claim = done.already[0]
        return 200, {**answer, "resubmit": claim.latest, "created": False, "state": claim.state,
                     "message": f"already {claim.describe()}"}
    return 200, {**answer, "resubmit": None, "created": False, "state": "nothing",
                 "message": "the run left nothing undone: nothing to resubmit"}


def resubmit_page(run: str | None, env: Env = None) -> tuple[int, str, str]:
    """The contact sheet's button: ``(status, body, mimetype)``. The sheet of the resubmit (the new one, or the
    one a first click made), or one line of text."""
    status, answer = resubmit(run, env)
    resubmitted = answer.get("resubmit")
    if status != 200 or not isinstance(resubmitted, str):
        return status, str(answer.get("error") or answer.get("message")), "text/plain"
    if answer.get("state") == "running":
        return 202, (f"run {answer['run']} is being resubmitted by run {resubmitted} right now: press the button "
                     "again in a while to see its sheet"), "text/plain"
    status, body = contact_sheet_page(resubmitted, None, env)
    return status, body, "text/html" if status == 200 else "text/plain"


def _recording(parts: Components, kind: str, *, prune: bool = False, quiet: bool = False) -> Recording:
    return Recording(parts.history, kind, prune=prune, quiet=quiet, context=_context(parts))


def _context(parts: Components) -> dict[str, object]:
    """What a report names besides its counts: the container and the partners (no secrets)."""
    return {"container": parts.settings.storage.container, "partners": parts.settings.partner_urls()}


def _started(parts: Components, what: str, rec: Recording) -> SyncReport:
    """The start line of a long run, and its report (which names the container and partners)."""
    log.info("%s started: %s", what, parts.settings.describe())
    return SyncReport(context=_context(parts), ledger=rec.ledger)


def _progress(report: SyncReport) -> Progress:
    from ..engine.progress import Progress

    return Progress(report, lambda line: log.info("%s", line), every=PROGRESS_SECONDS)


def log_report(report: SyncReport, logger: logging.Logger = log) -> None:
    """Log once, at the boundary: one line per cause (a count, the reason, the first names), at INFO for
    skipped blobs and at ERROR for rejections and failures, then the summary. Every name is in the report."""
    for line in report.grouped_lines():
        level = logging.INFO if line.startswith("skipped") else \
            logging.WARNING if line.startswith("not web-ready") else logging.ERROR
        logger.log(level, "%s", line)
    logger.log(logging.INFO if report.ok else logging.ERROR, "%s", report.summary())


def conclude(report: SyncReport, logger: logging.Logger, *, park: Callable[[], str] | None = None) -> None:
    """How a blob or queue trigger ends: log the report; raise when a retry can help (the host retries the
    invocation, then poisons it); when only a retry *cannot* help (credentials refused, a redirect), put
    the work in the poison queue at once with ``park`` instead of five retries in vain. Rejected records
    do not raise: retrying them cannot help either, and each is logged with the partner's reason."""
    log_report(report, logger)
    failed = report.failed
    if any(p.retryable for p in failed):
        raise SyncFailed(report, f"{len(failed)} deliveries failed after retries")
    if failed:
        if park is None:
            raise SyncFailed(report, f"{len(failed)} deliveries failed; retrying cannot help until the "
                                     "configuration is fixed")
        queue = park()
        # Worded like the host's own line, so the poison-queue alert (deploy/monitoring.py) fires for it too.
        logger.error("Not retried: retrying cannot help until the configuration is fixed (see the 'stopped:' "
                     "line). Moving message to queue '%s'.", queue)


def conclude_nightly(outcome: SyncReport | FanOut, logger: logging.Logger) -> None:
    """The timer: a fan-out only logs what it enqueued; a full sync fails the invocation on any rejected or
    failed record, so it shows in monitoring (timers are not retried by the host)."""
    if not isinstance(outcome, SyncReport):
        logger.info("%s", outcome.summary())
        return
    log_report(outcome, logger)
    raise_if_not_ok(outcome)


def raise_if_not_ok(report: SyncReport) -> None:
    """For the nightly run: any rejected or failed record marks the invocation failed in monitoring."""
    if not report.ok:
        raise SyncFailed(report, f"{len(report.rejected)} rejected, {len(report.failed)} failed")


def park_product_message(body: str, env: Env = None) -> str:
    """Put a product message in ``<PRODUCT_SYNC_QUEUE>-poison`` ourselves (what the host would do after 5
    failures)."""
    parts = components(env)
    return _park(parts, parts.settings.product_sync_queue + "-poison", body)


def park_shard_message(body: str, env: Env = None) -> str:
    """Put a shard message in ``<SYNC_SHARD_QUEUE>-poison`` ourselves."""
    parts = components(env)
    return _park(parts, parts.settings.sync_shard_queue + "-poison", body)


def park_blob(blob_name: str, env: Env = None) -> str:
    """Put a blob in ``webjobs-blobtrigger-poison``, in the message format the blob extension uses."""
    parts = components(env)
    body = json.dumps({"Type": "BlobTrigger", "FunctionId": "Host.Functions.image_uploaded", "BlobType": "BlockBlob",
                       "ContainerName": parts.settings.storage.container, "BlobName": blob_name})
    return _park(parts, BLOB_POISON_QUEUE, body)


def _park(parts: Components, queue: str, body: str) -> str:
    parts.park(queue, body)
    return queue


BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"


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
