"""Queue trigger: one pending product's complete image set to TRAEDE (see ``shared/coordination/product_queue.py``).

``image_uploaded`` and ``image_deleted`` mark their product pending and queue one message per burst,
invisible for ``PRODUCT_SYNC_DELAY_SECONDS``; this function then sends the product, together with up to
nine other products whose burst has settled, under a per-product lock. A transient failure raises: the
host retries the message (``extensions.queues.maxDequeueCount`` in host.json, 5) and then moves it to
``<PRODUCT_SYNC_QUEUE>-poison``, where it names the product. Refused credentials or a redirect put the
message there at once (five retries cannot help). A rejected product does not raise.
"""
import logging

import azure.functions as func

from shared.app import jobs

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("product_sync")
@bp.queue_trigger(arg_name="message", queue_name="%PRODUCT_SYNC_QUEUE%", connection="IMAGES_STORAGE")
def product_sync(message: func.QueueMessage) -> None:
    attempt = getattr(message, "dequeue_count", None) or 1
    if attempt > 1:
        log.warning("product message %s: attempt %d", message.id, attempt)
    body = message.get_body().decode("utf-8")
    report = jobs.product_message(body)
    jobs.conclude(report, log, park=lambda: jobs.park_product_message(body))
