"""Web-ready images, end to end: real files made here (TIFF, BMP, CMYK JPEG, HEIC, a PNG named .jpg, a
cut-off JPEG, a 12,000 px image, untyped blobs) in real Azurite, synced to the sandboxes, which download
what they are sent and check that a browser would show it (the decoded bytes and the Content-Type)."""
from __future__ import annotations

import io
import json
import uuid

import pytest
from PIL import Image

from shared.app.cli import main as cli_main
from shared.catalog.records import image_id_for
from shared.catalog.web import TAG, Verdict, WebPolicy
from tests.storage_proxy import StorageProxy


def picture(fmt, size=(320, 240), mode="RGB", **options):
    """A real image with some detail (a gradient), so a cut-off file is cut inside its pixel data."""
    image = Image.linear_gradient("L").resize(size)
    if mode != "L":
        image = Image.merge("RGB", (image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image)).convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def heic(size=(320, 240)):
    import pillow_heif

    pillow_heif.register_heif_opener()
    return picture("HEIF", size)


JPEG_TYPE = {"content_type": "image/jpeg"}
# name -> (bytes, stored Content-Type, what the partners must get: "original", "rendition" or "skipped")
CASES = {
    "900/BLK/front.jpg": (lambda: picture("JPEG"), "image/jpeg", "original"),
    "900/BLK/untyped.jpg": (lambda: picture("JPEG"), None, "original"),              # octet-stream
    "900/BLK/png-named.jpg": (lambda: picture("PNG"), "image/jpeg", "original"),      # PNG bytes, .jpg name
    "900/BLK/scan.tif": (lambda: picture("TIFF", (640, 480)), "image/tiff", "rendition"),
    "900/WHT/old.bmp": (lambda: picture("BMP"), None, "rendition"),
    "900/WHT/print.jpg": (lambda: picture("JPEG", mode="CMYK"), "image/jpeg", "rendition"),
    "900/WHT/phone.jpg": (heic, "image/jpeg", "rendition"),                           # HEIC saved as .jpg
    "901/panorama.jpg": (lambda: picture("JPEG", (12000, 400)), "image/jpeg", "rendition"),
    "901/cut.jpg": (lambda: picture("JPEG", (800, 600), quality=95)[:9000], "image/jpeg", "skipped"),
    "901/notes.jpg": (lambda: b"not a picture at all, just text named .jpg" * 20, None, "skipped"),
}


@pytest.fixture
def web_env(sync_env):
    return {**sync_env, "RENDITIONS_CONTAINER": f"renditions-{uuid.uuid4().hex[:12]}", "RUN_HISTORY_CONTAINER": ""}


def upload(container, cases=CASES):
    from azure.storage.blob import ContentSettings

    stored = {}
    for name, (make, content_type, _) in cases.items():
        data = make()
        settings = ContentSettings(content_type=content_type) if content_type else None
        container.upload_blob(name, data, content_settings=settings, overwrite=True)
        stored[name] = data
    return stored


def sync(env, *args):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["sync", *args], env=env, stdout=out, stderr=err)
    return code, err.getvalue()


def traede_images(traede):
    """blob name (from the image id in the key) -> the image TRAEDE holds and what it downloaded for it."""
    out = {}
    for item, images in traede.products.items():
        for image in images:
            out[image["existance_key"].split(":")[0]] = (image, traede.downloaded[item].get(image["key"]))
    return out


def test_every_kind_of_upload_reaches_both_partners_as_an_image_a_browser_shows(
        container, web_env, wallie, traede, blob_service, tmp_path):
    stored = upload(container)
    etags = {b.name: b.etag for b in container.list_blobs()}
    code, err = sync(web_env, "--report", str(tmp_path / "r.json"))
    assert code == 0, err
    got = traede_images(traede)
    for name, (_, _, expected) in CASES.items():
        image_id = image_id_for(name)
        if expected == "skipped":
            assert image_id not in got and image_id not in wallie.images, name
            continue
        image, download = got[image_id]
        assert download["web_image"] is True, (name, download)       # TRAEDE can show what it downloaded
        assert wallie.downloaded[image_id]["web_image"] is True, (name, wallie.downloaded[image_id])
        path = image["url"].split("?")[0]
        if expected == "rendition":
            assert f"/{web_env['RENDITIONS_CONTAINER']}/" in path and path.endswith(".jpg"), name
            assert download["content_type"] == "image/jpeg" and download["format"] == "JPEG"
            assert max(download["width"], download["height"]) <= 3000
            assert image["filename"].endswith(".jpg") and ":r" in image["existance_key"]
        else:
            assert f"/{container.container_name}/" in path, name
            assert image["existance_key"].endswith(":md5:" + __import__("hashlib").md5(stored[name]).hexdigest())
    # the served type follows the bytes, not the stored type or the name
    assert got[image_id_for("900/BLK/png-named.jpg")][1]["content_type"] == "image/png"
    assert got[image_id_for("900/BLK/untyped.jpg")][1]["content_type"] == "image/jpeg"
    assert got[image_id_for("900/WHT/phone.jpg")][1]["width"] == 320  # the HEIC, decoded and converted
    assert got[image_id_for("901/panorama.jpg")][1]["width"] == 3000  # 12,000 px: longest side bounded
    # skipped with a reason a person can act on
    report = json.loads((tmp_path / "r.json").read_text())
    reasons = {s["blob"]: s["reason"] for s in report["skipped"]}
    assert "cut off" in reasons["901/cut.jpg"] and "not an image" in reasons["901/notes.jpg"]
    assert "skipped: '901/cut.jpg': the image is cut off" in err
    # the originals are untouched (same bytes, same ETag), the verdicts kept in their tags
    for blob in container.list_blobs(include=["tags"]):
        assert blob.etag == etags[blob.name], blob.name
        assert container.download_blob(blob.name).readall() == stored[blob.name]
        assert Verdict.decode(blob.tags[TAG], "md5:" + bytes(blob.content_settings.content_md5).hex()), blob.name
    renditions = blob_service.get_container_client(web_env["RENDITIONS_CONTAINER"])
    assert sorted(b.name for b in renditions.list_blobs()) == sorted(
        WebPolicy().rendition_name(n) for n, case in CASES.items() if case[2] == "rendition")
    assert report["web"]["converted"] == 5 and report["web"]["renditions"] == 5 and report["web"]["checked"] == 10


def test_the_next_night_reads_nothing_per_image_and_no_partner_downloads_again(
        azurite, container, web_env, wallie, traede):
    upload(container)
    assert sync(web_env)[0] == 0
    downloads = traede.stats["downloads"]
    proxy = StorageProxy(azurite)
    try:
        code, err = sync({**web_env, "IMAGES_STORAGE": proxy.connection_string})
    finally:
        proxy.close()
    assert code == 0, err
    assert traede.stats["downloads"] == downloads and traede.stats["images_new"] == downloads  # nothing again
    assert traede.stats["images_kept"] == downloads
    # ours (the partners download through SAS URLs: "sig="): listings only, no ranged read, no tag written
    mine = [r for r in proxy.requests if f"/{container.container_name}" in r and "sig=" not in r]
    assert mine and all("comp=list" in r for r in mine), mine
    assert not [r for r in proxy.requests if f"/{web_env['RENDITIONS_CONTAINER']}" in r and "sig=" not in r]


def test_a_changed_image_is_looked_at_again_and_only_its_key_changes(container, web_env, traede, blob_service):
    upload(container)
    assert sync(web_env)[0] == 0
    keys = {i["existance_key"] for images in traede.products.values() for i in images}
    renditions = blob_service.get_container_client(web_env["RENDITIONS_CONTAINER"])
    before = renditions.download_blob("900/BLK/scan.tif.jpg").readall()
    container.upload_blob("900/BLK/scan.tif", picture("TIFF", (500, 700)), overwrite=True)  # a reshoot
    new_before = traede.stats["images_new"]
    assert sync(web_env)[0] == 0
    after_keys = {i["existance_key"] for images in traede.products.values() for i in images}
    assert len(after_keys - keys) == 1 and traede.stats["images_new"] - new_before == 1
    rebuilt = renditions.download_blob("900/BLK/scan.tif.jpg").readall()
    assert rebuilt != before and Image.open(io.BytesIO(rebuilt)).size == (500, 700)


def test_changing_the_rendition_settings_changes_the_renditions_keys_only(container, web_env, traede):
    upload(container)
    assert sync(web_env)[0] == 0
    before = {i["existance_key"].split(":")[0]: i["existance_key"]
              for images in traede.products.values() for i in images}
    assert sync({**web_env, "RENDITION_QUALITY": "70"})[0] == 0
    after = {i["existance_key"].split(":")[0]: i["existance_key"]
             for images in traede.products.values() for i in images}
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {image_id_for(n) for n, case in CASES.items() if case[2] == "rendition"}


def test_over_the_budget_the_original_goes_named_and_a_later_run_converts_it(container, web_env, traede):
    cases = {n: c for n, c in CASES.items() if c[2] == "rendition" and n.startswith("900/")}
    upload(container, cases)
    env = {**web_env, "RENDITION_BUDGET_IMAGES": "1"}
    code, err = sync(env)
    assert code == 0, err
    assert "not web-ready: 3 blobs: sent as it is: not converted yet: over this run's RENDITION_BUDGET_IMAGES (1)" \
        in err
    sent_as_rendition = [i for i in traede.products["900"] if ":r" in i["existance_key"]]
    assert len(sent_as_rendition) == 1
    for expected in (2, 3, 4):
        assert sync(env)[0] == 0
        assert len([i for i in traede.products["900"] if ":r" in i["existance_key"]]) == expected
    assert "not web-ready" not in sync(env)[1]


def test_check_mode_skips_what_cannot_be_decoded_and_names_the_rest(container, web_env, traede, blob_service):
    upload(container)
    code, err = sync({**web_env, "WEB_IMAGES": "check"})
    assert code == 0, err
    assert "'901/cut.jpg'" in err and "sent as it is: WEB_IMAGES=check: not converted" in err
    got = traede_images(traede)
    assert got[image_id_for("900/BLK/scan.tif")][1]["problem"] == "TIFF is not a web format"  # as before
    assert image_id_for("901/cut.jpg") not in got
    assert not blob_service.get_container_client(web_env["RENDITIONS_CONTAINER"]).exists()


def test_off_sends_everything_as_before_and_writes_nothing(container, web_env, traede, blob_service):
    upload(container)
    code, err = sync({**web_env, "WEB_IMAGES": "off"})
    assert code == 0, err
    assert len(traede_images(traede)) == len(CASES)  # the cut-off file goes too, as it always did
    assert not any(b.tags for b in container.list_blobs(include=["tags"]))
    assert not blob_service.get_container_client(web_env["RENDITIONS_CONTAINER"]).exists()


def test_a_dry_run_reads_but_writes_no_tag_and_no_rendition(container, web_env, blob_service):
    upload(container)
    out, err = io.StringIO(), io.StringIO()
    assert cli_main(["sync", "--dry-run"], env=web_env, stdout=out, stderr=err) == 0, err.getvalue()
    assert "dry run: would be converted" in err.getvalue()
    assert not any(b.tags for b in container.list_blobs(include=["tags"]))
    assert not blob_service.get_container_client(web_env["RENDITIONS_CONTAINER"]).exists()


def test_a_decompression_bomb_is_skipped_without_being_decoded(container, web_env, traede):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)  # 1.6 gigapixels declared in 200 bytes
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")
    container.upload_blob("902/bomb.png", bomb)
    container.upload_blob("902/front.jpg", picture("JPEG"))
    code, err = sync(web_env)
    assert code == 0, err
    assert "skipped: '902/bomb.png': the image has more pixels than can be decoded safely" in err
    assert [i["filename"] for i in traede.products["902"]] == ["front.jpg"]



def test_a_file_no_reader_foresaw_is_answered_and_never_ends_the_run(container, web_env, traede):
    """Twelve bytes that sniff as HEIF and announce a 64-bit box size they do not hold: the product's other
    images are sent, the run ends normally, and the file gets a verdict (so it is not read again each night)."""
    container.upload_blob("903/odd.jpg", b"\x00\x00\x00\x01ftypheic")
    container.upload_blob("903/front.jpg", picture("JPEG"))
    code, err = sync(web_env)
    assert code == 0, err
    assert "broke off" not in err and "Traceback" not in err, err
    assert "skipped: '903/odd.jpg'" in err and "cut off" in err, err
    assert [i["filename"] for i in traede.products["903"]] == ["front.jpg"]


# -- the triggers ---------------------------------------------------------------------------------------

@pytest.fixture
def app_env(web_env, monkeypatch):
    suffix = uuid.uuid4().hex[:10]
    env = {**web_env, "PRODUCT_SYNC_QUEUE": f"products-{suffix}", "SYNC_STATE_CONTAINER": f"state-{suffix}",
           "PRODUCT_SYNC_DELAY_SECONDS": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_an_upload_is_converted_before_wallie_gets_its_url_and_its_delete_takes_the_rendition(
        app_env, container, wallie, traede, blob_service):
    from devtools.queue_host import QueueHost
    from functions.image_deleted import image_deleted
    from functions.image_uploaded import image_uploaded
    from tests.host_objects import deleted_event, sdk_blob_client

    host = QueueHost.for_function("product_sync", app_env["PRODUCT_SYNC_QUEUE"], visibility_timeout=2)
    container.upload_blob("903/front.jpg", picture("JPEG"))
    container.upload_blob("903/master.tif", picture("TIFF", (900, 600)))
    for name in ("903/front.jpg", "903/master.tif"):
        image_uploaded(sdk_blob_client(container.container_name, name))
    record = wallie.images[image_id_for("903/master.tif")]
    assert f"/{app_env['RENDITIONS_CONTAINER']}/903/master.tif.jpg?" in record["url"]
    assert wallie.downloaded[image_id_for("903/master.tif")]["web_image"] is True
    host.drain()
    assert sorted(i["filename"] for i in traede.products["903"]) == ["front.jpg", "master.jpg"]
    renditions = blob_service.get_container_client(app_env["RENDITIONS_CONTAINER"])
    assert [b.name for b in renditions.list_blobs()] == ["903/master.tif.jpg"]
    container.delete_blob("903/master.tif")
    image_deleted(deleted_event(container.container_name, "903/master.tif"))
    host.drain()
    assert [b.name for b in renditions.list_blobs()] == []  # the deleted source took its rendition
    assert [i["filename"] for i in traede.products["903"]] == ["front.jpg"]


# -- the SAS's response type -------------------------------------------------------------------------------

def test_a_sas_with_a_response_type_is_the_sdk_sas_byte_for_byte_and_azurite_serves_that_type(
        blob_service, container):
    import urllib.request
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    from shared.storage.sas import SasSigner

    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    ttl, skew = timedelta(hours=48), timedelta(minutes=15)
    signer = SasSigner(blob_service, "imgs", ttl=ttl, start_skew=skew, clock=lambda: now)
    for name, kind in (("1/a.jpg", "image/png"), ("1/b c.jpg", "image/jpeg"), ("1/d.jpg", None)):
        options = {"content_type": kind} if kind else {}
        token = generate_blob_sas(blob_service.account_name, "imgs", name, account_key=signer._account_key,
                                  permission=BlobSasPermissions(read=True), start=now - skew, expiry=now + ttl,
                                  **options)
        assert signer.url(name, kind).split("?", 1)[1] == token, name
    assert signer._fast and len(signer._templates) == 3  # one template per response type
    container.upload_blob("1/png.jpg", picture("PNG"))  # stored as application/octet-stream
    live = SasSigner(blob_service, container.container_name, ttl=timedelta(hours=1), start_skew=skew)
    with urllib.request.urlopen(live.url("1/png.jpg", "image/png")) as response:
        assert response.headers["Content-Type"] == "image/png"


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_a_rendition_is_turned_upright_as_its_exif_orientation_says(container, web_env, blob_service, fmt):
    """A portrait stored sideways with EXIF orientation 6 (a CMYK JPEG, a TIFF): the rendition carries no
    EXIF, so the turn must be baked in: taller than wide, the stored top row down its right side."""
    image = Image.new("RGB", (400, 300), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 400, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.convert("CMYK" if fmt == "JPEG" else "RGB").save(out, fmt, exif=exif)
    name = "904/portrait." + {"JPEG": "jpg", "TIFF": "tif"}[fmt]
    container.upload_blob(name, out.getvalue())
    assert sync(web_env)[0] == 0
    rendition = Image.open(io.BytesIO(blob_service.get_container_client(web_env["RENDITIONS_CONTAINER"])
                                      .download_blob(name + ".jpg").readall())).convert("RGB")
    assert rendition.size == (300, 400)
    assert rendition.getpixel((290, 200))[0] > 200 and rendition.getpixel((10, 200))[2] > 200


def test_an_identity_that_may_not_write_tags_sends_unchecked_instead_of_looking_every_night(
        container, blob_service, web_env):
    """Azurite, like Azure, refuses Set Blob Tags to a SAS without the tag permission: a verdict that cannot
    be kept would be paid for again every night, so after the first refusal the run looks at nothing more."""
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

    from shared.catalog.container import Catalog
    from shared.catalog.layout import PathLayout
    from shared.config.settings import DEFAULT_PATH_PATTERN
    from shared.imaging.stage import UNKEPT, WORKERS, WebStage
    from shared.runs.report import SyncReport

    for n in range(30):
        container.upload_blob(f"905/BLK/v{n:02}.jpg", picture("JPEG", (40, 30)))
    token = generate_container_sas(blob_service.account_name, container.container_name,
                                   account_key=blob_service.credential.account_key,
                                   permission=ContainerSasPermissions(read=True, list=True),
                                   expiry=datetime.now(UTC) + timedelta(hours=1))
    no_tags = ContainerClient.from_container_url(f"{container.url}?{token}")
    stage = WebStage(no_tags, blob_service.get_container_client(web_env["RENDITIONS_CONTAINER"]), WebPolicy(),
                     lambda name: name)
    report = SyncReport()
    out = list(stage.prepared(Catalog(no_tags, PathLayout(DEFAULT_PATH_PATTERN), tags=True).scan(), report))
    assert len(out) == 30 and not stage.tags_writable and not stage.can_keep_verdicts()
    assert 1 <= report.web["checked"] <= WORKERS and report.web["unchecked"] >= 30 - WORKERS
    assert report.not_web_ready == []  # one note for the run, not 30 lines
    assert not any(b.tags for b in container.list_blobs(include=["tags"]))
    assert "may not read or write blob index tags" in UNKEPT


def test_an_image_replaced_by_a_web_ready_one_is_sent_itself_and_its_key_goes_back(
        container, web_env, traede, blob_service):
    """The overwrite drops the blob's tags (Put Blob), so the new bytes are looked at; they need no rendition,
    so the original goes with its own key. The old rendition is no longer sent (it is deleted with the image:
    finding it now would cost a request for every new image)."""
    from azure.storage.blob import ContentSettings

    typed = ContentSettings(content_type="image/jpeg")
    container.upload_blob("906/print.jpg", picture("JPEG", mode="CMYK"), content_settings=typed)
    assert sync(web_env)[0] == 0
    renditions = blob_service.get_container_client(web_env["RENDITIONS_CONTAINER"])
    assert [b.name for b in renditions.list_blobs()] == ["906/print.jpg.jpg"]
    assert ":r" in traede.products["906"][0]["existance_key"]
    rgb = picture("JPEG")
    container.upload_blob("906/print.jpg", rgb, overwrite=True, content_settings=typed)  # re-exported for the web
    code, err = sync(web_env)
    assert code == 0, err
    kept = next(iter(container.list_blobs(include=["tags"]))).tags[TAG]
    assert kept.endswith(" ok") and " JPEG " in kept and " RGB " in kept  # a verdict on the new bytes, no rendition
    image = traede.products["906"][0]
    assert image["existance_key"].endswith(":md5:" + __import__("hashlib").md5(rgb).hexdigest())
    assert f"/{container.container_name}/906/print.jpg?" in image["url"]


def test_a_listing_that_breaks_off_still_hands_on_every_image_it_listed_first(tmp_path, web_env):
    """Storage dies as page 2 is asked for, while page 1's images are still being looked at: the stage hands
    on all of page 1 (looked at or not: storage is gone) before the listing's error, so the engine can still
    send the products that were complete. (An Azurite of its own: the proxy kills it.)"""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import BlobServiceClient

    from devtools.azurite import Azurite
    from shared.app.factory import open_storage
    from shared.catalog.listing import ListingStalled
    from shared.config.settings import Settings
    from shared.runs.report import SyncReport

    names = [f"907/v{n}.jpg" for n in range(3)] + [f"908/v{n}.jpg" for n in range(3)]
    lists = []

    def page_2(line):
        if "comp=list" in line:
            lists.append(line)
        return len(lists) == 2

    azurite = Azurite(persist_dir=tmp_path / "azurite").start()
    proxy = storage = None
    try:
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        images = service.create_container("images")
        for name in names:
            images.upload_blob(name, picture("JPEG", (40, 30)))
        service.close()
        proxy = StorageProxy(azurite, die_at=page_2)
        storage = open_storage(Settings.from_env({**web_env, "IMAGES_STORAGE": proxy.connection_string,
                                                  "IMAGES_CONTAINER": "images"}), page_size=3)
        got, report = [], SyncReport()
        with pytest.raises((AzureError, ListingStalled)):
            for entry in storage.web.prepared(storage.catalog.scan(), report):
                got.append(entry.blob_name)
        assert proxy.died.is_set() and got == names[:3]
    finally:
        if storage is not None:
            storage.close()
        if proxy is not None:
            proxy.close()
        azurite.persist_dir = None  # remove its folder on stop
        azurite.stop()
