"""Bad-input catalogue: what people drop into a container. Valid images arrive with working URLs (both
sandboxes download them and we compare bytes); everything else is skipped with a reason; the run succeeds."""
import hashlib
import io
import json
import logging

import pytest

from devtools.images import jpeg, png
from shared.app.cli import main as cli_main
from shared.catalog.records import image_id_for

LONG = "x" * 1000

# blob name -> metadata, for images that must be delivered
VALID = {
    "8001/10/front view.jpg": None,                          # space
    "8001/10/ünïcødé-前面.jpg": None,                          # unicode
    "8001/10/a#b.jpg": None,                                 # fragment marker
    "8001/10/50%.jpg": None,                                 # percent
    "8001/10/%20literal.jpg": None,                          # something that looks percent-encoded
    "8001/10/a+b.jpg": None,                                 # plus (a space in query strings)
    "8001/10/what?.jpg": None,                               # query marker
    "8001/10/this&that.jpg": None,                           # query separator
    "8001/10/semi;colon=eq'quote.jpg": None,
    f"8001/10/{LONG}.jpg": None,                             # 1,000+ characters (filename > 255)
    f"8001/10/{LONG}b.jpg": None,                            # a second one: names must stay unique
    "8001/10/BACK.JPG": None,                                # uppercase extension
    "8001/10/detail.final.jpeg.png": None,                   # double extension: the last one counts
    "8002/side.webp": None,                                  # no colour folder
    "8002/meta-type.jpg": {"type": "3", "sort": "2"},        # metadata as numbers
    "8002/meta-word.jpg": {"Type": "Lifestyle", "SORT": " 7 "},  # any case, words, spaces
    "8003/meta-item.jpg": {"ItemId": "8003", "colorid": "BLK"},  # metadata agreeing with its folder
}

# blob name -> (bytes or None for a real image, metadata, what the cause must say, what its own detail must say)
SKIPPED = {
    "8001/notes.txt": (b"text", None, "not an image", "extension '.txt'"),
    "8001/10/front.jpg.txt": (b"text", None, "not an image", "extension '.txt'"),
    "8001/10/noextension": (b"x", None, "not an image", "extension '(none)'"),
    "8001/.DS_Store": (b"\0\0\0\1Bud1", None, "hidden file", None),
    "8001/10/._front.jpg": (None, None, "hidden file", None),
    "8001/10/Thumbs.db": (b"\xd0\xcf\x11\xe0", None, "Thumbs.db", None),
    "8001/10/thumbs.DB": (b"\xd0\xcf\x11\xe0", None, "Thumbs.db", None),
    "8001/10/empty.jpg": (b"", None, "empty blob", None),
    "toplevel.jpg": (None, None, "does not fit IMAGE_PATH_PATTERN", None),
    "8001/10/too/deep/front.jpg": (None, None, "does not fit IMAGE_PATH_PATTERN", None),
    "8001//empty-segment.jpg": (None, None, "empty folder name", "rename it to '8001/empty-segment.jpg'"),
    "/8001/10/leading-slash.jpg": (None, None, "starts with '/'", "rename it to '8001/10/leading-slash.jpg'"),
    "/8001/10/leading-slash-meta.jpg": (None, {"itemid": "8001"}, "starts with '/'", "rename it to"),
    "8002/type-banana.jpg": (None, {"type": "banana"}, "metadata type is not a Wallie type", "type 'banana'"),
    "8002/type-7.jpg": (None, {"type": "7"}, "metadata type is not a Wallie type", "type '7'"),
    "8002/type-negative.jpg": (None, {"type": "-1"}, "metadata type is not a Wallie type", "type '-1'"),
    "8002/sort-abc.jpg": (None, {"sort": "abc"}, "metadata sort is not a whole number", "sort 'abc'"),
    "8002/sort-negative.jpg": (None, {"sort": "-3"}, "metadata sort is not a whole number", "sort '-3'"),
    "8002/sort-fraction.jpg": (None, {"sort": "1.5"}, "metadata sort is not a whole number", "sort '1.5'"),
    "8002/sort-huge.jpg": (None, {"sort": "99999999999"}, "metadata sort is not a whole number", "sort '99999999999'"),
    "8002/folder/": (b"", None, "folder marker", None),
    "stray-with-itemid.jpg": (None, {"itemid": "8003"}, "metadata itemid disagrees with a path outside", "itemid '8003'"),
    "8002/filed-elsewhere.jpg": (None, {"itemid": "8003"}, "metadata itemid disagrees with the blob's folder",
                                 "move it under '8003/'"),
}
LARGE = "8002/large.jpg"  # 12 MB: listed, signed and delivered; only its header and end read by us


@pytest.fixture
def catalogue(container):
    data = {}
    for n, (name, meta) in enumerate(VALID.items()):
        body = (jpeg if n % 2 else png)(note=name)
        container.upload_blob(name, body, metadata=meta)
        data[name] = body
    for name, (body, meta, _, _) in SKIPPED.items():
        container.upload_blob(name, jpeg(note=name) if body is None else body, metadata=meta)
    large = jpeg(note="large") + b"\0" * (12 * 1024 * 1024)
    container.upload_blob(LARGE, large)
    data[LARGE] = large
    return data


def test_catalogue_has_enough_cases():
    assert len(VALID) + len(SKIPPED) + 1 >= 25


def test_valid_images_arrive_with_working_urls_and_the_rest_are_skipped_with_a_reason(
        catalogue, container, sync_env, wallie, traede, tmp_path):
    # Every request the storage SDK makes is logged by azure.core at INFO: a GET of a blob's own URL
    # would be a download by us.
    requests_seen = []
    handler = logging.Handler()
    handler.emit = lambda record: requests_seen.append(record.getMessage())
    sdk_log = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    sdk_log.addHandler(handler)
    old_level = sdk_log.level
    sdk_log.setLevel(logging.INFO)
    try:
        out, err = io.StringIO(), io.StringIO()
        code = cli_main(["sync", "--report", str(tmp_path / "r.json")], env=sync_env, stdout=out, stderr=err)
    finally:
        sdk_log.removeHandler(handler)
        sdk_log.setLevel(old_level)
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0, err.getvalue()
    assert report["ok"] and report["images"] == len(catalogue)

    # valid: Wallie got every one and downloaded the exact bytes through its SAS URL
    for name, body in catalogue.items():
        image_id = image_id_for(name)
        assert image_id in wallie.images, name
        assert wallie.downloaded[image_id]["sha256"] == hashlib.sha256(body).hexdigest(), name
    assert wallie.images[image_id_for("8002/meta-type.jpg")]["type"] == 3
    assert wallie.images[image_id_for("8002/meta-word.jpg")]["type"] == 4
    assert wallie.images[image_id_for("8003/meta-item.jpg")]["colorId"] == "BLK"

    # TRAEDE: full sets, every image downloaded, every filename within 255 characters and unique
    assert sorted(traede.products) == ["8001", "8002", "8003"]
    assert sum(len(v) for v in traede.products.values()) == len(catalogue)
    assert traede.stats["downloads"] == len(catalogue) and traede.stats["download_failures"] == 0
    for images in traede.products.values():
        filenames = [i["filename"] for i in images]
        assert all(0 < len(f) <= 255 for f in filenames) and len(set(filenames)) == len(filenames)
        assert all(len(i["existance_key"]) <= 255 and "sig=" not in i["existance_key"] for i in images)

    # skipped: each with a cause a person can act on, and what is particular to the blob (--report has both)
    reasons = {s["blob"]: (s["reason"], s.get("detail")) for s in report["skipped"]}
    assert set(reasons) == set(SKIPPED)
    for name, (_, _, cause, detail) in SKIPPED.items():
        assert cause in reasons[name][0], (name, reasons[name])
        assert detail is None or detail in reasons[name][1], (name, reasons[name])
        assert cause in err.getvalue()  # stderr has one line per cause, with a count and the first names
    skipped_lines = [line for line in err.getvalue().splitlines() if line.startswith("skipped: ")]
    assert len(skipped_lines) == len({cause for cause, _ in reasons.values()}) < len(SKIPPED)

    # the large image was listed and signed; the web stage read its header and its end (ranged), never the
    # whole blob
    assert any("restype=" in m for m in requests_seen), requests_seen[:3]  # the capture sees listings
    blob_gets = [m for m in requests_seen if "Request method: 'GET'" in m and "large.jpg" in m]
    assert 1 <= len(blob_gets) <= 2 and all("'x-ms-range':" in m for m in blob_gets), "\n".join(blob_gets)
    assert report["accounting"]["wallie"]["unaccounted"] == 0 == report["accounting"]["traede"]["unaccounted"]
