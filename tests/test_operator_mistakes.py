"""The mistakes a real operator makes (issue "every mistake gets one clear line, every run tells the truth"):
one test per mistake, driving the installed CLI (`.venv/bin/image-sync`) as a subprocess against real
Azurite and the sandboxes, asserting the exit code and that the line names what to fix."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from devtools.azurite import free_port
from devtools.images import jpeg
from tests.conftest import TRAEDE_CREDENTIALS, WALLIE_CREDENTIALS

REPO = Path(__file__).resolve().parent.parent
CLI = REPO / ".venv" / "bin" / "image-sync"
pytestmark = pytest.mark.timeout(120)


def cli(env, *args, timeout=90):
    started = time.monotonic()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGES_", "WALLIE_", "TRAEDE_"))}
    result = subprocess.run([str(CLI), *args], env={**clean, **env}, capture_output=True, text=True,
                            timeout=timeout, cwd="/")
    result.seconds = time.monotonic() - started
    return result


def seed(container, items=("100001", "100002"), kinds=("front", "back")):
    for item in items:
        for kind in kinds:
            container.upload_blob(f"{item}/BLK/{kind}.jpg", jpeg(note=f"{item}{kind}"))


def last_lines(text, n=3):
    return "\n".join(text.strip().splitlines()[-n:])


# -- 1. a typo in --item --------------------------------------------------------------------------------

def test_an_item_with_no_images_is_not_sent_as_an_empty_set(container, sync_env, wallie, traede):
    seed(container)
    result = cli(sync_env, "sync", "--item", "999999")
    assert result.returncode == 1, result.stderr
    assert "item '999999'" in result.stderr and "has no image in the container (a typo?)" in result.stderr
    assert "--allow-empty" in result.stderr
    assert traede.stats["requests"] == 0 and traede.products == {}  # TRAEDE received nothing


def test_allow_empty_sends_the_empty_set_on_purpose(container, sync_env, wallie, traede):
    seed(container)
    assert cli(sync_env, "sync", "--item", "100001").returncode == 0
    container.delete_blob("100001/BLK/front.jpg")
    container.delete_blob("100001/BLK/back.jpg")
    result = cli(sync_env, "sync", "--item", "100001", "--allow-empty")
    assert result.returncode == 0, result.stderr
    assert traede.products["100001"] == []


def test_allow_empty_without_item_is_refused():
    result = cli({"IMAGES_STORAGE": "UseDevelopmentStorage=true"}, "sync", "--allow-empty")
    assert result.returncode == 2 and "--allow-empty only applies with --item" in result.stderr


# -- 2. a malformed IMAGE_PATH_PATTERN ------------------------------------------------------------------

@pytest.mark.parametrize("pattern, problem", [("{item_id}/{color_id/{name}", "an unclosed '{'"),
                                              ("{item_id}/color}/{name}", "a '}' without its '{'")])
def test_a_malformed_layout_is_a_configuration_error(container, sync_env, wallie, traede, pattern, problem):
    seed(container)
    result = cli({**sync_env, "IMAGE_PATH_PATTERN": pattern}, "sync")
    assert result.returncode == 2
    assert result.stderr.startswith(f"configuration error: IMAGE_PATH_PATTERN={pattern!r} is invalid: it has {problem}")
    assert wallie.stats["requests"] == 0 and traede.stats["requests"] == 0
    doctor = cli({**sync_env, "IMAGE_PATH_PATTERN": pattern}, "doctor")
    assert doctor.returncode == 1 and "FAIL settings: IMAGE_PATH_PATTERN=" in doctor.stdout


# -- 3. a valid layout that fits none (or few) of the images --------------------------------------------

def test_a_layout_that_fits_no_image_fails_naming_the_pattern_and_an_example(container, sync_env, wallie, traede):
    seed(container)
    result = cli({**sync_env, "IMAGE_PATH_PATTERN": "{item_id}_{color_id}.{ext}"}, "sync")
    assert result.returncode == 2, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("configuration error: no image file fits"))
    assert "IMAGE_PATH_PATTERN '{item_id}_{color_id}.{ext}'" in line and "e.g. '100001/BLK/back.jpg'" in line
    assert wallie.stats["requests"] == 0 and traede.stats["requests"] == 0
    doctor = cli({**sync_env, "IMAGE_PATH_PATTERN": "{item_id}_{color_id}.{ext}"}, "doctor")
    assert "FAIL layout: 0 of 4 image files in a sample fit IMAGE_PATH_PATTERN" in doctor.stdout


def test_a_layout_most_images_miss_is_warned_about(container, sync_env, wallie, traede):
    seed(container, items=("100001",))
    for n in range(3):
        container.upload_blob(f"flat-{n}.jpg", jpeg(note=str(n)))
    result = cli(sync_env, "sync")
    assert result.returncode == 0, result.stderr
    assert "warning: 3 of 5 image files do not fit IMAGE_PATH_PATTERN" in result.stderr
    doctor = cli(sync_env, "doctor")
    assert "WARN layout: 2 of 5 image files in a sample fit" in doctor.stdout


# -- 4. storage pointing nowhere -------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:{port}/devstoreaccount1", "http://no-such-host.invalid"])
def test_storage_that_cannot_be_reached_fails_within_seconds_naming_the_setting(sync_env, endpoint):
    conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            f"BlobEndpoint={endpoint.format(port=free_port())};")
    result = cli({**sync_env, "IMAGES_STORAGE": conn}, "sync")
    assert result.returncode == 1 and result.seconds < 12, (result.seconds, result.stderr)
    assert "cannot reach the storage account" in result.stderr and "check IMAGES_STORAGE" in result.stderr
    assert "a2V5" not in result.stderr  # the account key is never printed


def test_refused_storage_credentials_are_a_configuration_error(azurite, container, sync_env):
    conn = azurite.connection_string.replace("AccountKey=", "AccountKey=AAAA")
    result = cli({**sync_env, "IMAGES_STORAGE": conn}, "sync")
    assert result.returncode == 2, result.stderr
    assert "refused these credentials" in result.stderr and "check IMAGES_STORAGE" in result.stderr


# -- 5. a container that does not exist ------------------------------------------------------------------

def test_a_missing_container_is_a_configuration_error_naming_the_setting(sync_env, wallie, traede):
    result = cli({**sync_env, "IMAGES_CONTAINER": "no-such-container"}, "sync")
    assert result.returncode == 2
    assert "configuration error: IMAGES_CONTAINER='no-such-container' does not exist" in result.stderr


# -- 6. a --report path that cannot be written -------------------------------------------------------------

def test_an_unwritable_report_path_is_refused_before_anything_is_sent(container, sync_env, wallie, traede):
    seed(container)
    result = cli(sync_env, "sync", "--report", "/no/such/dir/run.json")
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration error: --report /no/such/dir/run.json: the folder /no/such/dir " \
                                    "does not exist"
    assert wallie.stats["requests"] == 0 and traede.stats["requests"] == 0


# -- 7. a wrong TRAEDE token ----------------------------------------------------------------------------------

def test_a_wrong_traede_token_names_the_settings_and_keeps_the_sentence(container, sync_env, wallie, traede):
    seed(container)
    result = cli({**sync_env, "TRAEDE_ACCESS_TOKEN": "not-the-token-1234"}, "sync")
    assert result.returncode == 1
    line = next(line for line in result.stderr.splitlines() if line.startswith("stopped: traede"))
    assert "check TRAEDE_ACCESS_TOKEN and TRAEDE_APP_KEY" in line
    assert "missing or wrong Authorization bearer token" in line  # the partner's sentence, readable
    assert "not-the-token-1234" not in result.stderr


# -- 9. LOG_LEVEL=DEBUG ----------------------------------------------------------------------------------------

def test_debug_shows_each_partner_request_and_each_listing_page(container, sync_env, wallie, traede):
    seed(container)
    result = cli({**sync_env, "LOG_LEVEL": "DEBUG", "WALLIE_BATCH_SIZE": "2"}, "sync")
    assert result.returncode == 0, result.stderr
    requests = re.findall(r"DEBUG shared\.partners\.http: (wallie|traede): POST (\S+)(?: \((\d+) (images|products)\))?: "
                          r"HTTP (\d+) in \d+ ms \(attempt 1\)", result.stderr)
    assert {(r[0], r[1], r[4]) for r in requests} >= {("wallie", "/Token", "200"), ("wallie", "/Images/urls", "200"),
                                                      ("traede", "/products/images/sync", "200")}
    assert len([r for r in requests if r[1] == "/Images/urls"]) == 2
    assert re.search(r"DEBUG shared\.catalog\.listing: listed page 1 of '[^']+': 4 blobs in \d+ ms, the last", result.stderr)
    assert "INFO shared.app.cli: sync started: container" in result.stderr
    secrets = [WALLIE_CREDENTIALS["password"], *TRAEDE_CREDENTIALS.values(), *wallie._tokens]
    assert not [s for s in secrets if s in result.stderr] and "sig=" not in result.stderr.replace("sig=REDACTED", "")


# -- 10. progress in any output ---------------------------------------------------------------------------------

def test_progress_lines_reach_a_pipe_with_totals_once_known(container, sync_env, wallie, traede):
    seed(container, items=[str(200000 + n) for n in range(12)])
    wallie.configure_faults(latency_ms=300)
    result = cli({**sync_env, "WALLIE_BATCH_SIZE": "2", "SYNC_CONCURRENCY": "2"}, "sync", "--progress", "0.5")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "progress:" in line]
    assert len(lines) >= 3, result.stderr
    assert lines[0].startswith("INFO shared.app.cli: progress: ") and "images listed" in lines[0]
    assert any("24 images listed (all)" in line and "of 24 images" in line and "of 12 products" in line for line in lines)


def test_progress_on_a_terminal_shows_totals(container, sync_env, wallie, traede):
    seed(container, items=[str(210000 + n) for n in range(8)])
    wallie.configure_faults(latency_ms=300)
    leader, follower = pty.openpty()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGES_", "WALLIE_", "TRAEDE_"))}
    process = subprocess.Popen([str(CLI), "sync"], env={**clean, **sync_env, "WALLIE_BATCH_SIZE": "2",
                                                        "SYNC_CONCURRENCY": "1"},
                               stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    screen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    assert process.wait(30) == 0
    text = screen.decode(errors="replace")
    assert "\rprogress: " in text and "16 images listed (all)" in text and "of 16 images" in text


# -- 11. what did TRAEDE get for product X? ----------------------------------------------------------------------

def test_the_report_says_what_each_partner_got_per_product(container, sync_env, wallie, traede, tmp_path):
    seed(container)
    container.upload_blob("100002/notes.txt", b"not an image")
    traede.configure_faults(reject={"100002"})
    path = tmp_path / "run.json"
    result = cli(sync_env, "sync", "--report", str(path))
    assert result.returncode == 1
    report = json.loads(path.read_text())
    assert report["container"] == container.container_name
    assert report["partners"] == {"wallie": wallie.url, "traede": traede.url}
    assert report["started_at"] <= report["ended_at"]
    got = {p["item"]: p for p in report["sent"]["traede"]}
    assert got["100001"]["outcome"] == "delivered" and got["100002"]["outcome"] == "rejected"
    assert got["100002"]["reason"] == "POST /products/images/sync: HTTP 422"  # the cause; TRAEDE's answer:
    assert "rejected by sandbox rule" in got["100002"]["detail"]
    images = got["100001"]["images"]
    assert [i["blob"] for i in images] == ["100001/BLK/front.jpg", "100001/BLK/back.jpg"]
    assert [(i["sort"], i["type"], i["colour"]) for i in images] == [(1, 0, "BLK"), (2, 1, "BLK")]
    assert images[0]["existance_key"].endswith(traede.products["100001"][0]["existance_key"].split(":", 1)[1])
    assert images[0]["url"].endswith(f"/{container.container_name}/100001/BLK/front.jpg")
    wallie_sent = {r["blob"]: r for r in report["sent"]["wallie"]}
    assert set(wallie_sent) == {f"{i}/BLK/{k}.jpg" for i in ("100001", "100002") for k in ("front", "back")}
    assert all(r["outcome"] == "delivered" and r["imageId"] and r["type"] in (0, 1) for r in wallie_sent.values())
    text = path.read_text()
    assert "sig=" not in text and "?" not in "".join(i["url"] for i in images)  # never a SAS in the report
    assert report["accounting"]["traede"]["unaccounted"] == 0


def test_control_characters_from_a_partner_never_reach_the_operators_terminal():
    from shared.app.output import printable as _printable

    line = "rejected: traede: item '1': HTTP 400: \x1b]0;owned\x07\x1b[2J<html>bad</html>\r"
    shown = _printable(line)
    assert shown.isprintable() and "\x1b" not in shown and "\r" not in shown
    assert "\\x1b]0;owned\\x07\\x1b[2J<html>bad</html>\\r" in shown  # escaped, still readable
    assert _printable("plain line\twith a tab") == "plain line\twith a tab"
