"""One measurement in a fresh process, so its peak RSS, CPU and import cost are the app's own.

Settings come from the environment, as in the Functions host. Prints one JSON line on stdout.

- (default) a full sync of the container;
- ``--listing-only``: the container's listing alone (fetch and parse every page): the floor's first half;
- ``--synthetic IMAGES PRODUCTS``: a full sync of a generated listing (no storage) through the real engine;
- ``--fan-out``: the timer's planning, then every shard in turn;
- ``--renditions``: the web stage alone over the container (every image looked at and converted, none
  sent): renditions per second (``bench.renditions`` seeds the images).

Every mode that touches storage reports ``storage_requests``: the HTTP requests this process sent to the
storage endpoint (each attempt counted, as storage bills them), counted where every SDK and raw request goes
out (urllib3's connection pool), so nothing the app does to storage escapes it.

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
    parser.add_argument("--listing-only", action="store_true", help="instead: time the listing alone")
    parser.add_argument("--synthetic", nargs=2, type=int, metavar=("IMAGES", "PRODUCTS"),
                        help="instead: sync a generated listing of IMAGES over PRODUCTS, without storage")
    parser.add_argument("--ledger", action="store_true",
                        help="keep the report's ledger of what each partner got, as the timer's run history does")
    parser.add_argument("--renditions", action="store_true",
                        help="instead: the web stage alone over the container (look at and convert every image)")
    args = parser.parse_args(argv)
    count_storage_requests()
    if args.renditions:
        return renditions()
    if args.fan_out:
        return fan_out()
    if args.listing_only:
        return listing_only()
    if args.synthetic:
        return synthetic(*args.synthetic, ledger=args.ledger)
    started = time.perf_counter()
    from shared.app.factory import Components
    from shared.config.settings import Settings

    imported = time.perf_counter() - started
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002)
        profiler.start()
    with Components(Settings.from_env()) as parts:
        t0 = time.perf_counter()
        report = parts.engine.full_sync(report=new_report(args.ledger))
        wall = time.perf_counter() - t0
    if profiler:
        profiler.stop()
        with open(args.profile, "w") as out:
            out.write(profiler.output_text(unicode=True, show_all=False))
    print(json.dumps({
        "ok": report.ok, "images": report.images, "products": report.products, "skipped": len(report.skipped),
        "rejected": len(report.rejected), "failed": len(report.failed), "delivered": report.delivered,
        "requests": report.requests, "retries": report.retries, "wall_s": round(wall, 3),
        "import_s": round(imported, 3), **usage(), "storage_requests": STORAGE_REQUESTS[0],
        "web": report.web,
        "problems": [p.line() for p in (report.rejected + report.failed)[:5]],
    }))
    return 0


STORAGE_REQUESTS = [0]


def count_storage_requests() -> None:
    """Count every request this process sends to the storage endpoint of ``IMAGES_STORAGE`` (by port)."""
    import os
    import threading

    import urllib3.connectionpool

    conn = os.environ.get("IMAGES_STORAGE", "")
    endpoint = next((part.split("=", 1)[1] for part in conn.split(";") if part.startswith("BlobEndpoint=")), "")
    from urllib.parse import urlsplit

    port = urlsplit(endpoint).port if endpoint else None
    if port is None:
        return
    lock = threading.Lock()
    original = urllib3.connectionpool.HTTPConnectionPool.urlopen

    def urlopen(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.port == port:
            with lock:
                STORAGE_REQUESTS[0] += 1
        return original(self, *args, **kwargs)

    urllib3.connectionpool.HTTPConnectionPool.urlopen = urlopen  # type: ignore[method-assign]


def renditions() -> int:
    """The web stage alone over the container: each image looked at (ranged reads), downloaded, rendered
    and its rendition written, as a full sync does for images it has no verdict on; nothing is sent."""
    from shared.app.factory import open_storage
    from shared.config.settings import Settings
    from shared.runs.report import SyncReport

    settings = Settings.from_env()
    storage = open_storage(settings)
    if storage.web is None:
        raise SystemExit("WEB_IMAGES is off")
    report = SyncReport()
    started = time.perf_counter()
    entries = sum(1 for _ in storage.web.prepared(storage.catalog.scan(), report))
    wall = time.perf_counter() - started
    storage.close()
    converted = report.web.get("converted", 0)
    print(json.dumps({"entries": entries, "converted": converted, "web": report.web, "wall_s": round(wall, 3),
                      "renditions_per_s": round(converted / wall, 3) if wall else None, **usage(),
                      "storage_requests": STORAGE_REQUESTS[0],
                      "problems": [f"{s.blob_name}: {s.text}" for s in report.not_web_ready[:5]]}))
    return 0


def new_report(ledger: bool):
    """The run's report, with a ledger (spooled to temporary files) when asked, as the timer keeps one."""
    from shared.runs.ledger import Ledger
    from shared.runs.report import SyncReport

    return SyncReport(ledger=Ledger() if ledger else None)


def usage() -> dict:
    """This process's CPU seconds and peak RSS so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": round(own.ru_utime + own.ru_stime, 2), "peak_rss_mb": round(peak_rss_kb() / 1024, 1)}


def peak_rss_kb() -> int:
    """The high-water mark of this process's own memory (``VmHWM``), in KiB.

    Not ``ru_maxrss``: Linux carries it across ``execve`` from the process that spawned us (subprocess
    spawns with vfork, so the child's figure starts at the *parent's* high-water mark). The bench's parent
    seeds 100k blobs when the catalog is new and peaks near 240 MB doing it, and every child then reported
    240 MB whatever it used itself. ``VmHWM`` belongs to the address space the child runs in."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the best there is


def listing_only() -> int:
    """Every page of the container, fetched and parsed, nothing described, signed or sent."""
    from shared.app.factory import Components
    from shared.config.settings import Settings

    with Components(Settings.from_env()) as parts:
        started = time.perf_counter()
        blobs = sum(len(page) for _, page in parts.catalog.listing.pages())
        wall = time.perf_counter() - started
    print(json.dumps({"blobs": blobs, "listing_s": round(wall, 3), **usage(),
                      "storage_requests": STORAGE_REQUESTS[0]}))
    return 0


def synthetic(images: int, products: int, ledger: bool = False) -> int:
    """A full sync of a generated listing through the real engine and the real partner clients."""
    from datetime import timedelta

    from azure.storage.blob import BlobServiceClient

    from bench.synthetic import SyntheticListing
    from devtools.azurite import ACCOUNT, ACCOUNT_KEY
    from shared.catalog.container import Catalog
    from shared.catalog.layout import PathLayout
    from shared.config.settings import Settings
    from shared.engine.sync import SyncEngine
    from shared.partners.traede import TraedeClient
    from shared.partners.wallie import WallieClient
    from shared.storage.sas import SasSigner

    settings = Settings.from_env()
    # Signing needs an account key, not a connection: nothing is listening at this endpoint.
    service = BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=https://127.0.0.1:9/{ACCOUNT};")
    listing = SyntheticListing(images, products)
    catalog = Catalog(None, PathLayout(settings.path_pattern), listing=listing)
    signer = SasSigner(service, "synthetic", ttl=timedelta(hours=settings.sas_ttl_hours),
                       start_skew=timedelta(minutes=settings.sas_start_skew_minutes))
    pool = settings.sync_concurrency + 2
    wallie = WallieClient.from_settings(settings.wallie, settings.http, pool_size=pool)
    traede = TraedeClient.from_settings(settings.traede, settings.http, pool_size=pool)
    engine = SyncEngine(catalog, signer.url, wallie=wallie, traede=traede, concurrency=settings.sync_concurrency)
    started = time.perf_counter()
    report = engine.full_sync(report=new_report(ledger))
    wall = time.perf_counter() - started
    print(json.dumps({"ok": report.ok, "images": report.images, "products": report.products,
                      "requests": report.requests, "retries": report.retries, "wall_s": round(wall, 3),
                      "pages": listing.pages_served, **usage()}))
    return 0


def fan_out() -> int:
    """The timer's planning, then each shard as one queue-triggered invocation would run it (in turn here;
    in Azure the scale controller runs them side by side)."""
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    from shared.app import jobs
    from shared.app.factory import Components
    from shared.config.settings import Settings
    from shared.coordination import shards

    settings = Settings.from_env()
    with Components(settings) as parts:
        t0 = time.perf_counter()
        outcome = jobs.nightly_work(parts)
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
                report = jobs.shard_work(parts, message.content)
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
        **usage(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
