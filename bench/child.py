"""One full sync in a fresh process, so its peak RSS and import cost are the app's own.

Settings come from the environment, as in the Functions host. Prints one JSON line on stdout.
``--profile FILE`` writes a pyinstrument text profile (pip install pyinstrument).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("--profile", help="write a pyinstrument profile of the sync to this file")
    parser.add_argument("--fan-out", action="store_true",
                        help="instead: plan and enqueue shards as the timer does, then run every shard in turn")
    args = parser.parse_args(argv)
    if args.fan_out:
        return fan_out()
    started = time.perf_counter()
    from shared.factory import Components
    from shared.settings import Settings

    imported = time.perf_counter() - started
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002)
        profiler.start()
    with Components(Settings.from_env()) as parts:
        t0 = time.perf_counter()
        report = parts.engine.full_sync()
        wall = time.perf_counter() - t0
    if profiler:
        profiler.stop()
        with open(args.profile, "w") as out:
            out.write(profiler.output_text(unicode=True, show_all=False))
    print(json.dumps({
        "ok": report.ok, "images": report.images, "products": report.products, "skipped": len(report.skipped),
        "rejected": len(report.rejected), "failed": len(report.failed), "delivered": report.delivered,
        "requests": report.requests, "retries": report.retries, "wall_s": round(wall, 3),
        "import_s": round(imported, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "problems": [p.line() for p in (report.rejected + report.failed)[:5]],
    }))
    return 0


def fan_out() -> int:
    """The timer's planning, then each shard as one queue-triggered invocation would run it (in turn here;
    in Azure the scale controller runs them side by side)."""
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    from shared import shards
    from shared.factory import Components
    from shared.settings import Settings

    settings = Settings.from_env()
    with Components(settings) as parts:
        t0 = time.perf_counter()
        outcome = shards.nightly(parts)
        plan_s = time.perf_counter() - t0
        if not isinstance(outcome, shards.FanOut):
            raise SystemExit(f"the catalog was not sharded: {outcome.summary()}")
        queue = QueueClient.from_connection_string(settings.storage.connection_string, settings.sync_shard_queue,
                                                   message_decode_policy=TextBase64DecodePolicy())
        walls, requests, images, products, ok = [], 0, 0, 0, True
        while True:
            batch = list(queue.receive_messages(max_messages=32, visibility_timeout=600))
            if not batch:
                break
            # Deleted up front: a pooled connection left idle while shards run is dropped by Azurite, and
            # the SDK's retry would then sleep 15 s before each delete (which is not what is measured).
            for message in batch:
                queue.delete_message(message)
            for message in batch:
                t1 = time.perf_counter()
                report = shards.run_shard(parts, message.content)
                walls.append(time.perf_counter() - t1)
                requests += report.requests
                images += report.images
                products += report.products
                ok = ok and report.ok
        queue.delete_queue()
        queue.close()
    print(json.dumps({
        "ok": ok, "shards": outcome.shards, "plan_s": round(plan_s, 3), "shard_max_s": round(max(walls), 3),
        "shard_sum_s": round(sum(walls), 3), "requests": requests, "images": images, "products": products,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
