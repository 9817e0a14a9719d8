"""A partner that echoes our request back in any shape - a JSON object with the SAS URL taken apart into
``url``/``sig``/``se`` fields, a Python repr, form-encoded, %-encoded, an HTML page, .NET-escaped JSON -
never gets one of the run's signatures into any output: stderr, stdout, the ``--report`` file, the kept
run's blobs in Azurite, ``runs show`` (text and ``--json``), ``runs --item``, both contact sheets and the
HTTP page. The signatures looked for are every one the partners received, in every spelling."""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import re
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from devtools.images import png
from devtools.sandboxes.base import ECHO_FORMS
from shared.app.cli import main as cli_main
from shared.catalog.records import image_id_for
from tests.conftest import own_state

pytestmark = pytest.mark.timeout(180)


def cli(argv, env):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(argv, env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def signatures_sent(*sandboxes) -> set[str]:
    """Every SAS signature in every request body the sandboxes received or refused."""
    found: set[str] = set()

    def walk(value):
        if isinstance(value, str) and "sig=" in value:
            found.update(parse_qs(urlsplit(value).query).get("sig", []))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for sandbox in sandboxes:
        walk(sandbox.received)
        walk([r["body_sent"] for r in sandbox.rejected])
    return found


def spellings(signature: str) -> set[str]:
    """The signature as any encoder may write it, and every run of 10 of its letters and digits: any piece
    that long in an output is a leak, whatever happened to '+', '/' and '='."""
    forms = {signature, signature.rstrip("="), quote(signature, safe=""), quote(signature, safe="/"),
             quote(quote(signature, safe=""), safe=""), signature.replace("+", " "),
             json.dumps(signature)[1:-1].replace("+", "\\u002B").replace("/", "\\/"),
             html.escape(signature).replace("+", "&#43;"), base64.b64decode(signature).hex()}
    pieces = {p for p in re.split(r"[+/=]", signature) if len(p) >= 10}
    pieces |= {p[i:i + 10] for p in pieces for i in range(0, len(p) - 9, 5)}
    return forms | pieces


@pytest.fixture
def env(sync_env):
    return own_state(sync_env, HTTP_MAX_RETRIES="1", LOG_LEVEL="DEBUG", WALLIE_BATCH_SIZE="3")


@pytest.mark.parametrize("form", sorted(ECHO_FORMS))
def test_no_signature_of_the_run_reaches_any_output_however_a_partner_echoes_it(
        form, env, container, blob_service, wallie, traede, tmp_path, caplog, monkeypatch):
    from azure.functions import HttpRequest

    from functions.contact_sheet import contact_sheet

    for item in ("8001", "8002", "8003", "8004"):
        for name in ("front", "back"):
            container.upload_blob(f"{item}/BLK/{name}.png", png(4, 4, note=f"{item}{name}"))
    wallie.configure_faults(echo_credentials=form, reject={image_id_for("8002/BLK/front.png"),
                                                           image_id_for("8004/BLK/back.png")})
    traede.configure_faults(echo_credentials=form, reject={"8001", "8003"})
    report = tmp_path / "run.json"
    outputs: dict[str, str] = {}
    with caplog.at_level(logging.DEBUG):
        code, outputs["sync stdout"], outputs["sync stderr"] = cli(["sync", "--report", str(report)], env)
        assert code == 1  # the rejections
        outputs["--report"] = report.read_text(encoding="utf-8")
        for argv in (["runs"], ["runs", "show", "latest"], ["runs", "show", "latest", "--json"],
                     ["runs", "--item", "8001"], ["runs", "--item", "8002"],
                     ["runs", "sheet", "latest", "-o", str(tmp_path / "run.html")],
                     ["runs", "sheet", "--item", "8003", "-o", str(tmp_path / "item.html")]):
            code, out, err = cli(argv, env)
            assert code == 0, (argv, err)
            outputs[" ".join(argv[:3]) + " stdout"], outputs[" ".join(argv[:3]) + " stderr"] = out, err
        for page in ("run.html", "item.html"):
            outputs[page] = (tmp_path / page).read_text(encoding="utf-8")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        for params in ({"run": "latest"}, {"item": "8001"}):
            response = contact_sheet(HttpRequest("GET", "http://localhost/api/runs/sheet", params=params, body=b""))
            assert response.status_code == 200
            outputs[f"HTTP page {params}"] = response.get_body().decode("utf-8")
    outputs["log records"] = caplog.text
    history = blob_service.get_container_client(env["RUN_HISTORY_CONTAINER"])
    kept = [b.name for b in history.list_blobs()]
    assert any(name.startswith("sent/") for name in kept) and any(name.startswith("runs/") for name in kept)
    for name in kept:
        outputs[f"history blob {name}"] = history.download_blob(name).readall().decode("utf-8")

    issued = signatures_sent(wallie, traede)
    assert len(issued) >= 8, "every image's URL reached a partner, so every signature is known to the test"
    # The echoes did reach the outputs: this test would see a leak.
    echoed = {"json": "echo", "fields": "echo", "repr": "echo", "form": "echo", "urlencoded": "echo",
              "html": "Error", "dotnet": "echo", "values": "could not fetch"}[form]
    assert echoed in outputs["sync stderr"] and echoed in outputs["--report"]
    assert any(echoed in text for name, text in outputs.items() if name.startswith("history blob runs/"))
    leaks = [(where, spelled[:16]) for signature in issued for spelled in spellings(signature)
             for where, text in outputs.items() if spelled in text]
    assert leaks == [], f"{len(leaks)} signature spellings found, e.g. {leaks[:5]}"
    # The sheets still have working thumbnails: their own fresh signatures were not redacted away.
    assert re.search(r'<img src="[^"]*sig=(?!REDACTED)[^"&]{20,}', outputs["run.html"])
