"""Event Grid trigger for ``Microsoft.Storage.BlobDeleted``: re-send that product's remaining images to
TRAEDE, so the deleted one disappears there too (Wallie has no delete; it keeps the last image it had).
"""
import logging

import azure.functions as func

from shared.app import jobs

log = logging.getLogger(__name__)
bp = func.Blueprint()

BLOB_DELETED = "Microsoft.Storage.BlobDeleted"


@bp.function_name("image_deleted")
@bp.event_grid_trigger(arg_name="event")
def image_deleted(event: func.EventGridEvent) -> None:
    if event.event_type != BLOB_DELETED:
        log.info("ignored Event Grid event %s (%s): only %s is handled", event.id, event.event_type, BLOB_DELETED)
        return
    report = jobs.deleted_blob(event.subject)
    if report is None:
        log.info("ignored deletion outside the images container: %s", event.subject)
        return
    jobs.conclude(report, log)
