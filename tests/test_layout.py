"""Path layouts, kind words and stable ids (no storage needed)."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.catalog.describe import describe_blob
from shared.catalog.layout import PathLayout, type_from_words
from shared.catalog.records import ImageRecord, SkippedBlob, content_key_for, image_id_for
from shared.config.settings import DEFAULT_PATH_PATTERN
from shared.errors import ConfigError

DEFAULT = PathLayout(DEFAULT_PATH_PATTERN)


def describe(name, layout=DEFAULT, size=10, metadata=None, md5=b"\x01" * 16, etag='"0x1"'):
    return describe_blob(layout, name, size, metadata, md5, etag)


@pytest.mark.parametrize("name, item, color", [
    ("100001/10/front.jpg", "100001", "10"),
    ("100001/front.jpg", "100001", None),
    ("SKU-9/BLK/model shot.PNG", "SKU-9", "BLK"),
])
def test_default_layout(name, item, color):
    record = describe(name)
    assert isinstance(record, ImageRecord)
    assert (record.item_id, record.color_id) == (item, color)


@pytest.mark.parametrize("name", ["front.jpg", "a/b/c/front.jpg", "a//front.jpg", "/a/b/front.jpg"])
def test_paths_outside_the_layout_are_skipped_with_the_pattern_named(name):
    entry = describe(name)
    assert isinstance(entry, SkippedBlob)
    assert "IMAGE_PATH_PATTERN" in entry.reason


def test_flat_file_pattern_with_sort_and_extension():
    layout = PathLayout("{item_id}_{color_id}_{sort}.{ext}")
    record = describe("100001_10_3.jpg", layout)
    assert (record.item_id, record.color_id, record.sort) == ("100001", "10", 3)
    assert isinstance(describe("100001_10_x.jpg", layout), SkippedBlob)


def test_type_placeholder_accepts_numbers_and_words():
    layout = PathLayout("{item_id}/{type}/{name}")
    assert describe("1/4/x.jpg", layout).type == 4
    assert describe("1/zoom/x.jpg", layout).type == 3
    skipped = describe("1/42/x.jpg", layout)
    assert isinstance(skipped, SkippedBlob) and "42" in skipped.text


@pytest.mark.parametrize("pattern, expected", [
    ("{color_id}/{name}", "needs {item_id}"),
    ("{item_id}/{colour}/{name}", "unknown placeholder {colour}"),
    ("{item_id}/{item_id}", "appears twice"),
])
def test_bad_patterns_are_configuration_errors(pattern, expected):
    with pytest.raises(ConfigError, match="IMAGE_PATH_PATTERN") as exc:
        PathLayout(pattern)
    assert expected in str(exc.value)


@pytest.mark.parametrize("stem, kind", [
    ("front", 0), ("Back-01", 1), ("alt2", 2), ("side_view", 2), ("detail", 2), ("zoom detail", 3),
    ("detail zoom", 2), ("lifestyle", 4), ("ModelShot", 4), ("FRONTBack", 99), ("model-shot", 4), ("mood", 4),
    ("packaging", 5), ("package", 5), ("IMG_0001", 99), ("frontier", 99), ("black-front-01", 0),
])
def test_kind_from_the_first_kind_word_left_to_right(stem, kind):
    assert type_from_words(stem) == kind


def test_metadata_overrides_the_path_in_any_case():
    record = describe("100/10/front.jpg", metadata={"ItemId": "100", "COLORID": "20", "Type": "4",
                                                    "sort": "7", "Alt": "On a model"})
    assert (record.item_id, record.color_id, record.type, record.sort, record.alt) == ("100", "20", 4, 7, "On a model")


def test_metadata_item_id_moves_an_image_when_products_are_not_folders():
    layout = PathLayout("{color_id}/{item_id}-{name}")
    assert layout.item_prefix_separator is None  # a product sync scans the whole container
    assert describe("BLK/100-front.jpg", layout, metadata={"itemid": "200"}).item_id == "200"
    record = describe("loose-file.jpg", layout, metadata={"itemid": "300"})
    assert record.item_id == "300" and record.color_id is None


@pytest.mark.parametrize("name", ["200/10/front.jpg", "loose-file.jpg"])
def test_metadata_item_id_cannot_move_an_image_out_of_its_product_folder(name):
    # The triggers build a product's set by listing '100/': an image filed elsewhere would vanish at TRAEDE.
    entry = describe(name, metadata={"itemid": "100"})
    assert isinstance(entry, SkippedBlob)
    assert "metadata itemid disagrees" in entry.reason and "move each blob under the folder" in entry.reason
    assert "itemid '100'" in entry.detail and "move it under '100/'" in entry.detail  # this blob's own


@pytest.mark.parametrize("metadata, expected", [({"type": "7"}, "type '7'"), ({"sort": "first"}, "sort 'first'"),
                                                 ({"type": "sideways"}, "type 'sideways'")])
def test_bad_metadata_is_skipped_with_the_reason(metadata, expected):
    entry = describe("100/10/front.jpg", metadata=metadata)
    assert isinstance(entry, SkippedBlob) and expected in entry.text and "metadata" in entry.reason


@pytest.mark.parametrize("name, reason", [
    ("100/10/notes.txt", "not an image"), ("100/10/front", "not an image"), ("100/.DS_Store", "hidden"),
    ("100/10/._front.jpg", "hidden"), ("100/10/Thumbs.db", "Thumbs.db"), ("100/10/", "folder"),
])
def test_junk_is_skipped_with_a_reason(name, reason):
    entry = describe(name)
    assert isinstance(entry, SkippedBlob) and reason in entry.reason


@pytest.mark.parametrize("ext", ["jpg", "JPEG", "png", "Gif", "webp", "tif", "TIFF", "bmp", "avif"])
def test_every_image_extension_in_any_case(ext):
    assert isinstance(describe(f"1/2/front.{ext}"), ImageRecord)


def test_empty_blob_is_skipped():
    assert "0 bytes" in describe("1/2/front.jpg", size=0).reason


@given(st.text(min_size=1, max_size=200))
def test_image_id_is_a_stable_uuid_of_the_path(name):
    import uuid

    first = image_id_for(name)
    assert first == image_id_for(name)
    assert uuid.UUID(first).version == 5


@given(st.lists(st.text(min_size=1, max_size=60), min_size=2, max_size=50, unique=True))
def test_different_paths_give_different_ids(names):
    assert len({image_id_for(n) for n in names}) == len(names)


def test_content_key_follows_the_bytes_and_never_holds_a_url():
    a = content_key_for("id", b"\x01" * 16, '"e1"')
    assert a == content_key_for("id", b"\x01" * 16, '"e2"')  # same MD5: same key even if the ETag moved
    assert a != content_key_for("id", b"\x02" * 16, '"e1"')
    assert content_key_for("id", None, '"e1"') != content_key_for("id", None, '"e2"')
    assert "http" not in a and "sig" not in a


def test_traede_file_names_are_unique_within_a_product():
    from shared.catalog.records import SignedImage
    from shared.partners.payloads import traede_product

    images = [describe(n) for n in ("1/BLK/front.jpg", "1/WHT/front.jpg", "1/back.jpg", "1/BLK/back.jpg")]
    product = traede_product("1", [SignedImage(i, "https://x/" + i.blob_name) for i in images]).body
    assert sorted(i["filename"] for i in product["images"]) == ["BLK-back.jpg", "BLK-front.jpg", "WHT-front.jpg",
                                                                "back.jpg"]
    assert [i["sort"] for i in product["images"]] == [1, 2, 3, 4]
