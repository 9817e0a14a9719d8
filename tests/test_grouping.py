"""A layout whose listing does not come product by product: every product is still sent whole, exactly once,
while memory holds only a bounded share of the catalog (the rest waits in sorted runs on disk)."""
from __future__ import annotations

import io
from collections import Counter

import pytest

from devtools.images import jpeg
from shared.app.cli import main as cli_main
from shared.catalog.describe import describe_blob
from shared.catalog.layout import PathLayout
from shared.catalog.records import SignedImage, image_id_for
from shared.engine.grouping import ProductGroups
from shared.errors import SigningError

LAYOUT = "{color_id}/{item_id}/{name}"


def names(products: int, colours=("BLK", "WHT", "RED"), kinds=("front", "back")):
    """Listing order of a colour-first layout: each product's images are spread over every colour folder."""
    return sorted(f"{c}/{7000 + p}/{k}.jpg" for c in colours for p in range(products) for k in kinds)


def signed(name):
    record = describe_blob(PathLayout(LAYOUT), name, 10, None, None, '"0x1"')
    return SignedImage(record, f"https://acct.example/c/{name}?sig=x")


def test_groups_come_out_whole_once_each_with_a_bounded_share_in_memory():
    listing = names(10)  # 60 images of 10 products, each product in 3 folders far apart
    groups = ProductGroups(memory_images=7)
    for name in listing:
        groups.add(signed(name))
    out = list(groups.products())
    assert groups.spilled >= 8 and groups.peak_images <= 7
    assert [item for item, _ in out] == sorted(f"{7000 + p}" for p in range(10))  # each once, merged by item
    for item, images in out:
        assert sorted(i.record.blob_name for i in images) == sorted(n for n in listing if f"/{item}/" in n)
        assert all(i.url.endswith("?sig=x") for i in images)


def test_groups_under_the_bound_never_touch_disk_and_keep_first_seen_order():
    groups = ProductGroups()
    for name in ["BLK/7002/a.jpg", "BLK/7001/a.jpg", "WHT/7002/b.jpg"]:
        groups.add(signed(name))
    assert [(item, len(images)) for item, images in groups.products()] == [("7002", 2), ("7001", 1)]
    assert groups.spilled == 0


def sync(env, *args):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["sync", *args], env=env, stdout=out, stderr=err)
    return code, err.getvalue()


def test_a_colour_first_catalog_larger_than_memory_reaches_traede_whole(container, sync_env, wallie, traede,
                                                                       monkeypatch):
    monkeypatch.setattr("shared.engine.grouping.MEMORY_IMAGES", 5)  # 36 images: several runs on disk
    listing = names(6)
    for name in listing:
        container.upload_blob(name, jpeg(note=name))
    code, err = sync({**sync_env, "IMAGE_PATH_PATTERN": LAYOUT})
    assert code == 0, err
    assert len(wallie.images) == len(listing)
    sent = Counter(entry["item_number"] for entry in traede.history)
    assert sent == {f"{7000 + p}": 1 for p in range(6)}  # each product once, never a partial set first
    for item, images in traede.products.items():
        expected = [n for n in listing if f"/{item}/" in n]
        assert sorted(i["existance_key"].split(":")[0] for i in images) == sorted(image_id_for(n) for n in expected)


def test_a_listing_that_breaks_off_names_every_product_held_on_disk_and_sends_none(container, sync_env, traede,
                                                                                  monkeypatch):
    from shared.app.factory import Components
    from shared.config.settings import Settings

    monkeypatch.setattr("shared.engine.grouping.MEMORY_IMAGES", 4)
    for name in names(5):
        container.upload_blob(name, jpeg(note=name))
    with Components(Settings.from_env({**sync_env, "IMAGE_PATH_PATTERN": LAYOUT})) as parts:
        sign, count = parts.engine.sign, [0]

        def sign_until_the_24th(name, *content_type):
            count[0] += 1
            if count[0] == 24:
                raise SigningError("the identity lost Storage Blob Delegator")
            return sign(name, *content_type)

        parts.engine.sign = sign_until_the_24th
        report = parts.engine.full_sync()
    assert not traede.history  # no product was complete: a partial set would delete images at TRAEDE
    withheld = sorted(p.item_id for p in report.failed if p.partner == "traede")
    assert withheld == [f"{7000 + p}" for p in range(5)]  # those on disk and those in memory, each once
    assert report.products == 5


@pytest.mark.parametrize("memory", [1, 3, 100])
def test_the_same_products_whatever_the_bound(memory):
    listing = names(4, kinds=("front", "back", "zoom"))
    groups = ProductGroups(memory_images=memory)
    for name in listing:
        groups.add(signed(name))
    assert sorted((item, len(images)) for item, images in groups.products()) == [(f"{7000 + p}", 9) for p in range(4)]
