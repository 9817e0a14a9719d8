"""Blob trigger: a new or overwritten image goes to Wallie, and its product's full set to TRAEDE.

The parameter is an SDK-type ``BlobClient`` (azurefunctions-extensions-bindings-blob): the worker gets a
client for the blob, not its bytes, so a 50 MB photo never travels through the worker just for its name.
Source: Event Grid, on every plan the deploy offers (Flex Consumption supports nothing else): the BlobCreated
subscription calls the blob extension's webhook, so only new uploads run this function.
``BLOB_TRIGGER_SOURCE=LogsAndContainerScan`` is an opt-in for Consumption/Premium (and ``func start`` on a
laptop, which Event Grid cannot reach): the polling source scans the container and runs this function once for
every blob it has no receipt for - every image already there - and can lag 10 minutes. This is the one setting
read at import, because the host needs it to index the function.
"""
import logging
import os

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from shared.app import jobs

log = logging.getLogger(__name__)
bp = func.Blueprint()

_SOURCES = {s.value.lower(): s for s in func.BlobSource}
_configured = os.environ.get("BLOB_TRIGGER_SOURCE", "EventGrid")
SOURCE = _SOURCES.get(_configured.strip().lower())
if SOURCE is None:
    log.error("BLOB_TRIGGER_SOURCE=%r is invalid: expected EventGrid or LogsAndContainerScan; using EventGrid",
              _configured)
    SOURCE = func.BlobSource.EVENT_GRID


@bp.function_name("image_uploaded")
@bp.blob_trigger(arg_name="client", path="%IMAGES_CONTAINER%/{name}", connection="IMAGES_STORAGE",
                 source=SOURCE)
def image_uploaded(client: blob.BlobClient) -> None:
    report = jobs.new_image(client.blob_name)
    jobs.conclude(report, log, park=lambda: jobs.park_blob(client.blob_name))
