"""The full sync engine end to end: Azurite + both partner sandboxes, through the real CLI entry point."""
import hashlib
import io
import json

from devtools.images import jpeg, png
from devtools.seed import SAMPLE_IMAGES, seed
from shared.app.cli import main as cli_main
from shared.catalog.records import image_id_for


def sync(env, *args):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["sync", *args], env=env, stdout=out, stderr=err)
    return code, err.getvalue()


def upload_catalog(container, products=12, per_product=3):
    names = {}
    for p in range(products):
        for i, kind in enumerate(["front", "back", "detail", "zoom", "lifestyle"][:per_product]):
            name = f"{5000 + p}/{'BLK' if i % 2 else 'WHT'}/{kind}.jpg"
            data = png(note=name)
            container.upload_blob(name, data)
            names[name] = data
    return names


def test_full_sync_delivers_every_image_and_every_complete_product(container, sync_env, wallie, traede):
    uploaded = seed(container)
    code, err = sync(sync_env)
    assert code == 0, err
    assert wallie.stats["token_requests"] == 1
    assert len(wallie.images) == len(SAMPLE_IMAGES)
    for name, data in uploaded.items():
        record = wallie.images[image_id_for(name)]
        item, *rest = name.split("/")
        assert record["itemId"] == item
        assert record.get("colorId") == (rest[0] if len(rest) == 2 else None)
        assert wallie.downloaded[image_id_for(name)]["sha256"] == hashlib.sha256(data).hexdigest()
    kinds = {image_id_for(n): r["type"] for n, r in ((n, wallie.images[image_id_for(n)]) for n in uploaded)}
    assert kinds[image_id_for("100002/10/zoom detail.png")] == 3
    assert kinds[image_id_for("100001/900/lifestyle model.jpg")] == 4
    assert sorted(traede.products) == ["100001", "100002", "100003"]
    for item, images in traede.products.items():
        expected = sorted(n for n in uploaded if n.startswith(item + "/"))
        assert sorted(i["existance_key"].split(":")[0] for i in images) == sorted(image_id_for(n) for n in expected)
        assert len({i["filename"] for i in images}) == len(images)  # unique names within a product
        assert sorted(i["sort"] for i in images) == list(range(1, len(expected) + 1))
    assert traede.stats["downloads"] == len(SAMPLE_IMAGES) and traede.stats["download_failures"] == 0
    assert "skipped=5" in err.splitlines()[-1]


def test_second_run_sends_the_same_ids_and_keys_and_traede_downloads_nothing(container, sync_env, wallie, traede):
    seed(container)
    assert sync(sync_env)[0] == 0
    ids, keys = set(wallie.images), {i["key"] for imgs in traede.products.values() for i in imgs}
    new_before = traede.stats["images_new"]
    assert sync(sync_env)[0] == 0
    assert set(wallie.images) == ids
    assert {i["key"] for imgs in traede.products.values() for i in imgs} == keys
    assert traede.stats["images_new"] == new_before
    assert traede.stats["images_kept"] == len(SAMPLE_IMAGES)


def test_overwrite_changes_one_key_and_delete_removes_the_image(container, sync_env, traede):
    seed(container)
    assert sync(sync_env)[0] == 0
    new_before, kept_before = traede.stats["images_new"], traede.stats["images_kept"]
    container.upload_blob("100001/100/front.jpg", jpeg(rgb=(1, 2, 3), note="reshoot"), overwrite=True)
    container.delete_blob("100001/900/front.jpg")
    assert sync(sync_env)[0] == 0
    assert traede.stats["images_new"] - new_before == 1
    assert traede.stats["images_deleted"] == 2  # the old version of the reshoot, and the deleted image
    names = {i["filename"] for i in traede.products["100001"]}
    assert names == {"front.jpg", "back.jpg", "lifestyle model.jpg"}  # "front.jpg" is unique again
    assert traede.stats["images_kept"] - kept_before == len(SAMPLE_IMAGES) - 2


def test_delivers_everything_through_500s_429s_and_one_second_tokens(container, sync_env, wallie, traede):
    uploaded = upload_catalog(container, products=25, per_product=4)
    for sandbox in (wallie, traede):
        sandbox.configure_faults(error_rate=0.25, throttle_rate=0.15, retry_after=1, seed=7)
    wallie.token_lifetime = 1.0
    env = {**sync_env, "WALLIE_BATCH_SIZE": "5", "HTTP_MAX_RETRIES": "10"}
    code, err = sync(env)
    assert code == 0, err
    assert set(wallie.images) == {image_id_for(n) for n in uploaded}
    assert len(traede.products) == 25 and sum(len(v) for v in traede.products.values()) == len(uploaded)
    injected = sum(s.stats["injected_500"] + s.stats["injected_429"] for s in (wallie, traede))
    assert injected > 0
    summary = err.splitlines()[-1]
    assert "rejected=0" in summary and "failed=0" in summary and "retries=0" not in summary


def test_one_rejected_record_is_named_and_everything_else_is_delivered(container, sync_env, wallie, traede, tmp_path):
    uploaded = upload_catalog(container, products=12, per_product=3)
    bad_image = "5003/BLK/back.jpg"
    wallie.configure_faults(reject={image_id_for(bad_image)})
    traede.configure_faults(reject={"5007"})
    report_path = tmp_path / "report.json"
    code, err = sync(sync_env, "--report", str(report_path))
    assert code == 1
    assert set(wallie.images) == {image_id_for(n) for n in uploaded} - {image_id_for(bad_image)}
    assert sorted(traede.products) == sorted({n.split("/")[0] for n in uploaded} - {"5007"})
    assert f"rejected: wallie: item '5003' blob '{bad_image}' (HTTP 400)" in err
    assert "rejected: traede: item '5007' (HTTP 422)" in err
    assert "rejected by sandbox rule" in err  # the partner's own error text is kept
    report = json.loads(report_path.read_text())
    assert report["ok"] is False
    assert [(r["partner"], r["item"]) for r in report["rejected"]] == [("wallie", "5003")] or \
        sorted((r["partner"], r["item"]) for r in report["rejected"]) == [("traede", "5007"), ("wallie", "5003")]
    assert len(report["rejected"]) == 2
    assert report["delivered"] == {"wallie": len(uploaded) - 1, "traede": 11}


def test_more_than_ten_products_go_in_chunks_of_ten(container, sync_env, traede):
    upload_catalog(container, products=23, per_product=1)
    assert sync(sync_env)[0] == 0
    sizes = [len(body["products"]) for body in traede.received]
    assert sorted(sizes) == [3, 10, 10]


def test_sync_of_selected_items_only(container, sync_env, wallie, traede):
    upload_catalog(container, products=5, per_product=2)
    code, err = sync(sync_env, "--item", "5001", "--item", "5003")
    assert code == 0, err
    assert {r["itemId"] for r in wallie.images.values()} == {"5001", "5003"}
    assert sorted(traede.products) == ["5001", "5003"]


def test_only_the_configured_partner_is_called(container, sync_env, wallie, traede):
    upload_catalog(container, products=2, per_product=2)
    only_traede = {k: v for k, v in sync_env.items() if not k.startswith("WALLIE_")}
    assert sync(only_traede)[0] == 0
    assert wallie.stats["requests"] == 0 and len(traede.products) == 2


def test_wrong_credentials_stop_each_partner_once_with_one_line(container, sync_env, wallie, traede):
    upload_catalog(container, products=3, per_product=2)
    env = {**sync_env, "WALLIE_PASSWORD": "bad-pw-4711", "TRAEDE_APP_KEY": "bad-key-4712", "WALLIE_BATCH_SIZE": "1"}
    code, err = sync(env)
    assert code == 1
    lines = err.splitlines()
    wallie_lines = [line for line in lines if line.startswith(("failed: wallie", "stopped: wallie"))]
    assert [line for line in lines if line.startswith("stopped: wallie: token request refused: check WALLIE_TENANT, "
                                                       "WALLIE_USERNAME and WALLIE_PASSWORD")]
    assert "6 images not sent" in err and "3 products not sent" in err and "TRAEDE_APP_KEY" in err
    assert len(wallie_lines) == 1  # not one line per record
    assert wallie.stats["token_requests"] == 1 and wallie.stats["image_requests"] == 0  # asked once, not 6 times
    assert traede.stats["sync_requests"] == 1
    assert "failed=9" in lines[-1]
    assert "bad-pw-4711" not in err and "bad-key-4712" not in err  # secrets are never echoed


def test_partner_outage_ends_in_bounded_time_with_every_record_failed(container, sync_env, wallie, traede):
    upload_catalog(container, products=3, per_product=2)
    traede.configure_faults(outage=True)
    env = {**sync_env, "HTTP_MAX_RETRIES": "3"}
    code, err = sync(env)
    assert code == 1
    assert len(wallie.images) == 6  # the healthy partner still gets everything
    assert "failed: traede: 3 products (HTTP 500)" in err  # one line for the cause, naming the first items
    assert traede.stats["requests"] == 4  # one chunk: the first try + 3 retries


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_shown_on_a_terminal_only(container, sync_env):
    upload_catalog(container, products=4, per_product=2)
    tty = Terminal()
    assert cli_main(["sync"], env=sync_env, stdout=io.StringIO(), stderr=tty) == 0
    progress = [line for line in tty.getvalue().split("\r") if "images listed" in line]
    assert progress and "8 images listed" in progress[-1]
    code, err = sync(sync_env)  # a pipe or file: no carriage-return progress noise
    assert code == 0 and "\r" not in err
