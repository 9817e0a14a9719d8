"""Codes compare in Unicode NFC everywhere (both partners, the mapping file, the folder, ``--item``): a
folder named on a Mac (NFD) reaches TRAEDE like one typed elsewhere (NFC), and two folders that spell one
code in the two forms are refused at TRAEDE with a line naming both - by a full sync, by ``sync --item``
and by the product queue that lists only one of them. Real Azurite, real sandboxes."""
from __future__ import annotations

import io
import unicodedata
import uuid

import pytest

from devtools.images import png
from devtools.queue_host import QueueHost
from shared.app.cli import main as cli_main
from shared.catalog.records import image_id_for
from tests.host_objects import sdk_blob_client

pytestmark = pytest.mark.timeout(180)
CODES = "_config/partner-codes.csv"
NFC = unicodedata.normalize("NFC", "Café-7")
NFD = unicodedata.normalize("NFD", "Café-7")
COLOUR_NFD = unicodedata.normalize("NFD", "BLÅ")


def cli(*argv, env):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(list(argv), env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def put(container, name):
    container.upload_blob(name, png(4, 4, note=name), overwrite=True)


def test_a_folder_named_on_a_mac_reaches_both_partners_under_the_code_typed_in_the_mapping_file(
        container, sync_env, wallie, traede):
    assert NFC != NFD
    put(container, f"{NFD}/{COLOUR_NFD}/front.png")
    put(container, f"{NFD}/{COLOUR_NFD}/back.png")
    container.upload_blob(CODES, f"kind,code,wallie,traede\nitem,{NFC},W-7,TS-7\ncolour,BLÅ,9,100\n".encode())
    code, _, err = cli("sync", env={**sync_env, "PARTNER_CODES_FILE": CODES})
    assert code == 0, err  # before: TRAEDE looked the raw (NFD) folder up, found nothing, withheld it: exit 1
    assert sorted(i["filename"] for i in traede.products["TS-7"]) == ["back.png", "front.png"]
    assert {i["attach_to_variants_matching_attribute_code"]["Color"] for i in traede.products["TS-7"]} == {"100"}
    record = wallie.images[image_id_for(f"{NFD}/{COLOUR_NFD}/front.png")]
    assert (record["itemId"], record["colorId"]) == ("W-7", "9")


def test_without_a_mapping_file_both_partners_get_the_folders_code_in_nfc(container, sync_env, wallie, traede):
    sync_env = {**sync_env, "RUN_HISTORY_CONTAINER": f"runs-{uuid.uuid4().hex[:10]}"}
    put(container, f"{NFD}/{COLOUR_NFD}/front.png")
    code, _, err = cli("sync", env=sync_env)
    assert code == 0, err
    assert list(traede.products) == [NFC]
    assert traede.products[NFC][0]["attach_to_variants_matching_attribute_code"] == {"Color": "BLÅ"}
    record = wallie.images[image_id_for(f"{NFD}/{COLOUR_NFD}/front.png")]
    assert (record["itemId"], record["colorId"]) == (NFC, "BLÅ")
    # sync --item with the code as typed (NFC) finds the Mac-named folder, and so does runs --item
    code, _, err = cli("sync", "--item", NFC, env=sync_env)
    assert code == 0 and traede.stats["products_received"] == 2, err
    code, out, err = cli("runs", "--item", NFC, env=sync_env)
    assert code == 0 and "2 runs touched product" in err and out.count("traede: delivered") == 2, out


def twin_folders(container):
    """The same code twice: a folder named on a Mac, one named elsewhere; and an unrelated product."""
    put(container, f"{NFD}/front.png")
    put(container, f"{NFC}/back.png")
    put(container, "7100/front.png")


def assert_refused_naming_both(err: str) -> None:
    lines = [line for line in err.splitlines() if "two folders spell one TRAEDE item number" in line]
    assert len(lines) == 1, err  # one line for the cause, naming both folders
    assert ascii(NFD) in lines[0] and ascii(NFC) in lines[0] and "(NFD)" in lines[0] and "(NFC)" in lines[0]


def test_two_folders_that_spell_one_code_are_both_refused_at_traede_by_a_full_sync(
        container, sync_env, wallie, traede):
    twin_folders(container)
    code, _, err = cli("sync", env=sync_env)
    assert code == 1
    assert_refused_naming_both(err)
    assert list(traede.products) == ["7100"]  # neither set replaced the other: neither was sent
    assert len(wallie.images) == 3  # Wallie upserts each image by its own id: nothing is lost there


def test_sync_item_with_the_typed_code_finds_both_folders_and_refuses_both(container, sync_env, traede):
    twin_folders(container)
    code, _, err = cli("sync", "--item", NFC, env=sync_env)
    assert code == 1
    assert_refused_naming_both(err)
    assert traede.products == {}


def test_the_product_queue_that_lists_only_one_folder_still_refuses_it(container, sync_env, traede, monkeypatch):
    from functions.image_uploaded import image_uploaded

    suffix = uuid.uuid4().hex[:10]
    env = {**sync_env, "PRODUCT_SYNC_QUEUE": f"products-{suffix}", "SYNC_STATE_CONTAINER": f"state-{suffix}",
           "PRODUCT_SYNC_DELAY_SECONDS": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    put(container, f"{NFC}/back.png")
    assert cli("sync", env=env)[0] == 0 and list(traede.products) == [NFC]  # one folder: fine
    put(container, f"{NFD}/front.png")  # then someone uploads from a Mac: a second folder, one code
    image_uploaded(sdk_blob_client(container.container_name, f"{NFD}/front.png"))
    host = QueueHost.for_function("product_sync", env["PRODUCT_SYNC_QUEUE"], env["IMAGES_STORAGE"])
    host.drain()
    assert host.stats()["poisoned"] == 0
    assert [i["filename"] for i in traede.products[NFC]] == ["back.png"]  # the NFD set did not replace it
    rejected = [r for r in traede.rejected] + [p for p in traede.history if p["item_number"] == NFC][1:]
    assert rejected == []  # never sent at all
    code, _, err = cli("sync", env=env)  # and the next full sync refuses both, naming both
    assert code == 1
    assert_refused_naming_both(err)
