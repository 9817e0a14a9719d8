"""Benchmark: ``python -m bench --images 100000 --products 20000 --latency-ms 20``.

Seeds (or reuses) a synthetic catalog in Azurite, starts the partner sandboxes in their own process with
injected latency, then ``--repeat`` times (default 3), each in a fresh process (its CPU and peak RSS are
the app's own), interleaved so that both see Azurite in the same state:

1. the listing alone (every page fetched and parsed): with the SAS signing time, the floor's storage half;
2. the full sync at the app's default ``SYNC_CONCURRENCY`` (4; ``--concurrency`` to compare, labelled).

Then once, the naive baseline: the same real listing, plus one request per image and per product one after
another (timed on a sample of whole products, scaled per request kind; the listing is not scaled).

The floor is the larger of (listing + signing) and the slowest partner lane's (its minimum requests x
latency / its concurrency: each partner has a lane of ``SYNC_CONCURRENCY`` workers): the sync can beat
neither storage nor a partner. Beside it, the CPU bound: what the sync, Azurite and the sandboxes used,
over this machine's cores. Each figure is reported as the median of the runs and its spread (min-max).
``--synthetic IMAGES`` also pushes a generated listing of that many images through the real engine
without storage, for CPU and memory at a scale Azurite cannot hold. Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.figures import floor_s, lane_floors, median_and_spread, spread_text, summarize

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "bench" / ".cache" / "azurite"
WALLIE = {"tenant": "TENANT", "username": "wallie-user", "password": "wallie-pass"}
TRAEDE = {"access_token": "traede-token", "app_key": "traede-app-key"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--products", type=int, default=20_000)
    p.add_argument("--latency-ms", type=float, default=20.0, help="injected partner latency per request")
    p.add_argument("--concurrency", type=int, default=4,
                   help="SYNC_CONCURRENCY for the full sync (default 4: the app's default)")
    p.add_argument("--batch-size", type=int, default=500, help="WALLIE_BATCH_SIZE")
    p.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="run the listing alone and the full sync N times, interleaved; report medians and spread")
    p.add_argument("--naive-sample", type=int, default=300,
                   help="images in the naive baseline's sample (0: no naive baseline, e.g. at slow latencies)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                   help="Azurite's persistent folder (the catalog is reused from here)")
    p.add_argument("--in-memory", action="store_true", help="a throwaway Azurite (nothing reused)")
    p.add_argument("--ledger", action="store_true",
                   help="the full and synthetic syncs keep the report's ledger, as the timer's run history does")
    p.add_argument("--profile", type=Path, help="write a pyinstrument profile of the full sync here")
    p.add_argument("--fan-out", type=int, metavar="PRODUCTS",
                   help="also time the fan-out path with SYNC_SHARD_PRODUCTS=PRODUCTS (plan, then each shard)")
    p.add_argument("--synthetic", type=int, metavar="IMAGES",
                   help="also sync a generated listing of IMAGES images (same images per product), no storage")
    p.add_argument("--synthetic-only", action="store_true",
                   help="only the synthetic run (no Azurite, no catalog): needs --synthetic")
    p.add_argument("--web", action="store_true",
                   help="each run also syncs with WEB_IMAGES=off: requests and time with the verdicts kept "
                        "(the default, convert) against without (off, as before web-ready images)")
    p.add_argument("--renditions", type=int, metavar="IMAGES",
                   help="also convert IMAGES 20 MP TIFFs with the web stage: renditions per second, peak RSS")
    p.add_argument("--renditions-only", action="store_true",
                   help="only the renditions run (a throwaway Azurite, no catalog): needs --renditions")
    args = p.parse_args(argv)
    if args.synthetic_only and not args.synthetic:
        p.error("--synthetic-only needs --synthetic IMAGES")
    if args.renditions_only and not args.renditions:
        p.error("--renditions-only needs --renditions IMAGES")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if not (1 <= args.products <= args.images):
        p.error("expected 1 <= --products <= --images")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Sandboxes:
    """``python -m devtools.sandboxes`` in its own process: its CPU is not our client's."""

    def __init__(self, latency_ms: float, extra_args: list[str] | None = None):
        self.latency_ms = latency_ms
        self.extra_args = list(extra_args or ())
        self.ready = Path(tempfile.mkdtemp(prefix="bench-")) / "ready.json"

    def __enter__(self) -> dict:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devtools.sandboxes", "--wallie-port", "0", "--traede-port", "0",
             "--latency-ms", str(self.latency_ms), "--no-download", "--ready-file", str(self.ready),
             *self.extra_args],
            cwd=REPO, stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the partner sandboxes did not start")
            time.sleep(0.05)
        return json.loads(self.ready.read_text())

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sync_env(conn: str, container: str, urls: dict, args: argparse.Namespace) -> dict:
    return {
        "IMAGES_STORAGE": conn, "IMAGES_CONTAINER": container,
        "WALLIE_BASE_URL": urls["wallie"], "WALLIE_TENANT": WALLIE["tenant"],
        "WALLIE_USERNAME": WALLIE["username"], "WALLIE_PASSWORD": WALLIE["password"],
        "WALLIE_BATCH_SIZE": str(args.batch_size),
        "TRAEDE_BASE_URL": urls["traede"], "TRAEDE_ACCESS_TOKEN": TRAEDE["access_token"],
        "TRAEDE_APP_KEY": TRAEDE["app_key"], "SYNC_CONCURRENCY": str(args.concurrency),
    }


def run_child(env: dict, options: list[str]) -> dict:
    """``bench.child`` with ``options`` in a fresh process; its JSON line."""
    cmd = [sys.executable, "-m", "bench.child", *options]
    child_env = {k: v for k, v in os.environ.items()
                 if not k.startswith(("IMAGES_", "WALLIE_", "TRAEDE_", "SYNC_", "HTTP_", "SAS_"))}
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, env={**child_env, **env}, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the full sync failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["process_s"] = round(time.perf_counter() - started, 3)
    return out


def measure_sas(parts, count: int = 20_000) -> float:
    names = [f"{100000 + i}/BLK/front-{i}.jpg" for i in range(count)]
    started = time.perf_counter()
    for name in names:
        parts.storage.signer.url(name)
    return count / (time.perf_counter() - started)


def measure_listing(parts, limit: int = 20_000) -> float:
    """Blobs per second through Catalog (list + parse + describe), over the first ``limit`` blobs."""
    started, count = time.perf_counter(), 0
    for _ in parts.catalog.scan():
        count += 1
        if count >= limit:
            break
    return count / (time.perf_counter() - started)


def run_naive(parts, env: dict, sample_images: int, images: int, products: int, listing_s: float) -> dict:
    """One Wallie request per image and one TRAEDE request per product, serially, on a sample of whole
    products; the request times scaled to the catalog per request kind, plus one real listing of the whole
    container (``listing_s``, measured, not scaled from a page)."""
    from shared.catalog.records import ImageRecord, SignedImage
    from shared.config.settings import Settings
    from shared.partners.payloads import traede_product, wallie_record
    from shared.partners.traede import TraedeClient
    from shared.partners.wallie import WallieClient

    settings = Settings.from_env(env)
    wallie = WallieClient.from_settings(settings.wallie, settings.http, pool_size=1)
    traede = TraedeClient.from_settings(settings.traede, settings.http, pool_size=1)
    per_product = images / products
    want_products = max(1, min(products, round(sample_images / per_product)))
    by_item: dict[str, list[ImageRecord]] = {}
    for entry in parts.catalog.scan():
        if isinstance(entry, ImageRecord):
            if entry.item_id not in by_item and len(by_item) == want_products:
                break
            by_item.setdefault(entry.item_id, []).append(entry)
    try:
        wallie._valid_token()
        started = time.perf_counter()
        signed: dict[str, list[SignedImage]] = {}
        for item, records in by_item.items():
            for record in records:
                image = SignedImage(record, parts.storage.signer.url(record.blob_name))
                signed.setdefault(item, []).append(image)
                wallie.send_images([wallie_record(image)])
        wallie_s = time.perf_counter() - started
        started = time.perf_counter()
        for item, product_images in signed.items():
            traede.sync_products([traede_product(item, product_images).body])
        traede_s = time.perf_counter() - started
    finally:
        wallie.close()
        traede.close()
    sample_images_n = sum(len(v) for v in by_item.values())
    per_image, per_product_s = wallie_s / sample_images_n, traede_s / len(by_item)
    scaled = listing_s + per_image * images + per_product_s * products
    return {"sample_images": sample_images_n, "sample_products": len(by_item), "per_image_ms": per_image * 1000,
            "per_product_ms": per_product_s * 1000, "naive_wall_s": scaled,
            "naive_requests": images + products + 1}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    log(f"bench: {args.images} images over {args.products} products, partner latency {args.latency_ms:g} ms, "
        f"SYNC_CONCURRENCY={args.concurrency}, {os.cpu_count()} cores")
    only = args.synthetic_only or args.renditions_only
    result, rows = ({}, []) if only else run_catalog(args)
    if args.renditions:
        from bench.renditions import run_renditions

        made = result["renditions"] = run_renditions(args, log)
        rows.append(("renditions", f"{made['images']} TIFFs of {made['pixels']} ({made['tiff_mb']:.0f} MB each), "
                                   f"median of {args.repeat}: {made['renditions_per_s']:.2f} renditions/s "
                                   f"({spread_text(made['spread'], 'renditions_per_s', '/s', '.2f')}), peak RSS "
                                   f"{made['peak_rss_mb']:.0f} MB "
                                   f"({spread_text(made['spread'], 'peak_rss_mb', ' MB', '.0f')}), "
                                   f"{made['cpu_s']:.1f} s CPU, renditions of {made['rendition_kb']:.0f} KB"))
    if args.synthetic and not args.renditions_only:
        synthetic = run_synthetic(args)
        result["synthetic"] = synthetic
        spread = synthetic["spread"]
        rows.append(("synthetic", f"{synthetic['images']:,} generated images / {synthetic['products']:,} products "
                                  f"(no storage), median of {args.repeat}: {synthetic['wall_s']:.1f} s "
                                  f"({spread_text(spread, 'wall_s')}), {synthetic['cpu_s']:.1f} s CPU, peak RSS "
                                  f"{synthetic['peak_rss_mb']:.0f} MB "
                                  f"({spread_text(spread, 'peak_rss_mb', ' MB', '.0f')}), "
                                  f"{synthetic['requests']:,} requests"))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(json.dumps(result))
    return 0


def run_catalog(args: argparse.Namespace) -> tuple[dict, list]:
    from azure.storage.blob import BlobServiceClient

    from bench.storage import ensure_catalog
    from devtools.azurite import Azurite
    from shared.app.factory import Components
    from shared.config.settings import Settings

    with Azurite(persist_dir=None if args.in_memory else args.data_dir, extra_args=("--loose",)) as azurite:
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        container, reused, seed_s = ensure_catalog(service, args.images, args.products, log=log)
        service.close()
        log(f"catalog {container}: {'reused' if reused else f'seeded in {seed_s:.1f}s'}")
        sandboxes = Sandboxes(args.latency_ms)
        with sandboxes as urls:
            env = sync_env(azurite.connection_string, container, urls, args)
            with Components(Settings.from_env(env)) as parts:
                sas_per_s = measure_sas(parts)
            signing_s = args.images / sas_per_s
            helpers = [azurite.process.pid, sandboxes.process.pid]  # type: ignore[union-attr]
            runs = []
            for n in range(1, args.repeat + 1):
                # Interleaved, each in a fresh process: Azurite's speed drifts as it warms, and the floor's
                # listing must be measured under the same conditions as the sync it is compared with.
                log(f"run {n}/{args.repeat}: the listing alone (fresh process)...")
                listing = run_child(env, ["--listing-only"])
                log(f"run {n}/{args.repeat}: listing {listing['listing_s']:.1f}s; full sync (fresh process)...")
                before = [process_cpu_s(pid) for pid in helpers]
                profile = ["--profile", str(args.profile)] if args.profile and n == args.repeat else []
                full = run_child(env, profile + (["--ledger"] if args.ledger else []))
                storage_cpu, partner_cpu = (process_cpu_s(pid) - b for pid, b in zip(helpers, before, strict=True))
                if not full["ok"] or full["images"] != args.images:
                    raise RuntimeError(f"the full sync did not deliver everything: {full}")
                if full["web"].get("checked") or full["web"].get("unchecked"):  # seeded with every verdict kept
                    raise RuntimeError(f"the sync looked at images it should have had verdicts on: {full['web']}")
                runs.append(one_run(args, listing, full, signing_s, storage_cpu, partner_cpu))
                if args.web:  # the same night as before web-ready images: no tags listed, nothing checked
                    log(f"run {n}/{args.repeat}: full sync with WEB_IMAGES=off (fresh process)...")
                    off = run_child({**env, "WEB_IMAGES": "off"}, ["--ledger"] if args.ledger else [])
                    if not off["ok"] or off["images"] != args.images:
                        raise RuntimeError(f"the full sync (WEB_IMAGES=off) did not deliver everything: {off}")
                    runs[-1].update({"off_wall_s": off["wall_s"], "off_requests": off["requests"],
                                     "off_storage_requests": off["storage_requests"],
                                     "off_peak_rss_mb": off["peak_rss_mb"], "off_cpu_s": off["cpu_s"]})
                log(f"run {n}/{args.repeat}: full sync {full['wall_s']:.1f}s, {runs[-1]['wall_per_floor']} x floor, "
                    f"peak RSS {full['peak_rss_mb']:.0f} MB")
            fanned = None
            if args.fan_out:
                log(f"fan-out with SYNC_SHARD_PRODUCTS={args.fan_out}...")
                fanned = run_child({**env, "SYNC_SHARD_PRODUCTS": str(args.fan_out),
                                    "SYNC_SHARD_QUEUE": f"bench-shards-{os.getpid()}"}, ["--fan-out"])
                if not fanned["ok"] or fanned["images"] != args.images:
                    raise RuntimeError(f"the fan-out did not deliver everything: {fanned}")
            with Components(Settings.from_env(env)) as parts:
                list_per_s = measure_listing(parts)
                listing_median = median_and_spread(r["listing_s"] for r in runs)[0]
                naive = None
                if args.naive_sample:
                    log("naive baseline on a sample...")
                    naive = run_naive(parts, env, args.naive_sample, args.images, args.products, listing_median)
    lanes = lane_floors(args.images, args.products, batch_size=args.batch_size, latency_ms=args.latency_ms,
                        concurrency=args.concurrency)
    medians, spread = summarize(runs, RUN_KEYS + (WEB_KEYS if args.web else ()))
    last = runs[-1]
    result = {
        "images": args.images, "products": args.products, "latency_ms": args.latency_ms,
        "cores": os.cpu_count(), "concurrency": args.concurrency, "repeat": args.repeat, "ledger": args.ledger,
        **medians, "wall_per_floor": round(medians["wall_per_floor"], 2),
        "signing_s": round(signing_s, 3), "request_floor_s": max(lane["floor_s"] for lane in lanes.values()),
        "lanes": lanes,
        "naive_wall_s": round(naive["naive_wall_s"], 1) if naive else None,
        "speedup": round(naive["naive_wall_s"] / medians["wall_s"], 1) if naive else None,
        "requests": last["requests"], "storage_requests": last["storage_requests"],
        "listing_storage_requests": last["listing_storage_requests"], "web_off_compared": args.web,
        "min_requests": sum(int(lane["requests"]) for lane in lanes.values()),
        "retries": max(r["retries"] for r in runs), "naive_requests": args.images + args.products + 1,
        "sas_per_s": round(sas_per_s), "list_per_s": round(list_per_s),
        "naive_sample_images": naive["sample_images"] if naive else 0, "catalog_reused": reused,
        "seed_s": round(seed_s, 1),
        "spread": spread, "runs": runs,
    }
    if any(r["requests"] != last["requests"] for r in runs):
        result["requests_per_run"] = [r["requests"] for r in runs]
    default = " (the app's default)" if args.concurrency == 4 else " (NOT the app's default of 4)"
    wallie, traede = lanes["wallie"], lanes["traede"]
    of = f"median of {args.repeat}, spread" if args.repeat > 1 else "one run:"
    rows = [
        ("catalog", f"{args.images} images / {args.products} products ({'reused' if reused else 'seeded'})"),
        ("partner latency", f"{args.latency_ms:g} ms per request (sandboxes in their own process)"),
        ("runs", f"{args.repeat} x (the listing alone, then the full sync), each in a fresh process"),
        ("listing alone", f"{medians['listing_s']:.1f} s  ({of} {spread_text(spread, 'listing_s')}; every page "
                          "fetched and parsed)"),
        ("lane floors", f"Wallie {wallie['requests']} requests x {args.latency_ms:g} ms / {args.concurrency} = "
                        f"{wallie['floor_s']:.1f} s; TRAEDE {traede['requests']} x {args.latency_ms:g} ms / "
                        f"{args.concurrency} = {traede['floor_s']:.1f} s"),
        ("floor", f"{medians['floor_s']:.1f} s  ({of} {spread_text(spread, 'floor_s')}) = max(listing + signing "
                  f"{signing_s:.1f} s, slowest lane {result['request_floor_s']:.1f} s)"),
        ("CPU bound", f"{medians['cpu_bound_s']:.1f} s  ({of} {spread_text(spread, 'cpu_bound_s')}): the CPU the "
                      f"sync, Azurite and the sandboxes used, over {os.cpu_count()} cores (this machine's own bound)"),
        ("full sync wall", f"{medians['wall_s']:.1f} s  ({of} {spread_text(spread, 'wall_s')}; SYNC_CONCURRENCY="
                           f"{args.concurrency}{default})"),
        ("wall / floor", f"{result['wall_per_floor']}  ({of} {spread_text(spread, 'wall_per_floor', '', '.2f')})"),
        ("CPU during sync", f"sync {medians['cpu_s']:.1f} s + Azurite {medians['storage_cpu_s']:.1f} s + sandboxes "
                            f"{medians['partners_cpu_s']:.1f} s (medians)"),
        ("requests", f"{last['requests']}  (minimum {result['min_requests']}; retries {result['retries']})"),
        ("storage requests", f"{last['storage_requests']}  (the listing alone: {last['listing_storage_requests']})"),
        ("peak RSS", f"{medians['peak_rss_mb']:.0f} MB  ({of} {spread_text(spread, 'peak_rss_mb', ' MB', '.0f')}; "
                     "sync process)"),
    ]
    if args.web:
        result["off_requests"], result["off_storage_requests"] = last["off_requests"], last["off_storage_requests"]
        same = all(r["requests"] == r["off_requests"] and r["storage_requests"] == r["off_storage_requests"]
                   for r in runs)
        result["web_requests_equal"] = same
        rows += [
            ("WEB_IMAGES=off", f"{medians['off_wall_s']:.1f} s  ({of} {spread_text(spread, 'off_wall_s')}), "
                               f"{last['off_requests']} partner + {last['off_storage_requests']} storage requests, "
                               f"peak RSS {medians['off_peak_rss_mb']:.0f} MB"),
            ("verdicts kept", f"{medians['wall_s']:.1f} s (WEB_IMAGES=convert, every verdict in its tag), "
                              f"{last['requests']} partner + {last['storage_requests']} storage requests: "
                              f"{'the same requests' if same else 'NOT the same requests'} in every run"),
        ]
    if naive:
        rows += [
            ("naive baseline", f"{naive['naive_wall_s']:.0f} s  (the real listing, plus {naive['per_image_ms']:.1f} "
                               f"ms/image and {naive['per_product_ms']:.1f} ms/product timed on "
                               f"{naive['sample_images']} images, one request after another)"),
            ("speedup", f"{result['speedup']}x (median wall)"),
        ]
    rows += [
        ("SAS signing", f"{sas_per_s:,.0f} URLs/s"),
        ("listing", f"{list_per_s:,.0f} blobs/s (list + parse + describe)"),
    ]
    if fanned:
        result["fan_out"] = {k: fanned[k] for k in ("shards", "plan_s", "shard_max_s", "shard_sum_s", "requests",
                                                     "peak_rss_mb")}
        rows.append(("fan-out", f"{fanned['shards']} shards of {args.fan_out} products: "
                                f"timer {fanned['plan_s']:.1f} s, slowest shard {fanned['shard_max_s']:.1f} s, "
                                f"all shards {fanned['shard_sum_s']:.1f} s "
                                f"one after another, {fanned['requests']} requests"))
    return result, rows


# Measured per run; the JSON line carries each one's median, and its [min, max] under "spread".
RUN_KEYS = ("wall_s", "listing_s", "floor_s", "wall_per_floor", "peak_rss_mb", "listing_peak_rss_mb", "cpu_s",
            "storage_cpu_s", "partners_cpu_s", "cpu_bound_s")


def one_run(args: argparse.Namespace, listing: dict, full: dict, signing_s: float, storage_cpu: float,
            partner_cpu: float) -> dict:
    lanes = lane_floors(args.images, args.products, batch_size=args.batch_size, latency_ms=args.latency_ms,
                        concurrency=args.concurrency)
    floor = floor_s(listing["listing_s"], signing_s, lanes)
    return {
        "wall_s": full["wall_s"], "listing_s": listing["listing_s"], "floor_s": round(floor, 3),
        "wall_per_floor": round(full["wall_s"] / floor, 3), "peak_rss_mb": full["peak_rss_mb"],
        "listing_peak_rss_mb": listing["peak_rss_mb"], "cpu_s": full["cpu_s"],
        "storage_cpu_s": round(storage_cpu, 2), "partners_cpu_s": round(partner_cpu, 2),
        "cpu_bound_s": round((full["cpu_s"] + storage_cpu + partner_cpu) / (os.cpu_count() or 1), 2),
        "requests": full["requests"], "retries": full["retries"], "storage_requests": full["storage_requests"],
        "listing_storage_requests": listing["storage_requests"], "web": full["web"],
    }


WEB_KEYS = ("off_wall_s", "off_peak_rss_mb", "off_cpu_s")  # --web: the same night with WEB_IMAGES=off
SYNTHETIC_KEYS = ("wall_s", "cpu_s", "peak_rss_mb")


def run_synthetic(args: argparse.Namespace) -> dict:
    """A generated listing through the real engine and the real partner clients, against the sandboxes,
    ``--repeat`` times (each in a fresh process)."""
    products = max(1, round(args.synthetic * args.products / args.images))
    runs = []
    with Sandboxes(args.latency_ms) as urls:
        env = sync_env("UseDevelopmentStorage=true", "synthetic", urls, args)
        for n in range(1, args.repeat + 1):
            log(f"synthetic run {n}/{args.repeat}: {args.synthetic} generated images over {products} products "
                "(no storage)...")
            ledger = ["--ledger"] if args.ledger else []
            out = run_child(env, ["--synthetic", str(args.synthetic), str(products), *ledger])
            if not out["ok"] or out["images"] != args.synthetic:
                raise RuntimeError(f"the synthetic sync did not deliver everything: {out}")
            runs.append(out)
    medians, spread = summarize(runs, SYNTHETIC_KEYS)
    last = runs[-1]
    return {"images": last["images"], "products": last["products"], "requests": last["requests"],
            "retries": max(r["retries"] for r in runs), "pages": last["pages"], "repeat": args.repeat,
            **medians, "spread": spread, "runs": runs}


if __name__ == "__main__":
    sys.exit(main())
