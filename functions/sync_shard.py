"""Queue trigger: one shard of the nightly fan-out (see ``shared/coordination/shards.py``).

The timer enqueues a shard per ``SYNC_SHARD_PRODUCTS`` products when the catalog is too large for one
invocation; the scale controller spreads the messages over instances. A shard whose deliveries failed
raises, so the host retries it (``extensions.queues.maxDequeueCount`` in host.json, 5) and then moves it
to ``<SYNC_SHARD_QUEUE>-poison``. A rejected record does not raise: a retry would be rejected again.
"""
import logging

import azure.functions as func

from shared.app import jobs

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("sync_shard")
@bp.queue_trigger(arg_name="message", queue_name="%SYNC_SHARD_QUEUE%", connection="IMAGES_STORAGE")
def sync_shard(message: func.QueueMessage) -> None:
    attempt = getattr(message, "dequeue_count", None) or 1  # set by the worker's QueueMessage
    if attempt > 1:
        log.warning("shard message %s: attempt %d", message.id, attempt)
    body = message.get_body().decode("utf-8")
    report = jobs.sync_shard(body)
    jobs.conclude(report, log, park=lambda: jobs.park_shard_message(body))
