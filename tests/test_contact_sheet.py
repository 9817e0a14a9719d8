"""The contact sheet, rendered in a real headless Chromium (from the OS packages, driven from here): every
thumbnail loads through its fresh SAS URL from real Azurite, a product a partner rejected is marked, blob
names cannot inject markup, and no secret or long-lived signature is in the page. Screenshots are kept in
tests/output/ (git-ignored) for people to look at."""
from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools.azurite import ACCOUNT_KEY
from devtools.images import jpeg, png
from shared.app.cli import main as cli_main
from tests.conftest import own_state

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "tests" / "output"
SECRETS = ("wallie-secret-pw", "traede-secret-token", "traede-secret-appkey", ACCOUNT_KEY, "AccountKey")
HOSTILE = '300003/<script>alert("x")</script> \'q\' & "dq".jpg'
pytestmark = pytest.mark.timeout(240)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        pytest.fail("Chromium is not installed, and this test renders the contact sheet in a real browser: "
                    "install it with 'apt-get install chromium' (scripts/setup.sh does when it runs as root) or put "
                    "'chromium' on PATH")
    return found


def render(page: Path, profile: Path, screenshot: Path | None = None) -> str:
    """The page's DOM once Chromium has loaded it from the file (thumbnails included), and a screenshot."""
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={profile}", "--virtual-time-budget=15000"]
    # A window taller than the page: every lazy thumbnail is in view, so every one is asked to load.
    dom = subprocess.run([*base, "--window-size=1280,30000", "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-2000:]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = subprocess.run([*base, "--window-size=1280,1600", f"--screenshot={screenshot}", page.as_uri()],
                              capture_output=True, text=True, timeout=120)
        assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    return dom.stdout


class Dom(HTMLParser):
    """What the checks need from the rendered DOM: figures, images, sections and script elements."""

    def __init__(self, text: str):
        super().__init__()
        self.figures: list[dict[str, str]] = []
        self.images: list[dict[str, str]] = []
        self.sections: list[dict[str, str]] = []
        self.scripts = 0
        self._section_text: list[list[str]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "figure":
            self.figures.append(a)
        elif tag == "img":
            self.images.append(a)
        elif tag == "script":
            self.scripts += 1
        elif tag == "section" and "product" in a.get("class", ""):
            self.sections.append(a)
            self._section_text.append([])

    def handle_data(self, data):
        if self._section_text:
            self._section_text[-1].append(data)

    def section_text(self, n: int) -> str:
        return " ".join(" ".join(self._section_text[n]).split())

    def section(self, item: str) -> tuple[dict[str, str], str]:
        n = next(i for i, s in enumerate(self.sections) if s.get("data-item") == item)
        return self.sections[n], self.section_text(n)


def assert_every_thumbnail_loaded(dom: Dom, expected: int) -> None:
    assert len(dom.images) == expected and len(dom.figures) == expected
    not_loaded = [f.get("data-blob") for f in dom.figures if f.get("data-loaded") != "yes"]
    assert not_loaded == [], f"thumbnails that did not load: {not_loaded}"
    widths = [int(i.get("data-natural-width", "0")) for i in dom.images]
    assert all(w > 0 for w in widths), widths


def assert_no_secret_and_only_short_lived_signatures(html: str) -> None:
    leaked = [s for s in SECRETS if s in html]
    assert leaked == [], f"secrets in the page: {leaked}"
    latest = datetime.now(UTC) + timedelta(hours=1, minutes=5)
    signed = re.findall(r'src="([^"]*sig=[^"]*)"', html)
    assert signed and html.count("sig=") == len(signed)  # a signature only in a thumbnail's URL
    for url in signed:
        query = parse_qs(urlsplit(url.replace("&amp;", "&")).query)
        expiry = datetime.strptime(query["se"][0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert expiry <= latest, f"a signature valid until {expiry}: {url}"
        assert query["sp"] == ["r"] and query["sr"] == ["b"]  # read-only, one blob


@pytest.fixture
def env(sync_env):
    return own_state(sync_env)


def cli(argv, env) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(argv, env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def seed(container) -> int:
    images = {"300001/BLK/front.jpg": jpeg(64, 64, (20, 20, 20)), "300001/BLK/back.jpg": jpeg(64, 64, (70, 70, 70)),
              "300001/WHT/front.jpg": jpeg(64, 64, (235, 235, 235)),
              "300002/RED/front.png": png(32, 32, (200, 30, 30)), "300002/RED/zoom detail.png": png(32, 32, (150, 0, 0)),
              HOSTILE: jpeg(48, 48, (30, 120, 200))}
    for name, data in images.items():
        container.upload_blob(name, data)
    container.upload_blob("300001/notes.txt", b"photographer's notes")
    return len(images)


def test_a_runs_sheet_loads_every_thumbnail_marks_the_rejected_product_and_leaks_nothing(env, container, traede,
                                                                                         tmp_path):
    count = seed(container)
    traede.configure_faults(reject={"300002"})
    assert cli(["sync"], env)[0] == 1  # TRAEDE rejected a product: the run failed, the rest was delivered
    page = tmp_path / "run.html"
    code, out, err = cli(["runs", "sheet", "latest", "-o", str(page)], env)
    assert code == 0 and out.strip() == str(page) and "thumbnails load for 1 hour" in err
    html = page.read_text(encoding="utf-8")
    dom = Dom(render(page, tmp_path / "chromium", OUTPUT / "contact-sheet-run.png"))

    assert_every_thumbnail_loaded(dom, count)
    assert [s["data-item"] for s in dom.sections] == ["300002", "300001", "300003"]  # problems first
    rejected, text = dom.section("300002")
    assert "problem" in rejected["class"] and "traede: rejected" in text and "rejected by sandbox rule" in text
    assert [f.get("class") for f in dom.figures if f["data-blob"].startswith("300002/")] == ["img bad", "img bad"]
    fine, text = dom.section("300001")
    assert "problem" not in fine["class"] and "traede: delivered" in text and "wallie: delivered" in text
    assert "skipped 300001/notes.txt : not an image" in text  # (text nodes joined by spaces)
    assert text.index("#1 · BLK-front.jpg") < text.index("#2 · back.jpg") < text.index("#3 · WHT-front.jpg")
    # The hostile name is data, never markup: one script element (the page's own), the name intact as text.
    assert dom.scripts == 1 and "<script>alert" not in html
    assert [f["data-blob"] for f in dom.figures if f["data-blob"].startswith("300003/")] == [HOSTILE]
    assert "valid for 1 hour" in html
    assert_no_secret_and_only_short_lived_signatures(html)


INJECTED = ('<script>document.documentElement.setAttribute("data-pwned", "inline script")</script>'
            '<img src="data:," onerror="document.documentElement.setAttribute(\'data-pwned\', \'handler\')">')


def test_under_the_sheets_policy_an_injected_script_does_not_run_and_the_sheets_own_script_does(
        env, container, traede, tmp_path):
    """Escaping is the first line of defence; the policy is the second: markup that slipped past escaping
    (simulated here by writing it into the page) runs no inline script and no event handler, while the
    page's own script (allowed by its hash) still marks every thumbnail loaded."""
    count = seed(container)
    assert cli(["sync"], env)[0] == 0
    page = tmp_path / "run.html"
    assert cli(["runs", "sheet", "latest", "-o", str(page)], env)[0] == 0
    html = page.read_text(encoding="utf-8")
    assert "unsafe-inline" not in html and " on" + "load=" not in html and " on" + "error=" not in html
    hostile = html.replace("<main>", "<main>" + INJECTED, 1)
    guarded = tmp_path / "guarded.html"
    guarded.write_text(hostile, encoding="utf-8")
    dom_text = render(guarded, tmp_path / "chromium")
    assert 'data-pwned="' not in dom_text  # (the attribute; the injected source text is in the DOM)
    figures = Dom(dom_text).figures  # (the injected image is no figure: the page's script ignores it)
    assert len(figures) == count and [f.get("data-loaded") for f in figures] == ["yes"] * count
    # The same markup without the policy does run: the check above would see a script that ran.
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", hostile), encoding="utf-8")
    assert 'data-pwned="' in render(bare, tmp_path / "chromium-bare")


def test_a_products_sheet_shows_each_run_that_touched_it_newest_first(env, container, traede, tmp_path):
    seed(container)
    traede.configure_faults(reject={"300002"})
    assert cli(["sync"], env)[0] == 1
    traede.configure_faults(reject=set())
    assert cli(["sync", "--item", "300002"], env)[0] == 0
    page = tmp_path / "item.html"
    assert cli(["runs", "sheet", "--item", "300002", "-o", str(page)], env)[0] == 0
    html = page.read_text(encoding="utf-8")
    dom = Dom(render(page, tmp_path / "chromium", OUTPUT / "contact-sheet-product.png"))

    assert_every_thumbnail_loaded(dom, 2 * 2)  # its two images, in each of the two runs
    assert len(dom.sections) == 2
    newest, older = dom.section_text(0), dom.section_text(1)
    assert "cli-sync" in newest and "traede: delivered" in newest and "problem" not in dom.sections[0]["class"]
    assert "traede: rejected" in older and "problem" in dom.sections[1]["class"]
    assert "traede holds" in html
    assert_no_secret_and_only_short_lived_signatures(html)


def test_a_runs_sheet_shows_at_most_200_products_problems_first_and_says_so(env, container, traede, tmp_path):
    items = [f"{8000 + n}" for n in range(230)]
    for item in items:
        container.upload_blob(f"{item}/front.png", png(4, 4, note=item))
    traede.configure_faults(reject={items[-1]})
    assert cli(["sync"], env)[0] == 1
    page = tmp_path / "big.html"
    assert cli(["runs", "sheet", "latest", "-o", str(page)], env)[0] == 0
    html = page.read_text(encoding="utf-8")
    dom = Dom(html)
    assert len(dom.sections) == 200 and dom.sections[0]["data-item"] == items[-1]
    assert "This page shows 200 of 230 products: every product with a problem first" in html
    assert len(html) < 200 * 3_000  # bounded: a few KB a product


def test_the_demo_writes_a_contact_sheet_whose_thumbnails_all_load(tmp_path):
    """README: the demo writes the sheet of its sync and prints its path. Its thumbnails come from the demo's
    Azurite, so the page is rendered while the demo keeps running. The screenshot is kept."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGES_", "WALLIE_", "TRAEDE_", "RUN_"))}
    env["PYTHONPATH"] = str(REPO)
    demo = subprocess.Popen([sys.executable, "-m", "devtools.demo", "--keep-running"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        printed, sheet = [], None
        deadline = time.monotonic() + 180
        for line in demo.stdout:
            printed.append(line)
            if line.startswith("contact sheet: "):
                sheet = Path(line.split(": ", 1)[1].strip())
            if "stops it." in line or time.monotonic() > deadline:
                break
        assert sheet is not None and sheet.is_file(), "".join(printed)[-3000:]
        dom = Dom(render(sheet, tmp_path / "chromium", OUTPUT / "contact-sheet.png"))
        assert_every_thumbnail_loaded(dom, 9)  # the demo's nine sample images
        assert [s["data-item"] for s in dom.sections] == ["100001", "100002", "100003"]
        html = sheet.read_text(encoding="utf-8")
        assert "stray-upload.jpg" in html and "Thumbs.db" in html  # skipped, with the reasons
        assert_no_secret_and_only_short_lived_signatures(html)
        assert "wallie-pass" not in html and "traede-token" not in html and "traede-app-key" not in html
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(60)


# -- the optional HTTP page of the deployed app -------------------------------------------------------------

def test_the_http_page_needs_a_function_key_and_serves_the_same_sheet(indexed, env, container, traede,
                                                                      monkeypatch, tmp_path):
    from azure.functions import HttpRequest

    from functions.contact_sheet import contact_sheet

    trigger = next(b for b in indexed["contact_sheet"].get_bindings() if b.type == "httpTrigger").get_dict_repr()
    assert str(getattr(trigger["authLevel"], "value", trigger["authLevel"])).lower() == "function"
    assert trigger["route"] == "runs/sheet" and [str(getattr(m, "value", m)) for m in trigger["methods"]] == ["GET"]

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    seed(container)
    traede.configure_faults(reject={"300002"})
    assert cli(["sync"], env)[0] == 1

    def get(**params):
        response = contact_sheet(HttpRequest("GET", "http://localhost/api/runs/sheet", params=params, body=b""))
        return response.status_code, response.get_body().decode("utf-8"), response

    status, body, response = get(run="latest")
    assert status == 200 and response.mimetype == "text/html" and "Contact sheet: run" in body
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Referrer-Policy"] == "no-referrer"
    policy = response.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in policy and "script-src 'sha256-" in policy and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy and response.headers["X-Content-Type-Options"] == "nosniff"
    # the page carries the same policy for when it is saved to a file (a <meta> policy ignores frame-ancestors)
    meta = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', body)
    assert meta and meta.group(1) + "; frame-ancestors 'none'" == policy
    page = tmp_path / "served.html"
    page.write_text(body, encoding="utf-8")
    assert_every_thumbnail_loaded(Dom(render(page, tmp_path / "chromium")), 6)
    assert_no_secret_and_only_short_lived_signatures(body)
    status, body, _ = get(item="300002")
    assert status == 200 and "Contact sheet: product 300002" in body and "traede: rejected" in body
    assert get(run="20260101T000000.000Z-nightly-abcdef")[0] == 404
    assert get(item="nope")[:2] == (404, "no kept run touched product 'nope' in the last 30 days")
    assert get(run="latest", item="300002")[0] == 400


def test_the_sheet_shows_each_images_verdict_and_the_rendition_a_browser_can_show(env, container, traede, tmp_path):
    """A TIFF (no browser but Safari shows one) is sent as its JPEG rendition: the sheet's thumbnail is that
    rendition, so it loads in Chromium, and the caption says what the original is and why it was converted;
    a PNG stored as application/octet-stream says it was served with its real type. `runs show` counts them."""
    from PIL import Image

    tiff = io.BytesIO()
    Image.new("RGB", (640, 480), (20, 120, 40)).save(tiff, "TIFF")
    container.upload_blob("300004/BLK/master.tif", tiff.getvalue())
    container.upload_blob("300004/BLK/front.png", png(32, 32, (200, 30, 30)))  # untyped
    import uuid

    env = {**env, "RENDITIONS_CONTAINER": f"renditions-{uuid.uuid4().hex[:10]}"}
    assert cli(["sync"], env)[0] == 0
    page = tmp_path / "web.html"
    assert cli(["runs", "sheet", "latest", "-o", str(page)], env)[0] == 0
    html = page.read_text(encoding="utf-8")
    dom = Dom(render(page, tmp_path / "chromium", OUTPUT / "contact-sheet-web.png"))
    assert_every_thumbnail_loaded(dom, 2)  # the TIFF's thumbnail is its rendition: Chromium shows no TIFF
    rendition_src = next(i["src"] for i in dom.images if "master" in i["src"])
    assert f"/{env['RENDITIONS_CONTAINER']}/300004/BLK/master.tif.jpg?" in rendition_src
    _, text = dom.section("300004")
    assert "TIFF 640x480 RGB" in text and "sent as its web rendition: TIFF is not a web format" in text
    assert "PNG 32x32 RGB" in text and "served as image/png (stored type wrong or missing)" in text
    assert_no_secret_and_only_short_lived_signatures(html)
    code, out, _ = cli(["runs", "show", "latest"], env)
    assert code == 0 and "  images    checked=2 converted=1 renditions=1 retyped=1" in out, out
    code, out, _ = cli(["runs", "--item", "300004"], env)
    assert "master.jpg (type 99, colour BLK, key " in out and ", TIFF 640x480 RGB: its web rendition)" in out, out
