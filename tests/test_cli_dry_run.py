"""`python -m shared sync --dry-run`: what would be sent, with URLs that really download."""
import hashlib
import json
import os
import subprocess
import sys

import requests

from devtools.seed import JUNK, SAMPLE_IMAGES, seed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(args, env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGES_", "WALLIE_", "TRAEDE_", "SAS_"))}
    return subprocess.run([sys.executable, "-m", "shared", *args], env={**clean, **env}, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_dry_run_lists_every_image_with_a_working_url_and_skips_junk(container, storage_env):
    uploaded = seed(container)
    result = run_cli(["sync", "--dry-run"], storage_env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    wallie = [o["record"] for o in lines if o["partner"] == "wallie"]
    traede = [o["product"] for o in lines if o["partner"] == "traede"]
    assert len(wallie) == len(SAMPLE_IMAGES)
    for record in wallie:
        body = requests.get(record["url"], timeout=10).content
        matches = [n for n, b in uploaded.items() if hashlib.sha256(b).digest() == hashlib.sha256(body).digest()]
        assert len(matches) == 1, record
        assert record["itemId"] == matches[0].split("/")[0]
    assert sorted(p["item_number"] for p in traede) == ["100001", "100002", "100003"]
    assert sum(len(p["images"]) for p in traede) == len(SAMPLE_IMAGES)
    for name in JUNK:
        assert repr(name) in result.stderr, f"{name} not reported as skipped"
    summary = result.stderr.strip().splitlines()[-1]
    assert f"{len(SAMPLE_IMAGES)} images" in summary and "3 products" in summary
    assert f"skipped={len(JUNK)}" in summary


def test_dry_run_for_one_item_only(container, storage_env):
    seed(container)
    result = run_cli(["sync", "--dry-run", "--item", "100002"], storage_env)
    assert result.returncode == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert {o["record"]["itemId"] for o in objects if o["partner"] == "wallie"} == {"100002"}
    products = [o["product"] for o in objects if o["partner"] == "traede"]
    assert [p["item_number"] for p in products] == ["100002"]
    assert [i["sort"] for i in products[0]["images"]] == [1, 2, 3]


def test_configuration_error_exits_2_with_the_setting_named(storage_env):
    result = run_cli(["sync", "--dry-run"], {**storage_env, "SAS_TTL_HOURS": "500"})
    assert result.returncode == 2
    assert "SAS_TTL_HOURS" in result.stderr and result.stdout == ""
    result = run_cli(["sync", "--dry-run"], {})
    assert result.returncode == 2 and "IMAGES_STORAGE is not set" in result.stderr


def test_real_sync_without_any_partner_is_a_configuration_error(storage_env):
    result = run_cli(["sync"], storage_env)
    assert result.returncode == 2 and "no partner is configured" in result.stderr


def test_dry_run_shows_only_the_configured_partner(container, storage_env):
    seed(container)
    env = {**storage_env, "TRAEDE_BASE_URL": "https://traede.example", "TRAEDE_ACCESS_TOKEN": "t0k3n-1",
           "TRAEDE_APP_KEY": "k3y-1"}
    result = run_cli(["sync", "--dry-run"], env)
    assert result.returncode == 0, result.stderr
    partners = {json.loads(line)["partner"] for line in result.stdout.splitlines()}
    assert partners == {"traede"}  # Wallie is not configured: nothing is shown as going there
