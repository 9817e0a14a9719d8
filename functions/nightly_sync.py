"""Timer: the daily full resync (Wallie's best practice) — every image, old products included.

It also covers what events cannot: blobs that existed before deployment and events that were missed.
Schedule from ``SYNC_SCHEDULE`` (NCRONTAB, six fields, UTC; default ``0 0 2 * * *``). Never run_on_startup.
A catalog of more than ``SYNC_SHARD_PRODUCTS`` products is not synced here but fanned out: shards go to
the ``SYNC_SHARD_QUEUE`` queue and ``sync_shard`` runs them, spread over instances.
"""
import logging

import azure.functions as func

from shared.app import jobs

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("nightly_sync")
@bp.timer_trigger(arg_name="timer", schedule="%SYNC_SCHEDULE%", use_monitor=True, run_on_startup=False)
def nightly_sync(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.warning("nightly_sync is running late (past due): the previous schedule was missed")
    report = jobs.nightly()
    jobs.conclude_nightly(report, log)
