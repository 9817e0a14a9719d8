"""The benchmark command end to end (small and fast; no timing assertions), and the fast paths it
motivated, each proven equal to the SDK path it replaces."""
import json
import subprocess
import sys
from datetime import datetime, timedelta, UTC
from pathlib import Path
from urllib.parse import quote

import pytest

from devtools.images import jpeg
from shared.catalog.container import Catalog
from shared.catalog.listing import parse_listing
from shared.catalog.layout import PathLayout
from shared.storage.sas import SasSigner
from shared.config.settings import DEFAULT_PATH_PATTERN

REPO = Path(__file__).resolve().parent.parent
KEYS = {"images", "products", "wall_s", "floor_s", "wall_per_floor", "listing_s", "signing_s", "request_floor_s",
        "naive_wall_s", "speedup", "requests", "min_requests", "peak_rss_mb", "cpu_s", "sas_per_s", "list_per_s",
        "storage_cpu_s", "partners_cpu_s", "cpu_bound_s"}


def test_bench_smoke_run_prints_the_figures_and_sends_the_minimum_requests():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--images", "300", "--products", "60", "--latency-ms", "1",
         "--naive-sample", "20", "--in-memory", "--fan-out", "20", "--synthetic", "2000"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert KEYS <= set(figures)
    assert (figures["images"], figures["products"]) == (300, 60)
    assert figures["requests"] == figures["min_requests"] == 1 + 1 + 6  # token, 1 Wallie batch, 6 TRAEDE
    assert any(line.startswith("speedup") for line in lines[:-1])  # the readable table
    fan_out = figures["fan_out"]  # 60 products in shards of 20: each shard may end with a part-full batch
    assert fan_out["shards"] == 3 and figures["min_requests"] <= fan_out["requests"] <= figures["min_requests"] + 3
    # the floor is what it says: the slower of storage (listing + signing) and the partners' minimum requests
    floor = max(figures["listing_s"] + figures["signing_s"], figures["request_floor_s"])
    assert abs(figures["floor_s"] - floor) <= 0.002
    # wall_per_floor is rounded to 0.01; floor_s (to 0.001) is tiny in a smoke run, so allow for its rounding
    ratio = figures["wall_s"] / figures["floor_s"]
    assert abs(figures["wall_per_floor"] - ratio) <= 0.006 + ratio * 0.0006 / figures["floor_s"]
    # the machine's bound: the CPU the sync, Azurite and the sandboxes used, spread over every core
    assert figures["storage_cpu_s"] > 0 and figures["partners_cpu_s"] >= 0  # 8 requests: next to nothing
    assert abs(figures["cpu_bound_s"] * figures["cores"]
               - (figures["cpu_s"] + figures["storage_cpu_s"] + figures["partners_cpu_s"])) <= 0.01 * figures["cores"] + 0.05
    assert figures["concurrency"] == 4 and any(line.startswith("floor") for line in lines[:-1])
    synthetic = figures["synthetic"]  # 2,000 generated images over 400 products: 4 Wallie + 40 TRAEDE + token
    assert (synthetic["images"], synthetic["products"], synthetic["requests"]) == (2000, 400, 4 + 40 + 1)


def test_burst_bench_smoke_run_reports_no_stale_set():
    result = subprocess.run(
        [sys.executable, "-m", "bench.burst", "--uploads", "60", "--products", "6", "--latency-ms", "1",
         "--jitter-ms", "10", "--instances", "2", "--parallel", "2", "--rate", "0", "--give-up-s", "60"],
        cwd=REPO, capture_output=True, text=True, timeout=240, env={**__import__("os").environ,
                                                                   "PRODUCT_SYNC_DELAY_SECONDS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["path"] == "product queue" and figures["incomplete_at_end"] == 0
    assert figures["traede_stale_sets"] == 0 and figures["traede_product_sends"] >= 6


NAMES = ["100/BLK/front.jpg", "100/BLK/Back Shot.PNG", "100-a/x.jpg", "200/ünï cødé #1 (50%).jpg",
         "200/a+b=c&d.jpg", "300/notes.txt", "300/.DS_Store", "300/empty.jpg", "stray.jpg", "400/tab\tname.jpg"]


@pytest.fixture
def varied(container):
    for name in NAMES:
        data = b"" if name.endswith("empty.jpg") else jpeg(note=name)
        container.upload_blob(name, data, metadata={"ItemId": "500", "alt": "x"} if name == "stray.jpg" else None)
    return container


def test_raw_listing_describes_every_blob_exactly_as_the_sdk_listing(varied):
    fast_catalog = Catalog(varied, PathLayout(DEFAULT_PATH_PATTERN), page_size=3)
    sdk_catalog = Catalog(varied, PathLayout(DEFAULT_PATH_PATTERN), page_size=3, raw_listing=False)
    assert fast_catalog.listing.raw and not sdk_catalog.listing.raw
    fast, slow = ((list(c.scan()), c.product("200"), list(c.scan(prefix="200/ünï")))
                  for c in (fast_catalog, sdk_catalog))
    assert fast == slow and len(fast[0]) == len(NAMES) and len(fast[1][0]) == 2 and len(fast[2]) == 1


def test_image_ids_are_still_uuid5_of_the_blob_name():
    import uuid

    from shared.catalog.container import IMAGE_ID_NAMESPACE, image_id_for

    for name in NAMES + ["", "a" * 1024, "😀/front.jpg", "100/BLK/front.jpg"]:
        assert image_id_for(name) == str(uuid.uuid5(IMAGE_ID_NAMESPACE, name))


def test_listing_parser_reads_percent_encoded_names():
    xml = (b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs><Blob><Name Encoded="true">'
           b'a%01b.jpg</Name><Properties><Content-Length>3</Content-Length><Etag>0x1</Etag></Properties>'
           b'<Metadata><itemid>7</itemid></Metadata></Blob></Blobs><NextMarker>m2</NextMarker></EnumerationResults>')
    (blob,), marker = parse_listing(xml)
    assert (blob.name, blob.size, blob.etag, blob.metadata, blob.content_md5, marker) == \
        ("a\x01b.jpg", 3, "0x1", {"itemid": "7"}, None, "m2")


def test_fast_sas_is_the_sdk_sas_byte_for_byte(blob_service):
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    now = datetime(2026, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    ttl, skew = timedelta(hours=48), timedelta(minutes=15)
    signer = SasSigner(blob_service, "imgs", ttl=ttl, start_skew=skew, clock=lambda: now)
    for name in NAMES:
        token = generate_blob_sas(blob_service.account_name, "imgs", name, account_key=signer._account_key,
                                  permission=BlobSasPermissions(read=True), start=now - skew, expiry=now + ttl)
        assert signer.url(name).split("?", 1)[1] == token, name
        assert signer.url(name).split("?", 1)[0].endswith("/imgs/" + quote(name, safe="/~"))
    assert signer._fast  # the template path served these


def test_sas_urls_stay_valid_across_seconds_and_open_the_blob(varied, blob_service):
    import urllib.request

    ticks = iter([datetime.now(UTC) + timedelta(seconds=s) for s in (0, 0, 1, 1, 2)])
    signer = SasSigner(blob_service, varied.container_name, ttl=timedelta(hours=1),
                       start_skew=timedelta(minutes=15), clock=lambda: next(ticks))
    urls = [signer.url("100/BLK/front.jpg") for _ in range(5)]
    assert len(set(urls)) == 3  # a new template each second
    for url in urls:
        with urllib.request.urlopen(url) as response:  # Azurite checks the signature for real
            assert response.read() == jpeg(note="100/BLK/front.jpg")


def test_redaction_bench_prints_its_figures():
    """``python -m bench.redaction``: the cost of the signature net, on and off (small; no timing asserted)."""
    result = subprocess.run([sys.executable, "-m", "bench.redaction", "--urls", "2000", "--rounds", "50",
                             "--probes", "200"], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"signing_off_s", "signing_on_s", "history_off_s", "history_on_s", "redact_us", "filter_mb",
            "false_positives"} <= set(figures)
    assert figures["urls"] == 2000 and len(figures["redact_us"]) == 3
    assert 0 <= figures["false_positives"] <= figures["probes"]
