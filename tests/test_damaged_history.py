"""Every ``runs`` command survives a damaged, foreign or huge history: blobs written straight into Azurite
(a run report that is not JSON, a part with broken lines, wrong types inside valid JSON, blobs larger than
a report may be, names that are not runs). Each costs one line naming the blob and what is wrong, exit 1
(documented in ``runs --help``), bounded memory, and the rest of the history stays readable."""
from __future__ import annotations

import io
import json
import tracemalloc
from datetime import UTC, datetime

import pytest

from devtools.images import png
from shared.app.cli import main as cli_main
from shared.runs import names, validation
from tests.conftest import own_state

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def env(sync_env, monkeypatch):
    return own_state(sync_env, monkeypatch)


@pytest.fixture
def runs(env, blob_service):
    return blob_service.get_container_client(env["RUN_HISTORY_CONTAINER"])


def cli(*argv, env):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(list(argv), env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def good_run(container, env) -> str:
    """A real sync of three products: the history that must stay readable."""
    for item in ("7001", "7002", "7003"):
        container.upload_blob(f"{item}/BLK/front.png", png(4, 4, note=item))
    code, _, err = cli("sync", env=env)
    assert code == 0, err
    code, out, _ = cli("runs", env=env)
    return out.split()[0]


def report_name(run_id: str) -> str:
    return f"runs/{names.run_time(run_id):%Y/%m/%d}/{run_id}.json"


def a_newer_run_id() -> str:
    return names.new_run_id("cli-sync", datetime.now(UTC))


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text and "Error:" not in text.replace("DamagedHistory", ""), text


def one_line(err: str) -> str:
    """The one line about the damage (``runs --item`` and ``sheet`` also say what they did, on stderr)."""
    lines = [line for line in err.splitlines() if line.startswith("run history: ")]
    assert len(lines) == 1, err
    return lines[0]


def serve(**params):
    from azure.functions import HttpRequest

    from functions.contact_sheet import contact_sheet

    response = contact_sheet(HttpRequest("GET", "http://localhost/api/runs/sheet", params=params, body=b""))
    return response.status_code, response.get_body().decode("utf-8")


DAMAGED_REPORTS = {
    "not JSON": (b"{\x00 this is not json", "not a run report: not JSON"),
    "not UTF-8": (b"\xff\xfe{}", "not a run report: not UTF-8 text"),
    "a list": (b"[1, 2, 3]", "a list, not a JSON object"),
    "nested too deeply": (b"[" * 200_000, "not a run report: "),
    "a number of 5,000 digits": (b"1" * 5000, "not a run report: not JSON"),
    "rejected is a string": (json.dumps({"rejected": "many"}).encode(), "'rejected' is a string, expected a list"),
    "skipped holds numbers": (json.dumps({"skipped": [1, 2]}).encode(), "'skipped' is a list, expected a list of obj"),
    "a billion parts": (json.dumps({"parts": 10**9}).encode(), "'parts' is a number, expected a whole number from 1"),
    "delivered is a list": (json.dumps({"delivered": [3]}).encode(), "'delivered' is a list, expected an object"),
    "seconds is text": (json.dumps({"seconds": "fast"}).encode(), "'seconds' is a string, expected a number"),
    "another run's report": (json.dumps({"run": "20200101T000000.000Z-x-abcdef"}).encode(), "names another run"),
}


@pytest.mark.parametrize("case", list(DAMAGED_REPORTS))
def test_a_damaged_run_report_is_one_line_in_every_runs_command_and_the_rest_stays_readable(
        case, env, container, runs, tmp_path):
    good = good_run(container, env)
    data, expected = DAMAGED_REPORTS[case]
    bad = a_newer_run_id()
    runs.upload_blob(report_name(bad), data, metadata={"kind": "cli-sync", "ok": "yes"})

    code, out, err = cli("runs", env=env)  # the listing reads no report: both are listed
    assert code == 0 and out.split()[0] == bad and good in out
    for argv in (("runs", "show", bad), ("runs", "show", "latest", "--json"),
                 ("runs", "sheet", bad, "-o", str(tmp_path / "bad.html"))):
        code, out, err = cli(*argv, env=env)
        line = one_line(err)
        assert code == 1 and out == "" and err.strip() == line, (argv, code, out, err)
        assert report_name(bad) in line and expected in line, line
        no_traceback(err)
    assert not (tmp_path / "bad.html").exists()
    status, body = serve(run=bad)
    assert status == 500 and report_name(bad) in body and expected in body
    # the rest of the history is still readable
    code, out, err = cli("runs", "show", good, "--json", env=env)
    assert code == 0 and json.loads(out)["run"] == good
    assert cli("runs", "--item", "7002", env=env)[0] == 0
    assert cli("runs", "sheet", good, "-o", str(tmp_path / "good.html"), env=env)[0] == 0
    assert serve(run=good)[0] == 200


def test_a_part_with_broken_lines_loses_only_those_lines(env, container, runs, tmp_path):
    good = good_run(container, env)
    part = f"sent/{names.run_time(good):%Y/%m/%d}/{good}/000.jsonl"
    kept = runs.download_blob(part).readall().decode("utf-8").splitlines()
    assert len(kept) >= 6  # three products at two partners
    broken = [kept[0], "{not json", json.dumps({"partner": 5, "item": "7002", "outcome": "delivered"}), "[]",
              json.dumps({"partner": "traede", "item": "7002", "outcome": "delivered", "images": "all"}),
              "\xff".encode("latin-1").decode("latin-1"), *kept[1:]]
    runs.upload_blob(part, "\n".join(broken).encode("utf-8") + b"\n\xff\xfe\n", overwrite=True)

    code, out, err = cli("runs", "show", good, "--json", env=env)
    report = json.loads(out)  # still one valid JSON document, with every good entry
    sent = [e for entries in report["sent"].values() for e in entries]
    assert code == 1 and len(sent) == len(kept)
    line = one_line(err)
    assert part in line and "6 lines left out" in line and "line 2: not JSON" in line
    code, out, err = cli("runs", "--item", "7001", env=env)
    assert code == 1 and "7001" in out and "traede: delivered" in out and part in one_line(err)
    code, out, err = cli("runs", "sheet", good, "-o", str(tmp_path / "s.html"), env=env)
    assert code == 1 and part in one_line(err)
    page = (tmp_path / "s.html").read_text(encoding="utf-8")
    assert "Left out: run history: " in page and 'data-item="7003"' in page
    status, body = serve(run=good)
    assert status == 200 and "Left out: run history: " in body
    no_traceback(out, err)


def test_blobs_larger_than_history_writes_are_named_and_never_read(env, container, runs, monkeypatch):
    good = good_run(container, env)
    part = f"sent/{names.run_time(good):%Y/%m/%d}/{good}/000.jsonl"
    monkeypatch.setattr(validation, "MAX_PART_BYTES", 2000)
    runs.upload_blob(part, b'{"x": 1}\n' * 1000, overwrite=True)  # 9,000 bytes: more than a part may have
    code, out, err = cli("runs", "show", good, "--json", env=env)
    assert code == 1 and "sent" not in json.loads(out)  # the report, without the part it could not read
    line = one_line(err)
    assert part in line and "is 9,000 bytes, more than the 2,000 a part of a run's entries may have" in line

    # A real report of 33 MB (the limit is 32 MB): named from its size, never downloaded.
    monkeypatch.undo()
    huge = a_newer_run_id()
    runs.upload_blob(report_name(huge), b" " * (validation.MAX_REPORT_BYTES + 1024 * 1024))
    tracemalloc.start()
    code, out, err = cli("runs", "show", huge, env=env)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert code == 1 and report_name(huge) in one_line(err) and "more than the 33,554,432" in err
    assert peak < 8 * 1024 * 1024, f"{peak:,} bytes held: the blob was read"


def test_foreign_blobs_in_the_history_container_are_passed_over(env, container, runs):
    good = good_run(container, env)
    day = f"{names.run_time(good):%Y/%m/%d}"
    runs.upload_blob(f"runs/{day}/notes.txt", b"hello")
    runs.upload_blob(f"runs/{day}/20261399T000000.000Z-nightly-abcdef.json", b"{}")  # month 99: not a time
    runs.upload_blob(f"runs/{day}/20991231T235959.999Z-cli-sync-abcdef.json", b"{}",
                     metadata={"images": "%C2%B2", "seconds": "fast", "delivered": "wallie=%D9%A3,traede=" + "9" * 40,
                               "mode": "%1B%5B2J", "interrupted": "sig%3D" + "A" * 43 + "%3D"})
    runs.upload_blob(f"items/{day}/7001/not-a-run", b"", metadata={"parts": "many"})
    runs.upload_blob(f"wide/{day}/20261399T000000.000Z-full-abcdef", b"", metadata={"first": "0", "last": "9"})
    code, out, err = cli("runs", env=env)
    assert code == 0 and good in out and "20991231T235959.999Z" in out and "notes" not in out
    assert "\x1b" not in out and "\\x1b[2J" in out  # a terminal escape in metadata is shown, not obeyed
    assert "A" * 43 not in out  # ...and a signature in it is redacted like any output
    assert "20261399" not in out
    code, out, err = cli("runs", "--item", "7001", env=env)
    assert code == 0 and good in out
    no_traceback(out, err)


def test_a_report_too_large_to_keep_whole_keeps_the_first_of_each_list_and_the_counts(
        env, container, runs, monkeypatch, tmp_path):
    monkeypatch.setattr(validation, "MAX_REPORT_BYTES", 6000)
    monkeypatch.setattr(validation, "KEPT_PER_LIST", 5)
    for n in range(40):
        container.upload_blob(f"7100/junk-{n:02d}.txt", b"x")
    container.upload_blob("7100/front.png", png(4, 4))
    assert cli("sync", "--report", str(tmp_path / "r.json"), env=env)[0] == 0
    assert len(json.loads((tmp_path / "r.json").read_text())["skipped"]) == 40  # --report: every one
    code, out, err = cli("runs", "show", "latest", env=env)
    assert code == 0 and "skipped=40" in out and "names the first 5 of each list (skipped 40)" in out
    head = json.loads(cli("runs", "show", "latest", "--json", env=env)[1])
    assert len(head["skipped"]) == 5 and head["truncated"] == {"skipped": 40}
