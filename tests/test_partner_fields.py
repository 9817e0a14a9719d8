"""TRAEDE's optional fields and each partner's own codes, end to end: Azurite, both sandboxes, the CLI."""
import io
import json

from devtools.images import png
from shared.app.cli import main as cli_main
from shared.catalog.records import image_id_for

CODES = "_config/partner-codes.csv"


def sync(env, *args):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["sync", *args], env=env, stdout=out, stderr=err)
    return code, err.getvalue()


def put(container, name, **metadata):
    container.upload_blob(name, png(note=name), metadata=metadata or None, overwrite=True)


def traede_bodies(traede):
    """Every product body TRAEDE received, by item_number (the last one wins)."""
    return {p["item_number"]: p for body in traede.received for p in body["products"]}


def test_sort_b2c_and_use_sort_b2c_reach_traede_with_the_right_types(container, sync_env, traede):
    put(container, "100001/BLK/front.jpg", sort_b2c="2")
    put(container, "100001/BLK/back.jpg", sort_b2c="1")
    put(container, "100001/WHT/front.jpg")
    put(container, "100002/front.jpg")
    code, err = sync(sync_env)
    assert code == 0, err
    bodies = traede_bodies(traede)
    assert bodies["100001"]["use_sort_b2c"] is True
    by_blob = {name: i for i in bodies["100001"]["images"]
               for name in ("100001/BLK/front.jpg", "100001/BLK/back.jpg", "100001/WHT/front.jpg")
               if i["existance_key"].startswith(image_id_for(name))}
    assert by_blob["100001/BLK/front.jpg"]["sort_b2c"] == 2 and type(by_blob["100001/BLK/front.jpg"]["sort_b2c"]) is int
    assert by_blob["100001/BLK/back.jpg"]["sort_b2c"] == 1
    assert "sort_b2c" not in by_blob["100001/WHT/front.jpg"]
    assert "use_sort_b2c" not in bodies["100002"]  # auto: left as TRAEDE has it
    # false: sent as a boolean for every product
    code, err = sync({**sync_env, "TRAEDE_USE_SORT_B2C": "false"})
    assert code == 0, err
    assert {p: b["use_sort_b2c"] for p, b in traede_bodies(traede).items()} == {"100001": False, "100002": False}


def test_skip_if_no_variant_match_goes_only_with_images_that_name_a_colour(container, sync_env, traede):
    put(container, "100001/BLK/front.jpg")
    put(container, "100001/GRN/front.jpg")  # TRAEDE has no green variant
    put(container, "100001/lifestyle.jpg")  # no colour: no variant to match, never the flag
    traede.variants["100001"] = {"Color": {"BLK"}}
    code, err = sync(sync_env)  # default: off, TRAEDE creates all three
    assert code == 0, err
    assert all("skip_if_no_variant_matches_attribute_code" not in i for i in traede_bodies(traede)["100001"]["images"])
    assert len(traede.products["100001"]) == 3

    traede.reset()
    traede.variants["100001"] = {"Color": {"BLK"}}
    code, err = sync({**sync_env, "TRAEDE_SKIP_IF_NO_VARIANT_MATCH": "true"})
    assert code == 0, err
    images = traede_bodies(traede)["100001"]["images"]
    flags = {i.get("attach_to_variants_matching_attribute_code", {}).get("Color"):
             i.get("skip_if_no_variant_matches_attribute_code") for i in images}
    assert flags == {"BLK": True, "GRN": True, None: None}
    assert traede.stats["images_not_created"] == 1  # the sandbox applied the flag: no green image
    assert sorted(i.get("attach_to_variants_matching_attribute_code", {}).get("Color", "-")
                  for i in traede.products["100001"]) == ["-", "BLK"]


def test_metadata_codes_per_partner_reach_each_partner_and_the_report(container, sync_env, wallie, traede, tmp_path):
    put(container, "100001/BLK/front.jpg", traede_color="100", wallie_item_id="W1", wallie_color_id="7",
        sort_b2c="4")
    put(container, "100001/BLK/back.jpg", traede_color="100", wallie_item_id="W1", wallie_color_id="7")
    put(container, "100001/lifestyle.jpg", wallie_item_id="W1")
    code, err = sync(sync_env, "--report", str(tmp_path / "run.json"))
    assert code == 0, err
    assert sorted(traede.products) == ["100001"] and len(traede.products["100001"]) == 3  # the whole folder
    colours = sorted(i.get("attach_to_variants_matching_attribute_code", {}).get("Color", "-")
                     for i in traede.products["100001"])
    assert colours == ["-", "100", "100"]
    front = wallie.images[image_id_for("100001/BLK/front.jpg")]
    assert (front["itemId"], front["colorId"]) == ("W1", "7")
    assert wallie.images[image_id_for("100001/lifestyle.jpg")]["itemId"] == "W1"
    assert "colorId" not in wallie.images[image_id_for("100001/lifestyle.jpg")]
    # the report says what each partner got under its own codes
    sent = json.loads((tmp_path / "run.json").read_text())["sent"]
    (product,) = sent["traede"]
    front = next(i for i in product["images"] if i["blob"] == "100001/BLK/front.jpg")
    assert front["variant"] == {"Color": "100"} and front["colour"] == "BLK" and front["sort_b2c"] == 4
    assert {(r["itemId"], r.get("colorId")) for r in sent["wallie"]} == {("W1", "7"), ("W1", None)}


def test_the_mapping_file_renames_a_product_and_its_full_set_goes_under_the_traede_code(container, sync_env,
                                                                                       traede, tmp_path):
    for name in ("100001/BLK/front.jpg", "100001/BLK/back.jpg", "100001/lifestyle.jpg"):
        put(container, name)
    container.upload_blob(CODES, b"kind,code,wallie,traede\nitem,100001,W1,TS-1\n")
    env = {**sync_env, "PARTNER_CODES_FILE": CODES}
    code, err = sync(env, "--report", str(tmp_path / "run.json"))
    assert code == 0, err
    assert sorted(traede.products) == ["TS-1"] and len(traede.products["TS-1"]) == 3
    (product,) = json.loads((tmp_path / "run.json").read_text())["sent"]["traede"]
    assert (product["item"], product["item_number"]) == ("100001", "TS-1")
    # the product path (sync --item, as the product queue runs it) sends it under the same code
    traede.reset()
    code, err = sync(env, "--item", "100001")
    assert code == 0, err
    assert sorted(traede.products) == ["TS-1"] and len(traede.products["TS-1"]) == 3


def test_a_mapping_file_maps_every_code_and_a_change_keeps_every_wallie_image_id(container, sync_env, wallie,
                                                                                  traede):
    names = ["100001/BLK/front.jpg", "100001/WHT/front.jpg", "100001/lifestyle.jpg", "100002/BLK/back.jpg"]
    for name in names:
        put(container, name)
    container.upload_blob(CODES, b"kind,code,wallie,traede\nitem,100001,W-1,TS-1\nitem,100002,,TS-2\n"
                                 b"colour,BLK,7,100\ncolour,WHT,9,\n")
    env = {**sync_env, "PARTNER_CODES_FILE": CODES}
    code, err = sync(env)
    assert code == 0, err
    assert CODES not in err  # the mapping file is not reported as a skipped "not an image"
    assert sorted(traede.products) == ["TS-1", "TS-2"]
    assert len(traede.products["TS-1"]) == 3
    assert sorted(i.get("attach_to_variants_matching_attribute_code", {}).get("Color", "-")
                  for i in traede.products["TS-1"]) == ["-", "100", "WHT"]  # empty cell: the folder's code
    assert {n: (wallie.images[image_id_for(n)]["itemId"], wallie.images[image_id_for(n)].get("colorId"))
            for n in names} == {names[0]: ("W-1", "7"), names[1]: ("W-1", "9"), names[2]: ("W-1", None),
                                names[3]: ("100002", "7")}
    ids_before = set(wallie.images)

    container.upload_blob(CODES, b"kind,code,wallie,traede\nitem,100001,W-1B,TS-1\nitem,100002,W-2,TS-2\n"
                                 b"colour,BLK,70,100\ncolour,WHT,90,900\n", overwrite=True)
    code, err = sync(env)
    assert code == 0, err
    assert set(wallie.images) == ids_before  # same images, updated: no new imageId
    assert wallie.images[image_id_for(names[0])]["itemId"] == "W-1B"
    assert wallie.images[image_id_for(names[3])]["colorId"] == "70"


def test_an_unknown_code_is_reported_per_image_and_withholds_only_its_product(container, sync_env, wallie, traede):
    put(container, "100001/BLK/front.jpg")
    put(container, "100002/BLK/front.jpg")
    put(container, "100002/BLK/back.jpg")
    container.upload_blob(CODES, b"kind,code,wallie,traede\nitem,100001,W-1,TS-1\n")
    code, err = sync({**sync_env, "PARTNER_CODES_FILE": CODES})
    assert code == 1, err
    assert sorted(traede.products) == ["TS-1"]  # 100002 withheld whole, not sent under a guessed code
    assert [r["itemId"] for r in wallie.images.values()] == ["W-1"]
    assert f"not in PARTNER_CODES_FILE '{CODES}'" in err and "item '100002' not in the file" in err
    lines = [line for line in err.splitlines() if "100002" in line and line.startswith("rejected:")]
    assert any(line.startswith("rejected: wallie: 2 images") for line in lines), err  # each image, grouped
    assert any(line.startswith("rejected: traede: item '100002'") for line in lines), err


def test_a_bad_mapping_file_stops_the_run_before_anything_is_sent_naming_file_and_line(container, sync_env,
                                                                                        wallie, traede):
    put(container, "100001/BLK/front.jpg")
    env = {**sync_env, "PARTNER_CODES_FILE": CODES}
    cases = [
        (b"code,wallie,traede\n", "line 1: expected the header"),
        (b"kind,code,wallie,traede\nitem,1,W,T\nitem,1,W2,T2\n", "line 3: item '1' is listed twice (first on line 2)"),
        (b"kind,code,wallie,traede\nitem,1,W,T\n\nitem,2,W2,T\n", "line 4: TRAEDE item 'T' is already the code of item '1'"),
        (b"kind,code,wallie,traede\nsize,1,W,T\n", "line 2: kind 'size' is not 'item' or 'colour'"),
        (b"kind,code,wallie,traede\nitem,1,W\n", "line 2: expected 4 columns"),
        (b"kind,code,wallie,traede\nitem,\xff\xfe,W,T\n", "line 2: not UTF-8 text"),
    ]
    for data, expected in cases:
        container.upload_blob(CODES, data, overwrite=True)
        code, err = sync(env)
        assert code == 2, (expected, err)
        assert f"PARTNER_CODES_FILE '{CODES}' {expected}" in err, err
    container.delete_blob(CODES)
    code, err = sync(env)
    assert code == 2 and f"PARTNER_CODES_FILE={CODES!r}: no such blob" in err, err
    container.upload_blob(CODES, b"kind,code,wallie,traede\n" + b"item,1,W,T\n" * 10, overwrite=True)
    import shared.catalog.partner_codes as partner_codes
    limit, partner_codes.MAX_FILE_BYTES = partner_codes.MAX_FILE_BYTES, 64  # a wrong blob named: not read
    try:
        code, err = sync(env)
    finally:
        partner_codes.MAX_FILE_BYTES = limit
    assert code == 2 and "bytes: a mapping file of at most 64 bytes is read" in err, err
    assert wallie.images == {} and traede.products == {} and traede.stats["sync_requests"] == 0


def test_invalid_metadata_values_are_left_out_with_a_reason_and_the_image_still_goes(container, sync_env, wallie,
                                                                                     traede):
    put(container, "100001/BLK/front.jpg", sort_b2c="first", wallie_color_id="x" * 300)
    put(container, "100001/BLK/back.jpg", sort_b2c="3")
    code, err = sync(sync_env)
    assert code == 0, err
    assert "ignored: '100001/BLK/front.jpg': metadata sort_b2c ignored: not a whole number" in err
    assert "sort_b2c 'first'" in err
    assert "metadata wallie_color_id ignored" in err
    assert "metadata ignored=2" in err.splitlines()[-1]
    images = {i["filename"]: i for i in traede.products["100001"]}
    assert "sort_b2c" not in images["front.jpg"] and images["back.jpg"]["sort_b2c"] == 3
    assert wallie.images[image_id_for("100001/BLK/front.jpg")]["colorId"] == "BLK"  # the folder's code


def test_metadata_cannot_move_a_folder_onto_another_traede_product(container, sync_env, traede):
    """A traede_item_number in metadata that is not the product's own withholds that product: it can never
    replace another product's set at TRAEDE, on any path, with or without a mapping file."""
    for name in ("100001/front.jpg", "100001/back.jpg", "100001/side.jpg"):
        put(container, name)
    assert sync(sync_env)[0] == 0 and len(traede.products["100001"]) == 3
    put(container, "100002/zoom.jpg", traede_item_number="100001")          # names another folder
    put(container, "100003/a.jpg", traede_item_number="x" * 300)            # not even a valid code
    put(container, "100004/a.jpg", traede_item_number="100004")             # its own: harmless
    container.upload_blob(CODES, b"kind,code,wallie,traede\nitem,100001,,\nitem,100002,,\nitem,100003,,\n"
                                 b"item,100004,,\n")
    for env in (sync_env, {**sync_env, "PARTNER_CODES_FILE": CODES}):
        for args in ((), ("--item", "100002")):
            code, err = sync(env, *args)
            assert code == 1, err
            assert "has traede_item_number '100001', the product's is '100002'" in err
            assert sorted(i["filename"] for i in traede.products["100001"]) == ["back.jpg", "front.jpg", "side.jpg"]
            assert "100002" not in traede.products
    assert "100003" not in traede.products and len(traede.products["100004"]) == 1


def test_flat_layouts_cannot_move_products_by_metadata_either(container, sync_env, traede):
    env = {**sync_env, "IMAGE_PATH_PATTERN": "products/{item_id}/{name}"}
    put(container, "products/100001/front.jpg")
    put(container, "products/100001/back.jpg")
    put(container, "products/100002/zoom.jpg", traede_item_number="100001")
    code, err = sync(env)
    assert code == 1 and "traede_item_number '100001'" in err, err
    assert sorted(i["filename"] for i in traede.products["100001"]) == ["back.jpg", "front.jpg"]


def test_codes_match_in_unicode_nfc_and_the_codes_file_is_no_product(container, sync_env, wallie, traede):
    import unicodedata

    from shared.app import jobs

    nfd = unicodedata.normalize("NFD", "BLÅ")
    put(container, f"100001/{nfd}/front.jpg")  # a folder named on a Mac
    container.upload_blob(CODES, "kind,code,wallie,traede\ncolour,BLÅ,9,100\n".encode())  # typed: NFC
    env = {**sync_env, "PARTNER_CODES_FILE": CODES}
    code, err = sync(env)
    assert code == 0, err
    assert traede.products["100001"][0]["attach_to_variants_matching_attribute_code"] == {"Color": "100"}
    assert wallie.images[image_id_for(f"100001/{nfd}/front.jpg")]["colorId"] == "9"
    # the triggers see the file's upload and delete: not an image, and no product to queue
    uploaded = jobs.new_image(CODES, env=env)
    assert uploaded.queued == [] and uploaded.skipped == [] and "PARTNER_CODES_FILE" in uploaded.notes[0]
    deleted = jobs.deleted_blob(f"/blobServices/default/containers/{container.container_name}/blobs/{CODES}",
                                env=env)
    assert deleted is not None and deleted.queued == [] and "PARTNER_CODES_FILE" in deleted.notes[0]


def test_deleting_a_mapped_products_last_image_empties_it_under_traedes_code(container, sync_env, traede):
    put(container, "100001/front.jpg")
    container.upload_blob(CODES, b"kind,code,wallie,traede\nitem,100001,W-1,TS-1\n")
    env = {**sync_env, "PARTNER_CODES_FILE": CODES}
    assert sync(env)[0] == 0
    assert len(traede.products["TS-1"]) == 1
    container.delete_blob("100001/front.jpg")
    code, err = sync(env, "--item", "100001", "--allow-empty")  # what the delete trigger's product sync sends
    assert code == 0, err
    assert traede.products["TS-1"] == [] and "100001" not in traede.products
