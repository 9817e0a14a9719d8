"""The benchmark command end to end (small and fast; no timing assertions), and the fast paths it
motivated, each proven equal to the SDK path it replaces."""
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from devtools.images import jpeg
from shared.catalog.container import Catalog
from shared.catalog.layout import PathLayout
from shared.catalog.listing import parse_listing
from shared.config.settings import DEFAULT_PATH_PATTERN
from shared.storage.sas import SasSigner

REPO = Path(__file__).resolve().parent.parent
KEYS = {"images", "products", "wall_s", "floor_s", "wall_per_floor", "listing_s", "signing_s", "request_floor_s",
        "naive_wall_s", "speedup", "requests", "min_requests", "peak_rss_mb", "cpu_s", "sas_per_s", "list_per_s",
        "storage_cpu_s", "partners_cpu_s", "cpu_bound_s"}


def test_bench_smoke_run_prints_the_figures_and_sends_the_minimum_requests():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--images", "300", "--products", "60", "--latency-ms", "1",
         "--naive-sample", "20", "--in-memory", "--fan-out", "20", "--synthetic", "2000", "--repeat", "2", "--web"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert KEYS <= set(figures)
    assert (figures["images"], figures["products"]) == (300, 60)
    assert figures["requests"] == figures["min_requests"] == 1 + 1 + 6  # token, 1 Wallie batch, 6 TRAEDE
    assert any(line.startswith("speedup") for line in lines[:-1])  # the readable table
    # the verdicts kept in tags cost no request: the same partner and storage requests as WEB_IMAGES=off
    assert figures["web_requests_equal"] is True and figures["off_requests"] == figures["requests"]
    assert figures["storage_requests"] == figures["off_storage_requests"] == figures["listing_storage_requests"] >= 1
    assert all(run["web"] == {} for run in figures["runs"])  # every image had its verdict: none looked at
    fan_out = figures["fan_out"]  # 60 products in shards of 20: each shard may end with a part-full batch
    assert fan_out["shards"] == 3 and figures["min_requests"] <= fan_out["requests"] <= figures["min_requests"] + 3
    # each partner's lane has its own SYNC_CONCURRENCY workers: its floor is its own requests over them
    assert figures["lanes"] == {"wallie": {"requests": 2, "concurrency": 4, "floor_s": 0.0005},
                                "traede": {"requests": 6, "concurrency": 4, "floor_s": 0.0015}}
    assert figures["request_floor_s"] == 0.0015  # the slower lane, not all 8 requests over one lane's 4 workers
    runs = figures["runs"]
    assert figures["repeat"] == len(runs) == 2
    for run in runs:  # the floor is what it says: the slower of storage (listing + signing) and the slowest lane
        assert run["requests"] == figures["min_requests"]
        floor = max(run["listing_s"] + figures["signing_s"], figures["request_floor_s"])
        assert abs(run["floor_s"] - floor) <= 0.002
        # wall and floor are printed to 1 ms and the ratio to 0.01: the ratio of the printed figures may differ by
        # that rounding, which grows as the floor shrinks (a 30 ms floor: up to about 0.05)
        ratio = run["wall_s"] / run["floor_s"]
        assert abs(run["wall_per_floor"] - ratio) <= 0.005 + 0.0005 * (1 + ratio) / run["floor_s"]
        # the machine's bound: the CPU the sync, Azurite and the sandboxes used, spread over every core
        assert run["storage_cpu_s"] > 0 and run["partners_cpu_s"] >= 0  # 8 requests: next to nothing
        assert abs(run["cpu_bound_s"] * figures["cores"]
                   - (run["cpu_s"] + run["storage_cpu_s"] + run["partners_cpu_s"])) <= 0.01 * figures["cores"] + 0.05
    for key in ("wall_s", "listing_s", "floor_s", "peak_rss_mb", "cpu_bound_s"):  # medians, with their spread
        values = sorted(run[key] for run in runs)
        assert figures["spread"][key] == [values[0], values[-1]]
        assert abs(figures[key] - (values[0] + values[1]) / 2) <= 0.001  # the median of two: their mean
    assert figures["spread"]["wall_per_floor"][0] <= figures["wall_per_floor"] <= figures["spread"]["wall_per_floor"][1]
    assert figures["concurrency"] == 4 and any(line.startswith("floor") for line in lines[:-1])
    assert any(line.startswith("peak RSS") and "median of 2, spread" in line for line in lines[:-1])
    synthetic = figures["synthetic"]  # 2,000 generated images over 400 products: 4 Wallie + 40 TRAEDE + token
    assert (synthetic["images"], synthetic["products"], synthetic["requests"]) == (2000, 400, 4 + 40 + 1)
    assert len(synthetic["runs"]) == 2 and synthetic["spread"]["peak_rss_mb"] == sorted(
        r["peak_rss_mb"] for r in synthetic["runs"])


def test_a_child_reports_its_own_peak_memory_not_its_parents():
    """Linux carries ru_maxrss across exec from the spawning process: a parent that once held 300 MB made
    every measured child report 300 MB. The child's figure must be its own."""
    script = (
        "import subprocess, sys\n"
        "held = bytearray(300 * 2**20); held[::4096] = b'x' * len(held[::4096]); del held\n"
        "code = 'import json; from bench.child import usage; print(json.dumps(usage()))'\n"
        "print(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 5 < json.loads(result.stdout)["peak_rss_mb"] < 100  # a bare interpreter: ~10-20 MB, never 300


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
        metadata = {"ItemId": "500", "alt": "x"} if name == "stray.jpg" else None
        if name == "100/BLK/Back Shot.PNG":  # keys named like the listing's own elements
            metadata = {"Blob": "b", "NextMarker": "m", "Name": "n"}
        container.upload_blob(name, data, metadata=metadata)
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

    from shared.catalog.records import IMAGE_ID_NAMESPACE, image_id_for

    for name in NAMES + ["", "a" * 1024, "😀/front.jpg", "100/BLK/front.jpg"]:
        assert image_id_for(name) == str(uuid.uuid5(IMAGE_ID_NAMESPACE, name))


def test_listing_parser_reads_percent_encoded_names():
    xml = (b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs><Blob><Name Encoded="true">'
           b'a%01b.jpg</Name><Properties><Content-Length>3</Content-Length><Etag>0x1</Etag></Properties>'
           b'<Metadata><itemid>7</itemid></Metadata></Blob></Blobs><NextMarker>m2</NextMarker></EnumerationResults>')
    (blob,), marker = parse_listing(xml)
    assert (blob.name, blob.size, blob.etag, blob.metadata, blob.content_md5, marker) == \
        ("a\x01b.jpg", 3, "0x1", {"itemid": "7"}, None, "m2")


def test_listing_parser_reads_a_body_in_any_chunks_and_metadata_named_like_its_elements():
    xml = (b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs>'
           b'<Blob><Name>1/a.jpg</Name><Properties><Content-Length>3</Content-Length></Properties>'
           b'<Metadata><Blob>x</Blob><NextMarker>not-the-marker</NextMarker><Name>n</Name></Metadata></Blob>'
           b'<Blob><Name>1/b.jpg</Name><Properties><Content-Length>4</Content-Length></Properties>'
           b'<Metadata><NextMarker>nor-this</NextMarker></Metadata></Blob>'
           b'</Blobs><NextMarker/></EnumerationResults>')
    whole = parse_listing(xml)
    assert [(b.name, b.size, b.metadata) for b in whole[0]] == [
        ("1/a.jpg", 3, {"Blob": "x", "NextMarker": "not-the-marker", "Name": "n"}),
        ("1/b.jpg", 4, {"NextMarker": "nor-this"})]
    assert whole[1] is None  # the last page, whatever the blobs' metadata says
    for size in (1, 7, 64):
        assert parse_listing(xml[i:i + size] for i in range(0, len(xml), size)) == whole


def test_a_page_of_large_blobs_asks_for_fewer_blobs_next():
    from shared.catalog.listing import PAGE_BYTES, ListedBlob, blob_bytes, next_page_size

    small = [ListedBlob(f"{i}/front.jpg", 10) for i in range(5000)]
    assert next_page_size(small, 5000) == 5000  # the usual catalog: the service maximum
    large = [ListedBlob(f"{i}/front.jpg", 10, {f"k{k}": "v" * 250 for k in range(30)}) for i in range(50)]
    fewer = next_page_size(large, 5000)
    assert fewer < 5000 and fewer * blob_bytes(large[0]) <= PAGE_BYTES < (fewer + 1) * blob_bytes(large[0])
    assert next_page_size([], 5000) == 5000


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


def test_history_bench_prints_requests_and_times_before_and_after_the_index():
    """``python -m bench.history``: the newest run by a whole day's listing, then through ``index/latest``
    (small; the request counts are exact, no timing asserted)."""
    result = subprocess.run([sys.executable, "-m", "bench.history", "--runs", "240", "--repeat", "2"], cwd=REPO,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["runs"] == 240 and figures["repeat"] == 2
    assert figures["before_latest"]["requests"] == 1  # 240 reports: one page of the day's listing...
    assert figures["before_latest"]["kb"] > 5 * figures["after_runs_20"]["kb"] > 0  # ...with all 240 runs in it
    assert figures["after_latest"]["requests"] == figures["after_latest_repaired"]["requests"] == 2
    assert figures["after_latest_repair"]["requests"] == 4  # pointer missing, the day's hours, the newest hour, PUT
    assert figures["after_runs_20"]["requests"] == 1 + 2 + 1  # the day's hours, the two newest (10 runs each), pointer
    for key in ("before_latest", "after_latest", "after_show_latest", "after_runs_20", "after_latest_repair"):
        assert figures[key]["s"] > 0 and figures[key]["spread_s"][0] <= figures[key]["s"] <= figures[key]["spread_s"][1]


def test_bench_renditions_converts_20_megapixel_tiffs_in_a_fresh_process():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--renditions", "2", "--renditions-only", "--repeat", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    made = json.loads(result.stdout.strip().splitlines()[-1])["renditions"]
    assert (made["images"], made["pixels"], made["repeat"]) == (2, "5472x3648", 1)
    run = made["runs"][0]
    assert run["converted"] == 2 and run["web"] == {"checked": 2, "converted": 2, "renditions": 2}
    assert abs(made["renditions_per_s"] - 2 / run["wall_s"]) <= 0.01 and made["peak_rss_mb"] > 50
    assert 0 < made["rendition_kb"] < made["tiff_mb"] * 1024  # a JPEG of at most 3000 px, not the master
