"""The catalog against a real Azurite container."""
from devtools.images import jpeg, png
from shared.catalog.container import Catalog
from shared.catalog.layout import PathLayout
from shared.catalog.records import ImageRecord, SkippedBlob
from shared.config.settings import DEFAULT_PATH_PATTERN


def make_catalog(container, page_size=5000, pattern=DEFAULT_PATH_PATTERN):
    return Catalog(container, PathLayout(pattern), page_size=page_size)


def test_lists_images_and_skips_junk_with_reasons(container):
    container.upload_blob("100/10/front.jpg", jpeg())
    container.upload_blob("100/10/back.png", png())
    container.upload_blob("200/lifestyle.jpg", jpeg(), metadata={"colorid": "BLK", "alt": "Park"})
    container.upload_blob("200/readme.txt", b"not an image")
    container.upload_blob("200/.DS_Store", b"\x00\x01")
    container.upload_blob("200/empty.jpg", b"")
    entries = list(make_catalog(container).scan())
    images = [e for e in entries if isinstance(e, ImageRecord)]
    skipped = [e for e in entries if isinstance(e, SkippedBlob)]
    by_name = {i.blob_name: i for i in images}
    assert sorted(by_name) == ["100/10/back.png", "100/10/front.jpg", "200/lifestyle.jpg"]
    assert (by_name["100/10/back.png"].type, by_name["100/10/front.jpg"].type) == (1, 0)
    assert by_name["200/lifestyle.jpg"].color_id == "BLK" and by_name["200/lifestyle.jpg"].alt == "Park"
    reasons = {s.blob_name: s.reason for s in skipped}
    assert set(reasons) == {"200/readme.txt", "200/.DS_Store", "200/empty.jpg"}
    assert "not an image" in reasons["200/readme.txt"] and "0 bytes" in reasons["200/empty.jpg"]


def test_listing_is_streamed_page_by_page(container):
    from azure.storage.blob import ContainerClient

    from shared.catalog.listing import PAGES_AHEAD

    names = [f"{n:03d}/front.jpg" for n in range(18)]
    for name in names:
        container.upload_blob(name, png(note=name))
    pages = []

    def record(request):  # observe the real list requests, still served by Azurite
        if "comp=list" in request.http_request.url:
            pages.append(request.http_request.url)

    observed = ContainerClient.from_container_url(container.url, credential=container.credential,
                                                  raw_request_hook=record)
    catalog = make_catalog(observed, page_size=3)
    iterator = catalog.scan()
    first = next(iterator)
    # one page being read, PAGES_AHEAD queued and one being fetched, at most: memory stays at a few pages
    # whatever the size of the container (six pages here)
    assert first.blob_name == "000/front.jpg" and len(pages) <= PAGES_AHEAD + 2 and "maxresults=3" in pages[0]
    assert [e.blob_name for e in [first, *iterator]] == names
    assert len(pages) == 6


def test_content_key_changes_when_the_bytes_change_and_only_then(container):
    catalog = make_catalog(container)
    container.upload_blob("1/front.jpg", png(note="v1"))
    container.upload_blob("1/back.jpg", png(note="same"))
    before = {e.blob_name: e.content_key for e in catalog.scan()}
    container.upload_blob("1/front.jpg", png(note="v2"), overwrite=True)
    container.upload_blob("1/back.jpg", png(note="same"), overwrite=True)  # same bytes re-uploaded
    after = {e.blob_name: e.content_key for e in catalog.scan()}
    assert before["1/front.jpg"] != after["1/front.jpg"]
    assert before["1/back.jpg"] == after["1/back.jpg"]


def test_product_lists_by_prefix_and_get_reports_missing_blobs(container):
    for name in ("10/a/front.jpg", "10/b/back.jpg", "100/front.jpg", "11/front.jpg"):
        container.upload_blob(name, png(note=name))
    catalog = make_catalog(container)
    images, skipped = catalog.product("10")
    assert sorted(i.blob_name for i in images) == ["10/a/front.jpg", "10/b/back.jpg"] and skipped == []
    assert isinstance(catalog.get("10/a/front.jpg"), ImageRecord)
    gone = catalog.get("10/a/missing.jpg")
    assert isinstance(gone, SkippedBlob) and "no longer exists" in gone.reason


def test_product_without_a_prefix_layout_scans_and_filters(container):
    catalog = make_catalog(container, pattern="{color_id}-{item_id}-{name}")
    assert catalog.layout.item_prefix_separator is None
    for name in ("RED-7-front.jpg", "BLU-7-back.jpg", "RED-8-front.jpg"):
        container.upload_blob(name, png(note=name))
    images, _ = catalog.product("7")
    assert sorted(i.blob_name for i in images) == ["BLU-7-back.jpg", "RED-7-front.jpg"]
