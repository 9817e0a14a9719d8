"""Floods of one cause are a handful of lines: 1,000 blobs named with '//' and 1,000 whose itemid metadata
disagrees with their folder, and partners refusing dozens of records each with its own answer, give one
line per cause (a count and the first three names) on stderr, in ``runs show`` and on the contact sheet,
while ``--report`` and the kept run name every one with what is particular to it. Real Azurite, real
sandboxes."""
from __future__ import annotations

import io
import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools.images import png
from shared.app.cli import main as cli_main
from shared.catalog.records import image_id_for
from tests.conftest import own_state

pytestmark = pytest.mark.timeout(300)
SLASHES = [f"{9000 + n // 10}//img-{n}.jpg" for n in range(1000)]
MOVED = [f"{9200 + n // 10}/img-{n}.jpg" for n in range(1000)]  # metadata itemid names another product


def cli(*argv, env):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(list(argv), env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def flooded(container, sync_env, wallie, traede):
    env = own_state(sync_env)
    jobs = [(name, None) for name in SLASHES] + [(name, {"itemid": f"{8000 + n}"}) for n, name in enumerate(MOVED)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda job: container.upload_blob(job[0], b"x", metadata=job[1]), jobs))
    good = [f"{9500 + n}/front.png" for n in range(40)]
    for name in good:
        container.upload_blob(name, png(4, 4, note=name))
    # each refusal carries its own answer (the record's id), as real partners' do
    traede.configure_faults(reject={f"{9500 + n}" for n in range(20)})
    wallie.configure_faults(reject={image_id_for(name) for name in good[20:40]})
    return env


def test_two_thousand_blobs_of_two_causes_and_forty_refusals_are_a_handful_of_lines(flooded, tmp_path):
    report_file = tmp_path / "run.json"
    code, out, err = cli("sync", "--report", str(report_file), "--progress", "0", env=flooded)
    assert code == 1  # the refusals
    lines = err.splitlines()
    assert len(lines) <= 8 and len(err) < 4000, err  # before: 2,000 lines, 284 KB
    skipped = [line for line in lines if line.startswith("skipped: ")]
    assert len(skipped) == 2 and all(line.startswith("skipped: 1000 blobs: ") for line in skipped), skipped
    assert any("empty folder name ('//')" in line and "and 997 more" in line for line in skipped)
    assert any("metadata itemid disagrees with the blob's folder" in line for line in skipped)
    rejected = [line for line in lines if line.startswith("rejected: ")]
    assert len(rejected) == 2, rejected  # one per partner: the same cause, each record's own answer
    assert any(line.startswith("rejected: traede: 20 products (HTTP 422):") and "and 17 more; the first:" in line
               for line in rejected)
    assert any(line.startswith("rejected: wallie: 20 images (HTTP 400):") for line in rejected)

    # --report names every one, with what is particular to it
    report = json.loads(report_file.read_text())
    details = {s["blob"]: s["detail"] for s in report["skipped"]}
    assert len(details) == 2000
    assert details[SLASHES[7]] == f"rename it to {SLASHES[7].replace('//', '/')!r}"
    assert details[MOVED[7]] == "itemid '8007', folder '9200': move it under '8007/'"
    assert len({s["reason"] for s in report["skipped"]}) == 2  # ...under two causes
    refused = [p for p in report["rejected"] if p["partner"] == "traede"]
    assert len(refused) == 20 and len({p["detail"] for p in refused}) == 20  # each its own answer

    # runs show: the same handful of lines; --json: every one again
    code, out, err = cli("runs", "show", "latest", env=flooded)
    assert code == 0 and len(out.splitlines()) <= 14, out
    assert len([line for line in out.splitlines() if line.strip().startswith("skipped: 1000 blobs: ")]) == 2
    kept = json.loads(cli("runs", "show", "latest", "--json", env=flooded)[1])
    assert {s["blob"]: s["detail"] for s in kept["skipped"]} == details

    # the contact sheet: one heading per cause, with the count, and the first blobs with their details
    page = tmp_path / "sheet.html"
    assert cli("runs", "sheet", "latest", "-o", str(page), env=flooded)[0] == 0
    html = page.read_text(encoding="utf-8")
    headings = re.findall(r"<h3>([^<]*) <span class=\"count\">\((\d+)\)</span></h3>", html)
    assert [count for _, count in headings] == ["1000", "1000"]
    assert "rename it to &#x27;9000/img-0.jpg&#x27;" in html and len(html) < 200 * 3_000, html[-3000:]
