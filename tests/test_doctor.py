"""``python -m shared doctor`` against Azurite and the sandboxes: one line per check, exit 1 if any fails."""
import io

import pytest

from devtools.azurite import free_port
from devtools.images import jpeg
from shared.app.cli import main as cli_main

CHECKS = ["settings", "storage", "layout", "sas", "web", "history", "wallie", "traede"]


def doctor(env):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["doctor"], env=env, stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    return code, {line.split(":")[0].split()[1]: line for line in lines}, lines


@pytest.fixture
def image(container):
    container.upload_blob("100/10/front.jpg", jpeg())
    container.upload_blob("100/.DS_Store", b"junk")


@pytest.fixture
def history_env(sync_env, blob_service):
    """The settings with a run history container of their own, which exists."""
    import uuid

    client = blob_service.create_container(f"doctor-runs-{uuid.uuid4().hex[:8]}")
    yield {**sync_env, "RUN_HISTORY_CONTAINER": client.container_name}
    client.delete_container()


def test_good_configuration_passes_every_check_with_one_line_each(image, history_env, wallie, traede):
    code, checks, lines = doctor(history_env)
    assert code == 0, lines
    assert len(lines) == len(CHECKS) and list(checks) == CHECKS
    assert all(line.startswith("OK ") for line in lines), lines
    assert "100/10/front.jpg" in checks["sas"] and "account-key" in checks["sas"]
    assert "HTTP 422" in checks["traede"]  # the empty list was refused as invalid: credentials accepted
    assert "can be read: image-sync runs lists the kept runs" in checks["history"]
    # (the fixture's image is stored untyped, as application/octet-stream: its SAS serves it as image/jpeg)
    assert checks["web"] == ("OK   web: 0 of 1 sampled images are not web-ready; 1 stored with a wrong or no "
                             "Content-Type (served with their real type) (0 verdicts kept, 1 read now)")
    assert traede.products == {} and traede.stats["products_received"] == 0  # and nothing changed
    assert wallie.images == {} and wallie.stats["token_requests"] == 1


def test_wrong_wallie_password_fails_that_line_only(image, sync_env, wallie, traede):
    code, checks, lines = doctor({**sync_env, "WALLIE_PASSWORD": "wrong-pw-1234"})
    assert code == 1
    assert checks["wallie"].startswith("FAIL wallie:") and "WALLIE_PASSWORD" in checks["wallie"]
    assert [c for c, line in checks.items() if line.startswith("FAIL")] == ["wallie"]
    assert "wrong-pw-1234" not in "\n".join(lines)


@pytest.mark.parametrize("wrong", ["TRAEDE_ACCESS_TOKEN", "TRAEDE_APP_KEY"])
def test_wrong_traede_credentials_fail_with_the_partners_reason(image, sync_env, traede, wrong):
    code, checks, lines = doctor({**sync_env, wrong: "nope-nope"})
    assert code == 1 and checks["traede"].startswith("FAIL traede:") and "HTTP 401" in checks["traede"]
    assert "Unauthenticated" in checks["traede"]
    assert "nope-nope" not in "\n".join(lines)


def test_missing_container_fails_storage_and_does_not_try_the_sas(sync_env):
    code, checks, lines = doctor({**sync_env, "IMAGES_CONTAINER": "no-such-container"})
    assert code == 1
    assert checks["storage"].startswith("FAIL") and "does not exist" in checks["storage"]
    assert checks["sas"].startswith("WARN") and "not tried" in checks["sas"]
    assert checks["wallie"].startswith("OK") and checks["traede"].startswith("OK")


def test_empty_container_warns_that_no_sas_could_be_tested(container, sync_env):
    code, checks, lines = doctor(sync_env)
    assert code == 0 and checks["sas"].startswith("WARN") and "no image" in checks["sas"]


def test_unreachable_storage_and_partners_fail_quickly(sync_env):
    port = free_port()
    env = {**sync_env, "IMAGES_STORAGE": sync_env["IMAGES_STORAGE"].replace(
        sync_env["IMAGES_STORAGE"].split("BlobEndpoint=")[1].split(";")[0],
        f"http://127.0.0.1:{port}/devstoreaccount1"),
        "WALLIE_BASE_URL": f"http://127.0.0.1:{port}", "TRAEDE_BASE_URL": f"http://127.0.0.1:{port}"}
    code, checks, lines = doctor(env)
    assert code == 1
    assert "cannot reach the storage account" in checks["storage"]
    assert "no answer" in checks["wallie"] and "no answer" in checks["traede"]


def test_bad_setting_is_one_failed_line(sync_env):
    code, checks, lines = doctor({**sync_env, "SAS_TTL_HOURS": "500"})
    assert code == 1 and lines == [lines[0]] and lines[0].startswith("FAIL settings: SAS_TTL_HOURS")
    code, checks, lines = doctor({**sync_env, "IMAGE_PATH_PATTERN": "{name}"})
    assert code == 1 and "IMAGE_PATH_PATTERN" in lines[0]


def test_no_partner_configured_fails_settings(storage_env, image):
    code, checks, lines = doctor(storage_env)
    assert code == 1 and "no partner is configured" in checks["settings"]


def test_partner_codes_file_is_checked_when_set(image, container, sync_env, wallie, traede):
    env = {**sync_env, "PARTNER_CODES_FILE": "_config/codes.csv"}
    container.upload_blob("_config/codes.csv", b"kind,code,wallie,traede\nitem,100,W100,T100\ncolour,10,,1\n")
    code, checks, lines = doctor(env)
    assert code == 0, lines
    assert list(checks) == ["settings", "storage", "layout", "codes", "sas", "web", "history", "wallie", "traede"]
    assert checks["codes"].startswith("OK ") and "1 items and 1 colours mapped" in checks["codes"]
    container.upload_blob("_config/codes.csv", b"kind,code,wallie,traede\nitem,100\n", overwrite=True)
    code, checks, lines = doctor(env)
    assert code == 1 and checks["codes"].startswith("FAIL codes: PARTNER_CODES_FILE '_config/codes.csv' line 2")


def test_a_run_history_container_not_there_yet_is_a_warning_and_history_off_is_no_line(image, sync_env, wallie,
                                                                                      traede):
    code, checks, lines = doctor({**sync_env, "RUN_HISTORY_CONTAINER": "never-created-runs"})
    assert code == 0 and checks["history"].startswith("WARN history: RUN_HISTORY_CONTAINER 'never-created-runs' "
                                                      "does not exist yet"), lines
    code, checks, lines = doctor({**sync_env, "RUN_HISTORY_CONTAINER": ""})
    assert code == 0 and "history" not in checks, lines


def test_web_counts_the_sampled_images_that_are_not_web_ready_and_writes_nothing(container, sync_env, blob_service):
    import uuid

    from PIL import Image

    from devtools.images import png

    def made(fmt, mode="RGB"):
        out = io.BytesIO()
        Image.new(mode, (64, 48), (10, 200, 30) if mode == "RGB" else (0, 50, 90, 10)).save(out, fmt, quality=90)
        return out.getvalue()

    from azure.storage.blob import ContentSettings

    noisy = io.BytesIO()
    Image.effect_noise((400, 300), 50).save(noisy, "JPEG")
    for name, data, kind in (("200/10/front.jpg", jpeg(), "image/jpeg"), ("200/10/scan.tif", made("TIFF"), "image/tiff"),
                             ("200/10/print.jpg", made("JPEG", "CMYK"), "image/jpeg"),
                             ("200/10/png.jpg", png(), "image/jpeg"),                         # PNG bytes named .jpg
                             ("200/20/cut.jpg", noisy.getvalue()[:20000], "image/jpeg")):     # an upload cut off
        container.upload_blob(name, data, content_settings=ContentSettings(content_type=kind))
    env = {**sync_env, "RENDITIONS_CONTAINER": f"renditions-{uuid.uuid4().hex[:10]}", "RUN_HISTORY_CONTAINER": ""}
    code, checks, lines = doctor(env)
    assert code == 0, lines  # a warning: the run still syncs what it can
    assert checks["web"] == (
        "WARN web: 3 of 5 sampled images are not web-ready: 1 cannot be decoded (e.g. '200/20/cut.jpg': the "
        "image is cut off (an interrupted upload?)); 2 need a web rendition (CMYK 1, TIFF 1; 0 made already); 1 "
        "stored with a wrong or no Content-Type (served with their real type) (0 verdicts kept, 5 read now); those "
        "that cannot be decoded are skipped: upload them again"), lines
    assert not any(b.tags for b in container.list_blobs(include=["tags"]))  # doctor changes nothing
    assert not blob_service.get_container_client(env["RENDITIONS_CONTAINER"]).exists()
    assert cli_main(["sync"], env=env, stdout=io.StringIO(), stderr=io.StringIO()) == 0
    code, checks, lines = doctor(env)
    assert "2 need a web rendition (CMYK 1, TIFF 1; 2 made already)" in checks["web"]
    assert "(5 verdicts kept, 0 read now)" in checks["web"]
    code, checks, lines = doctor({**env, "WEB_IMAGES": "off"})
    assert checks["web"].startswith("WARN web: 3 of 5 sampled images are not web-ready") and \
        checks["web"].endswith("; WEB_IMAGES=off sends them as they are")
