"""Burst benchmark: ``python -m bench.burst --uploads 2000 --products 200``.

A studio drops a season at once: N images over P products are uploaded concurrently into a real Azurite,
and each finished upload is handed, as Event Grid would, to one of ``--instances`` worker processes
(``bench.burst_worker``), each running the blob trigger's work on ``--parallel`` threads, and serving the
product queue when the app has one. The partners answer with random latency (``--latency-ms`` plus up to
``--jitter-ms``), so requests overtake each other as they do on the internet.

It measures what the issue asks for: TRAEDE and Wallie requests, the time from the last upload until
every product's complete set is at TRAEDE, how many products were still incomplete when the run gave up,
and how often TRAEDE applied a set that lacked an image an earlier set of that product had (a stale set
overtaking a newer one: uploads only, so a set should never shrink). Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from devtools.images import jpeg

REPO = Path(__file__).resolve().parent.parent
WALLIE = {"tenant": "TENANT", "username": "wallie-user", "password": "wallie-pass"}
TRAEDE = {"access_token": "traede-token", "app_key": "traede-app-key"}
KINDS = ("front", "back", "detail", "zoom", "lifestyle", "packaging", "side", "model", "mood", "alt")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__.splitlines()[0])
    p.add_argument("--uploads", type=int, default=2000)
    p.add_argument("--products", type=int, default=200)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--jitter-ms", type=float, default=80.0, help="random extra latency per partner request")
    p.add_argument("--instances", type=int, default=4, help="worker processes (Functions instances)")
    p.add_argument("--parallel", type=int, default=4, help="trigger invocations at once per instance")
    p.add_argument("--upload-threads", type=int, default=8)
    p.add_argument("--rate", type=float, default=50.0,
                   help="uploads per second (a studio's uplink; 0 = as fast as Azurite takes them)")
    p.add_argument("--give-up-s", type=float, default=60.0,
                   help="stop waiting for complete products this long after the last upload")
    p.add_argument("--order", choices=("folders", "shuffled"), default="folders",
                   help="folders: a product's images are uploaded together, as a studio drops a folder "
                        "(the default); shuffled: all uploads in random order")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--slow-rate", type=float, default=0.0,
                   help="share of TRAEDE requests that TRAEDE sits on for 0..--slow-ms, then applies (a partner "
                        "slower than the client waits: the client cuts the attempt, TRAEDE applies it later)")
    p.add_argument("--slow-ms", type=float, default=30000.0)
    p.add_argument("--http-timeout", type=float, default=30.0, help="HTTP_TIMEOUT_SECONDS of the app")
    p.add_argument("--resend-s", type=float, default=300.0,
                   help="PRODUCT_RESEND_SECONDS of the app: how long after a request of unknown outcome its "
                        "products are sent again (must exceed --slow-ms to repair every late landing)")
    args = p.parse_args(argv)
    if not 1 <= args.products <= args.uploads:
        p.error("expected 1 <= --products <= --uploads")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def blob_names(uploads: int, products: int) -> list[str]:
    names = []
    for n in range(uploads):
        item, k = 500000 + n % products, n // products
        names.append(f"{item}/{('BLK', 'WHT')[k % 2]}/{KINDS[k % len(KINDS)]}-{k}.jpg")
    return names


def sandbox_state(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_sandbox/state", timeout=30) as response:
        return json.loads(response.read())


def stale_at_end(history: list[dict], blobs: dict[str, set[str]]) -> int:
    """Products whose last applied set is not their complete set: what TRAEDE shows once everything is quiet."""
    from shared.catalog.records import image_id_for

    last: dict[str, set] = {}
    for entry in history:
        last[entry["item_number"]] = {k.split(":")[0] for k in entry["keys"]}
    return sum(1 for item, names in blobs.items() if last.get(item) != {image_id_for(n) for n in names})


def last_change(history: list[dict]) -> float | None:
    """Wall time of the last set TRAEDE applied that differed from the product's previous one."""
    last: dict[str, set] = {}
    changed = None
    for entry in history:
        keys = set(entry["keys"])
        if keys != last.get(entry["item_number"]):
            changed = entry["at"]
        last[entry["item_number"]] = keys
    return changed


def stale_sets(history: list[dict]) -> int:
    """Sets TRAEDE applied that lack an image the previous set of the same product had."""
    last: dict[str, set] = {}
    stale = 0
    for entry in history:
        keys = set(entry["keys"])
        if not keys >= last.get(entry["item_number"], set()):
            stale += 1
        last[entry["item_number"]] = keys
    return stale


def app_env(conn: str, container: str, urls: dict, args: argparse.Namespace | None = None) -> dict:
    timing = {} if args is None else {"HTTP_TIMEOUT_SECONDS": f"{args.http_timeout:g}",
                                      "PRODUCT_RESEND_SECONDS": f"{args.resend_s:g}"}
    return {**timing,
        "IMAGES_STORAGE": conn, "IMAGES_CONTAINER": container,
        "WALLIE_BASE_URL": urls["wallie"], "WALLIE_TENANT": WALLIE["tenant"],
        "WALLIE_USERNAME": WALLIE["username"], "WALLIE_PASSWORD": WALLIE["password"],
        "TRAEDE_BASE_URL": urls["traede"], "TRAEDE_ACCESS_TOKEN": TRAEDE["access_token"],
        "TRAEDE_APP_KEY": TRAEDE["app_key"], "HTTP_RETRY_BACKOFF_SECONDS": "0.2", "LOG_LEVEL": "WARNING",
    }


def has_product_queue() -> bool:
    """Whether the app under test coalesces products over a queue (PRODUCT_SYNC_QUEUE)."""
    return (REPO / "functions" / "product_sync.py").exists()


def run(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(REPO))
    from azure.storage.blob import BlobServiceClient

    from bench.__main__ import Sandboxes
    from devtools.azurite import Azurite

    names = blob_names(args.uploads, args.products)
    if args.order == "shuffled":
        random.Random(args.seed).shuffle(names)
    else:
        names.sort(key=lambda name: name.split("/", 1)[0])
    expected: dict[str, set[str]] = {}
    blobs: dict[str, set[str]] = {}
    for name in names:
        expected.setdefault(name.split("/", 1)[0], set()).add(name.rsplit("/", 1)[1])
        blobs.setdefault(name.split("/", 1)[0], set()).add(name)
    queue = f"burst-products-{os.getpid()}" if has_product_queue() else None
    sandbox_args = ["--latency-jitter-ms", str(args.jitter_ms), "--seed", str(args.seed),
                    "--slow-rate", str(args.slow_rate), "--slow-ms", str(args.slow_ms)]
    with Azurite(extra_args=("--loose",)) as azurite, Sandboxes(args.latency_ms, sandbox_args) as urls:
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        container = service.create_container("burst")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("IMAGES_", "WALLIE_", "TRAEDE_"))},
               **app_env(azurite.connection_string, "burst", urls, args)}
        if queue:
            env.update({"PRODUCT_SYNC_QUEUE": queue, "SYNC_STATE_CONTAINER": f"burst-state-{os.getpid()}"})
        workers = [subprocess.Popen([sys.executable, "-m", "bench.burst_worker", "--parallel", str(args.parallel)]
                                    + (["--queue", queue] if queue else []),
                                    cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                   for _ in range(args.instances)]
        for worker in workers:  # warm: imports done and parts built, as on a running instance
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("a burst worker did not start")
        feed_lock = threading.Lock()
        turn = iter(range(10**9))
        pace = threading.Semaphore(0) if args.rate else None

        def pacer() -> None:
            for _ in names:
                pace.release()
                time.sleep(1 / args.rate)

        def upload(name: str) -> None:
            if pace is not None:
                pace.acquire()
            container.upload_blob(name, jpeg(note=f"burst {name}"), overwrite=True)  # a real image: it is checked
            with feed_lock:  # Event Grid: the BlobCreated event goes to some instance right away
                worker = workers[next(turn) % len(workers)]
                worker.stdin.write(name + "\n")
                worker.stdin.flush()

        log(f"burst: {args.uploads} uploads over {args.products} products, {args.instances} instances x "
            f"{args.parallel} invocations, partners {args.latency_ms:g} ms + up to {args.jitter_ms:g} ms, "
            f"{'product queue' if queue else 'direct sends (no product queue)'}")
        started = time.monotonic()
        if pace is not None:
            threading.Thread(target=pacer, daemon=True).start()
        with ThreadPoolExecutor(max_workers=args.upload_threads) as pool:
            list(pool.map(upload, names))
        last_upload, last_upload_wall = time.monotonic(), time.time()
        for worker in workers:
            worker.stdin.close()
        complete_s, incomplete = None, len(expected)
        while time.monotonic() - last_upload < args.give_up_s:
            products = sandbox_state(urls["traede"])["products"]
            incomplete = sum(1 for item, files in expected.items()
                             if {i["filename"] for i in products.get(item, [])} != files)
            if incomplete == 0:
                complete_s = time.monotonic() - last_upload
                break
            time.sleep(0.25)
        # Quiet means longer than a deferred message waits (PRODUCT_SYNC_DELAY_SECONDS, 10 s); with slow answers,
        # a resend comes PRODUCT_RESEND_SECONDS after the request it repairs: wait past it.
        quiet = settle(urls, *((15.0, 180.0) if not args.slow_rate else
                               (args.resend_s + 5, args.resend_s + args.slow_ms / 1000 + 180)))
        left = leftovers(service, env, queue) if queue else {}
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        counts = []
        for worker in workers:
            out = worker.stdout.read()
            worker.wait(60)
            counts.append(json.loads(out.strip().splitlines()[-1]))
        traede, wallie = sandbox_state(urls["traede"]), sandbox_state(urls["wallie"])
        final_incomplete = sum(1 for item, files in expected.items()
                               if {i["filename"] for i in traede["products"].get(item, [])} != files)
        service.close()
    return {
        "uploads": args.uploads, "products": args.products, "instances": args.instances,
        "parallel": args.parallel, "latency_ms": args.latency_ms, "jitter_ms": args.jitter_ms,
        "path": "product queue" if queue else "direct",
        "upload_s": round(last_upload - started, 2),
        "complete_after_last_upload_s": None if complete_s is None else round(complete_s, 2),
        "incomplete_at_give_up": incomplete, "incomplete_at_end": final_incomplete,
        "traede_requests": traede["stats"]["sync_requests"],
        "traede_product_sends": traede["stats"]["products_received"],
        "traede_stale_sets": stale_sets(traede["history"]),
        "traede_stale_at_end": stale_at_end(traede["history"], blobs),
        "converged_after_last_upload_s": None if last_change(traede["history"]) is None else
        round(max(0.0, last_change(traede["history"]) - last_upload_wall), 2),
        "traede_slowed_requests": traede["stats"]["injected_slow"],
        "resend_invocations": sum(c.get("resend_invocations", 0) for c in counts),
        "traede_images_deleted": traede["stats"]["images_deleted"],
        "wallie_requests": wallie["stats"]["image_requests"],
        "wallie_token_requests": wallie["stats"]["token_requests"],
        "invocations": sum(c["invocations"] for c in counts),
        "failed_invocations": sum(c["failed_invocations"] for c in counts),
        "quiet_after_s": quiet,
        **left,
        "queue_failures": sum(c.get("queue_failures", 0) for c in counts),
        "queue_poisoned": sum(c.get("queue_poisoned", 0) for c in counts),
    }


def leftovers(service: Any, env: dict, queue: str) -> dict:
    """What the coordination still holds once quiet: pending marks and queued messages (a mark without a
    message would be a product nothing sends any more)."""
    from azure.storage.queue import QueueClient

    state = service.get_container_client(env["SYNC_STATE_CONTAINER"])
    marks = sum(1 for _ in state.list_blobs(name_starts_with="pending/"))
    with QueueClient.from_connection_string(env["IMAGES_STORAGE"], queue) as client:
        queued = client.get_queue_properties().approximate_message_count
    return {"pending_marks_at_end": marks, "queued_at_end": queued}


def settle(urls: dict, quiet_s: float = 3.0, limit_s: float = 120.0) -> float:
    """Wait until neither partner has seen a request for ``quiet_s``; returns how long that took."""
    started = time.monotonic()
    last, since = None, time.monotonic()
    while time.monotonic() - started < limit_s:
        now = (sandbox_state(urls["traede"])["stats"]["requests"], sandbox_state(urls["wallie"])["stats"]["requests"])
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.5)
    return round(time.monotonic() - started, 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    rows = [
        ("path", result["path"]),
        ("uploads", f"{args.uploads} over {args.products} products in {result['upload_s']} s "
                    f"({args.order}, {args.rate:g}/s)"),
        ("complete after last upload", f"{result['complete_after_last_upload_s']} s" if
         result["complete_after_last_upload_s"] is not None else
         f"never within {args.give_up_s:g} s ({result['incomplete_at_give_up']} products incomplete)"),
        ("incomplete at the end", str(result["incomplete_at_end"])),
        ("TRAEDE requests", f"{result['traede_requests']} ({result['traede_product_sends']} product sets, "
                            f"{result['traede_stale_sets']} stale sets applied, "
                            f"{result['traede_images_deleted']} images deleted)"),
        ("TRAEDE at the end", f"{result['traede_stale_at_end']} products without their current complete set; "
                              f"last change {result['converged_after_last_upload_s']} s after the last upload"),
        ("slow answers", f"{result['traede_slowed_requests']} requests TRAEDE sat on (up to {args.slow_ms / 1000:g} s, "
                         f"client timeout {args.http_timeout:g} s); {result['resend_invocations']} resends of "
                         f"products whose request had an unknown outcome (after {args.resend_s:g} s)"),
        ("Wallie requests", f"{result['wallie_requests']} (+{result['wallie_token_requests']} token)"),
        ("trigger invocations", f"{result['invocations']} ({result['failed_invocations']} failed and retried)"),
        ("product queue", f"{result.get('queue_failures', 0)} failed invocations, {result.get('queue_poisoned', 0)} "
                          f"poisoned; at the end {result.get('pending_marks_at_end', 0)} pending marks, "
                          f"{result.get('queued_at_end', 0)} queued messages"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
