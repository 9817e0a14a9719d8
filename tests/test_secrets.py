"""No password, token, app key or SAS signature in any log record (ours, urllib3, azure) or CLI output,
even at DEBUG, during a run full of faults, through both boundaries: the CLI and the Functions jobs."""
import http.server
import io
import json
import logging
import re
import threading

import pytest

from devtools.images import png
from shared.app import jobs
from shared.app.cli import main as cli_main
from tests.conftest import TRAEDE_CREDENTIALS, WALLIE_CREDENTIALS

SIG = re.compile(r"(?i)sig(=|%3D)(?!REDACTED)")
NOISY = ("shared", "urllib3", "azure", "requests")


class EchoingPartner(http.server.BaseHTTPRequestHandler):
    """A badly behaved TRAEDE: answers 500 with our own request (headers and body) in the error text."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        reply = json.dumps({"message": "boom", "echo": {"headers": dict(self.headers), "body": body}}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def echoing_partner():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoingPartner)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def everything_at_debug():
    """Every logger that might talk, at DEBUG; restored afterwards."""
    saved = {name: logging.getLogger(name).level for name in NOISY}
    root_handlers, root_level = logging.getLogger().handlers[:], logging.getLogger().level
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().handlers[:] = root_handlers
    logging.getLogger().setLevel(root_level)


def faulty_env(sync_env, wallie, echo_url):
    wallie.configure_faults(error_rate=0.3, seed=5)
    wallie.token_lifetime = 1.0
    return {**sync_env, "TRAEDE_BASE_URL": echo_url, "HTTP_MAX_RETRIES": "2", "WALLIE_BATCH_SIZE": "2",
            "LOG_LEVEL": "DEBUG"}


def secrets_in(text, wallie):
    issued = list(wallie._tokens)  # the access tokens the sandbox handed out during the run
    found = [s for s in [WALLIE_CREDENTIALS["password"], *TRAEDE_CREDENTIALS.values(), *issued] if s in text]
    found += SIG.findall(text)
    return found


def upload(container):
    for n in range(6):
        container.upload_blob(f"9100/10/{n}.png", png(note=str(n)))


def test_cli_output_and_every_log_record_at_debug_hold_no_secret(
        container, sync_env, wallie, echoing_partner, everything_at_debug, tmp_path):
    upload(container)
    env = faulty_env(sync_env, wallie, echoing_partner)
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["sync", "--report", str(tmp_path / "r.json")], env=env, stdout=out, stderr=err)
    text = out.getvalue() + err.getvalue() + (tmp_path / "r.json").read_text()
    assert code == 1
    assert "DEBUG urllib3" in text  # the capture really ran at DEBUG
    assert "boom" in text and "REDACTED" in text  # the echo reached the output, redacted
    assert secrets_in(text, wallie) == []
    assert wallie._tokens, "the run must have used tokens for this test to mean anything"


def test_functions_path_redacts_every_handler_the_host_installed(
        container, sync_env, wallie, echoing_partner, everything_at_debug):
    upload(container)
    env = faulty_env(sync_env, wallie, echoing_partner)
    stream = io.StringIO()
    host_handler = logging.StreamHandler(stream)  # stands in for the Functions host's handler
    host_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().handlers[:] = [host_handler]
    logging.getLogger().setLevel(logging.DEBUG)
    report = jobs.nightly(env)
    jobs.log_report(report)
    with pytest.raises(jobs.SyncFailed) as failed:
        jobs.raise_if_not_ok(report)
    text = stream.getvalue() + str(failed.value) + json.dumps(report.to_dict())
    assert "DEBUG urllib3" in text and "boom" in text
    assert secrets_in(text, wallie) == []


def test_log_level_controls_our_verbosity(container, sync_env, wallie, traede):
    upload(container)
    container.upload_blob("9100/notes.txt", b"x")
    for level, shown in (("WARNING", False), ("INFO", True)):
        jobs.reset()
        stream = io.StringIO()
        logging.getLogger().handlers[:] = [logging.StreamHandler(stream)]
        try:
            jobs.log_report(jobs.nightly({**sync_env, "LOG_LEVEL": level}), logging.getLogger("shared.app.jobs"))
        finally:
            logging.getLogger().handlers[:] = []
        assert ("skipped: '9100/notes.txt'" in stream.getvalue()) is shown, (level, stream.getvalue())


@pytest.mark.parametrize("echoed", [
    "x.jpg?sv=2024&amp;sig={sig}&amp;se=1",        # an HTML error page
    "x.jpg?sv=2024\\u0026sig={sig}\\u0026se=1",   # JSON from .NET: & escaped by default
    "x.jpg?sv=2024\\u0026sig\\u003d{sig}",         # ... and = too
    "x.jpg?sv=2024&sig={sig}",
    "url=x.jpg%3Fsv%3D2024%26sig%3D{sig}",
])
def test_a_sas_signature_is_redacted_however_a_partner_echoes_the_url(echoed):
    from shared.redact import redact

    signature = "QMRq6b1z37diFr8OGvSGuabbXgPZP3HIzDTIBOurmZI%3D"
    text = f"422: could not download {echoed.format(sig=signature)}"
    assert "QMRq6b1z" not in redact(text) and "REDACTED" in redact(text)


def _signature(seed: int) -> str:
    """A signature as SasSigner makes one: base64 of an HMAC-SHA256, with '+' and '/' in it."""
    import base64
    import hashlib
    import hmac

    attempt = 0
    while True:
        value = base64.b64encode(hmac.new(b"key", f"{seed}-{attempt}".encode(), hashlib.sha256).digest()).decode()
        if "+" in value and "/" in value:
            return value
        attempt += 1


def _structured_echoes(sig: str) -> dict[str, str]:
    import html
    from urllib.parse import quote, urlencode

    base = "https://acct.blob.core.windows.net/images/300001/BLK/front.jpg"
    url = f"{base}?sv=2024-08-04&se=2026-01-01T00%3A00%3A00Z&sr=b&sp=r&sig={quote(sig, safe='/')}"
    return {
        "JSON fields": json.dumps({"url": base, "sv": "2024-08-04", "sig": sig, "se": "2026-01-01"}),
        "JSON array of pairs": json.dumps([["sv", "2024-08-04"], ["sig", sig]]),
        "Python repr": repr({"url": base, "sig": [sig], "se": ["2026"]}),
        "repr of pairs": repr([("sig", sig), ("se", "2026")]),
        "form-encoded fields": urlencode({"url": base, "sig": sig}),
        "URL %-encoded twice": quote(quote(url, safe=""), safe=""),
        "HTML page": html.escape(url),
        "HTML numeric entities": sig.replace("+", "&#43;").replace("/", "&#x2F;").replace("=", "&#61;"),
        ".NET JSON": json.dumps({"url": url}).replace("&", "\\u0026").replace("+", "\\u002B"),
        "PHP JSON": json.dumps({"url": url}).replace("/", "\\/"),
        "JSON in JSON": json.dumps(json.dumps({"sig": sig})),
        "XML": f"<params><sig>{sig}</sig></params>",
        "in a path": f"GET /cache/{sig}/front.jpg failed",
    }


def _pieces(sig: str) -> list[str]:
    return [p for p in re.split(r"[+/=]", sig) if len(p) >= 8]


@pytest.mark.parametrize("form", list(_structured_echoes("x")))
def test_a_signature_nobody_registered_is_known_by_its_shape_in_any_structured_echo(form):
    """Shape: base64 of 32 bytes (43 characters and '='), in any spelling; signed elsewhere, never remembered."""
    from shared.redact import redact

    sig = _signature(7)
    text = _structured_echoes(sig)[form]
    clean = redact(text)
    assert "REDACTED" in clean and not [p for p in _pieces(sig) if p in clean], clean


@pytest.mark.parametrize("form", list(_structured_echoes("x")))
def test_a_signature_this_process_signed_is_known_by_value_even_without_its_padding(form):
    from shared.redact import redact, remember_signature

    sig = _signature(11)
    remember_signature(sig)
    for text in (_structured_echoes(sig)[form].replace(sig, sig.rstrip("=")),
                 f"could not fetch front.jpg ({sig.rstrip('=')})", f"x{sig.rstrip('=')}y"):
        clean = redact(text)
        assert not [p for p in _pieces(sig) if p in clean], (text, clean)


def test_a_short_signature_is_known_by_its_key_in_any_notation():
    """Not an HMAC, not ours: still a 'sig' value, as a field of a JSON object, a repr, a pair, XML, a query."""
    from shared.redact import redact

    for text in ('{"sig": "abcdEFGH1234"}', "{'sig': ['abcdEFGH1234']}", '[["sig", "abcdEFGH1234"]]',
                 "<sig>abcdEFGH1234</sig>", "x%2526sig%253DabcdEFGH1234", "sig: abcdEFGH1234",
                 '{\\"sig\\": \\"abcdEFGH1234\\"}', "&quot;sig&quot;: &quot;abcdEFGH1234&quot;"):
        assert "abcdEFGH1234" not in redact(text), text


def test_ordinary_text_is_left_as_it_is():
    from shared.redact import redact

    for text in ("skipped: 2000 blobs: metadata itemid disagrees with the folder: '1/a.jpg', '2/b.jpg'",
                 "existance_key 6f2b9c1e-4c1a-5d7e-9a3b-2f1e0c8d7b6a:md5:00112233445566778899aabbccddeeff",
                 "Content-MD5 1B2M2Y8AsgTpgAmY7PhCfg== and a signature of the design",
                 "https://acct.blob.core.windows.net/product-images/100001/100/front.jpg",
                 "100001/BLK/a-very-long-file-name-of-a-studio-shot-without-any-separator.jpg"):
        assert redact(text) == text


def test_the_filter_of_issued_signatures_is_bounded_and_remembers_the_latest():
    """Two generations of fixed size: the last CAPACITY signatures are always known, memory never grows."""
    from shared.redact import _IssuedSignatures

    issued = _IssuedSignatures()
    issued.CAPACITY = 100
    signatures = [_signature(n) for n in range(350)]
    for sig in signatures:
        issued.add(sig)
    assert all(sig[:43] in issued for sig in signatures[-100:])  # the latest: always
    assert sum(sig[:43] in issued for sig in signatures[:150]) <= 2  # the oldest: forgotten (rare false hit)
    assert [len(b) for b in (issued._current, issued._previous)] == [_IssuedSignatures.BITS // 8] * 2
