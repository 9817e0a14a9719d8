"""Server plumbing shared by the partner sandboxes.

The sandboxes are real HTTP servers rather than mocks so that the clients' keep-alive, retries, timeouts
and error mapping are exercised exactly as against the partners. This module holds everything that is not
a partner's contract: the threaded HTTP/1.1 server, JSON replies, fault injection, the `/_sandbox/` control
endpoints, the download helper and the counters. `wallie.py` and `traede.py` only add their routes.
"""

from __future__ import annotations

import copy
import hashlib
import http.server
import ipaddress
import json
import logging
import random
import socket
import struct
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from email.message import Message
from typing import Any

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_sandbox/"
DOWNLOAD_TIMEOUT = 10.0
# What a misbehaving gateway might answer: claims to be JSON, is not.
GARBAGE_BODY = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>\x00{"
BASE_COUNTERS = (
    "requests",
    "injected_500",
    "injected_429",
    "injected_malformed",
    "downloads",
    "download_failures",
    "injected_hang",
    "injected_reset",
    "injected_413",
    "injected_redirect",
    "injected_drip",
    "injected_slow",
)
HANG_LIMIT_S = 600.0  # a hung request is released at the latest when the sandbox stops, or after this


# --------------------------------------------------------------------------------------------------------
# Requests and replies


@dataclass(frozen=True)
class Request:
    """One HTTP request as the partner handlers see it (body already read in full)."""

    method: str
    path: str
    headers: Message
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def is_json(self) -> bool:
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        return content_type == "application/json"

    def json(self) -> Any:
        """Parse the body; raises ValueError when it is not JSON."""
        return json.loads(self.body.decode("utf-8"))

    def body_sent(self) -> Any:
        """The body for the `rejected` log: parsed JSON when possible, else the raw text."""
        try:
            return self.json()
        except ValueError:
            return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # no answer: the connection is reset (RST) instead
    drip_bytes_per_s: float = 0.0  # write the answer this slowly


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode("utf-8"), "application/json", dict(headers or {}))


def empty_reply(status: int = 200) -> Reply:
    return Reply(status, b"", None)


@dataclass(frozen=True)
class Route:
    """A partner endpoint: POST handler plus the counter that tallies every request it receives."""

    handler: Callable[[Request], Reply]
    counter: str | None = None


# --------------------------------------------------------------------------------------------------------
# Validation helpers shared by both contracts


def is_int(value: Any) -> bool:
    """JSON integers only: `true` is a bool, and partners reject it where a number is due."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def is_http_url(value: Any) -> bool:
    """An absolute http(s) URL with a host: the partner must be able to download it."""
    if not isinstance(value, str) or any(ch.isspace() for ch in value):
        return False
    try:
        parts = urllib.parse.urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------------------
# Faults


def _check_fault(name: str, value: Any) -> Any:
    """Validate and normalise one fault setting, so a typo fails loudly instead of silently doing nothing."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if name in ("error_rate", "throttle_rate", "slow_rate"):
        if not is_number or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
        return float(value)
    if name in ("latency_ms", "latency_jitter_ms", "slow_ms"):
        if not is_number or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        return value
    if name in ("retry_after", "seed"):
        if not isinstance(value, int) or isinstance(value, bool) or (name == "retry_after" and value < 0):
            raise ValueError(f"{name} must be an integer{' >= 0' if name == 'retry_after' else ''}, got {value!r}")
        return value
    if name == "echo_credentials":
        if value is True:
            return "json"
        if value is False or value == "":
            return False
        if not isinstance(value, str) or value not in ECHO_FORMS:
            raise ValueError(f"echo_credentials must be true, false or one of {', '.join(ECHO_FORMS)}, got {value!r}")
        return value
    if name in ("outage", "malformed", "hang"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if name in ("reset_after_apply", "max_body_bytes", "slow_next"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        return value
    if name == "drip_bytes_per_s":
        if not is_number or value < 0:
            raise ValueError(f"drip_bytes_per_s must be a number >= 0 (0 = off), got {value!r}")
        return float(value)
    if name == "redirect_to":
        if not isinstance(value, str) or (value and not is_http_url(value)):
            raise ValueError(f"redirect_to must be an http(s) URL or empty, got {value!r}")
        return value
    if name == "reject":
        if isinstance(value, (str, bytes)) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"reject must be a collection of id strings, got {value!r}")
        return set(value)
    raise ValueError(f"unknown fault setting {name!r}")


@dataclass(frozen=True)
class FaultDecision:
    outage: bool = False
    latency_s: float = 0.0
    throttle: bool = False
    retry_after: int = 1
    error: bool = False
    malformed: bool = False


@dataclass
class Faults:
    """Fault injection switches, settable at any time from any thread.

    Every assignment is validated. Assigning `seed` (even the same value) restarts the random sequence so
    a test that sets rates and a seed gets the same faults on every run.
    """

    error_rate: float = 0.0
    throttle_rate: float = 0.0
    retry_after: int = 1
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0  # each request waits latency_ms plus a uniform 0..jitter (seeded draw)
    outage: bool = False
    malformed: bool = False
    reject: set[str] = field(default_factory=set)
    seed: int = 0
    # Network-level misbehaviour (each off by default):
    hang: bool = False  # accept the request, never answer (until the sandbox stops)
    reset_after_apply: int = 0  # the next N requests are applied, then the connection is reset, no answer
    drip_bytes_per_s: float = 0.0  # the answer (status line included) trickles out at this rate
    max_body_bytes: int = 0  # a request body larger than this gets 413 Payload Too Large
    redirect_to: str = ""  # answer 307 with Location: <redirect_to><path>, before looking at anything else
    # Error answers quote the request back, headers and body, in one of ECHO_FORMS (True: "json").
    echo_credentials: bool | str = False
    # A partner that sits on a request, then applies it (whether or not the client is still there): the next
    # ``slow_next`` requests wait ``slow_ms``; besides, a ``slow_rate`` share of all requests waits 0..slow_ms.
    slow_next: int = 0
    slow_rate: float = 0.0
    slow_ms: float = 0.0

    def __setattr__(self, name: str, value: Any) -> None:
        value = _check_fault(name, value)
        with self._lock:
            object.__setattr__(self, name, value)
            if name == "seed":
                object.__setattr__(self, "_rng", random.Random(value))

    @property
    def _lock(self) -> threading.RLock:
        # Created on first use because the dataclass __init__ assigns fields before any __post_init__.
        return self.__dict__.setdefault("_lock_", threading.RLock())

    def update(self, **settings: Any) -> None:
        """Apply several settings at once; nothing changes if any of them is invalid."""
        checked = {name: _check_fault(name, value) for name, value in settings.items()}
        with self._lock:
            for name, value in checked.items():
                setattr(self, name, value)

    def restore_defaults(self) -> None:
        defaults = Faults()
        self.update(**{f.name: getattr(defaults, f.name) for f in fields(Faults)})

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "error_rate": self.error_rate,
                "throttle_rate": self.throttle_rate,
                "retry_after": self.retry_after,
                "latency_ms": self.latency_ms,
                "latency_jitter_ms": self.latency_jitter_ms,
                "outage": self.outage,
                "malformed": self.malformed,
                "reject": sorted(self.reject),
                "seed": self.seed,
                "hang": self.hang,
                "reset_after_apply": self.reset_after_apply,
                "drip_bytes_per_s": self.drip_bytes_per_s,
                "max_body_bytes": self.max_body_bytes,
                "redirect_to": self.redirect_to,
                "echo_credentials": self.echo_credentials,
                "slow_next": self.slow_next,
                "slow_rate": self.slow_rate,
                "slow_ms": self.slow_ms,
            }

    def take_reset(self) -> bool:
        """Whether this request is one of the next ``reset_after_apply`` ones (and count it)."""
        with self._lock:
            if self.reset_after_apply <= 0:
                return False
            object.__setattr__(self, "reset_after_apply", self.reset_after_apply - 1)
            return True

    def take_slow(self) -> float:
        """Seconds this request sits before it is handled (0: not slowed); counts a ``slow_next`` one."""
        with self._lock:
            if self.slow_next > 0:
                object.__setattr__(self, "slow_next", self.slow_next - 1)
                return self.slow_ms / 1000.0
            if self.slow_rate and self._rng.random() < self.slow_rate:
                return self._rng.random() * self.slow_ms / 1000.0
            return 0.0

    def decide(self) -> FaultDecision:
        """Draw this request's fault. Both draws happen under the lock so the sequence stays reproducible."""
        with self._lock:
            if self.outage:
                return FaultDecision(outage=True)
            throttle = self._rng.random() < self.throttle_rate
            error = self._rng.random() < self.error_rate
            jitter = self._rng.random() * self.latency_jitter_ms if self.latency_jitter_ms else 0.0
            return FaultDecision(
                latency_s=(self.latency_ms + jitter) / 1000.0,
                throttle=throttle,
                retry_after=self.retry_after,
                error=error,
                malformed=self.malformed,
            )


# --------------------------------------------------------------------------------------------------------
# HTTP server


class _BadRequest(Exception):
    pass


ECHO_FORMS = {
    "json": "the headers and the body as JSON text: {'echo': {'headers': {...}, 'body': '<our JSON>'}}",
    "fields": "each SAS URL of the body taken apart: {'url': ..., 'sv': ..., 'sig': ..., 'se': ...}, as JSON",
    "repr": "a Python repr of the headers, the parsed body and each SAS URL taken apart (a debug page's dump)",
    "values": "a log line of each SAS URL's address and parameter values, without names, base64 padding trimmed",
    "form": "each SAS URL's parts form-encoded: url=...&sv=...&sig=...",
    "urlencoded": "the whole body %-encoded once (a logged query string)",
    "html": "an HTML error page with the body HTML-escaped",
    "dotnet": "JSON as .NET writes it by default: & + < > ' escaped as \\u0026 \\u002B ...",
}


def _with_echo(reply: Reply, request: Request, form: str = "json") -> Reply:
    """A careless partner's error page: it quotes our request, credentials included, in ``form``."""
    try:
        payload = json.loads(reply.body) if reply.body else {}
    except ValueError:
        payload = {"message": reply.body.decode("utf-8", errors="replace")}
    if not isinstance(payload, dict):
        payload = {"message": payload}
    headers = dict(request.headers.items())
    text = request.body.decode("utf-8", errors="replace")
    if form == "html":
        page = (f"<html><body><h1>{reply.status} Error</h1><p>{_html(json.dumps(payload))}</p><pre>"
                f"{_html(json.dumps(headers))}\n{_html(text)}</pre></body></html>")
        return Reply(reply.status, page.encode("utf-8"), "text/html", reply.headers)
    urls = _signed_urls(request.body_sent())
    if form == "fields":
        payload["echo"] = {"headers": headers, "images": [_url_fields(u) for u in urls]}
    elif form == "repr":
        payload["echo"] = repr({"headers": headers, "body": request.body_sent(),
                                "images": [_url_fields(u) for u in urls]})
    elif form == "values":
        lines = []
        for fields in map(_url_fields, urls):
            address = fields.pop("url")
            lines.append(f"could not fetch {address} ({', '.join(v.rstrip('=') for v in fields.values())})")
        payload["echo"] = "; ".join(lines)
    elif form == "form":
        payload["echo"] = "&".join(urllib.parse.urlencode(_url_fields(u)) for u in urls)
    elif form == "urlencoded":
        payload["echo"] = urllib.parse.quote(text, safe="")
    else:
        payload["echo"] = {"headers": headers, "body": text}
    body = json.dumps(payload)
    if form == "dotnet":
        for char in "&+<>'":
            body = body.replace(char, f"\\u{ord(char):04X}")
    return Reply(reply.status, body.encode("utf-8"), "application/json", reply.headers)


def _html(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def _signed_urls(value: Any) -> list[str]:
    """Every URL with a query inside a parsed body (the SAS URLs we were sent)."""
    if isinstance(value, str):
        return [value] if is_http_url(value) and "?" in value else []
    if isinstance(value, dict):
        return [u for v in value.values() for u in _signed_urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in _signed_urls(v)]
    return []


def _url_fields(url: str) -> dict[str, str]:
    """A SAS URL as a careless API dumps it: the address, then each query parameter a field of its own."""
    base, _, query = url.partition("?")
    return {"url": base, **dict(urllib.parse.parse_qsl(query, keep_blank_values=True))}


class _Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler: always reads the whole body and always sends Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "PartnerSandbox/1.0"
    # Headers and body go out as two writes; with Nagle on, the body waits ~40 ms for the client's
    # delayed ACK on every keep-alive request.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: one stderr line per request would drown test and benchmark output."""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except _BadRequest as exc:
            self.close_connection = True
            self._write(json_reply(400, {"message": str(exc)}))
            return
        path = urllib.parse.urlsplit(self.path).path
        self._write(self.server.sandbox._handle(Request(self.command, path, self.headers, body)))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise _BadRequest(f"invalid Content-Length {length!r}") from None
        if size < 0:
            raise _BadRequest(f"invalid Content-Length {length!r}")
        body = self.rfile.read(size)
        if len(body) != size:
            raise _BadRequest("connection closed before the whole body arrived")
        return body

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest("invalid chunked encoding") from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _write(self, reply: Reply) -> None:
        if reply.reset:
            self._reset()
            return
        if reply.drip_bytes_per_s:
            self._drip(reply)
            return
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)


    def _reset(self) -> None:
        """Abort the connection with a TCP reset: the client sees 'connection reset by peer'."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.connection.close()

    def _drip(self, reply: Reply) -> None:
        """The whole answer, status line first, one byte at a time at ``drip_bytes_per_s``."""
        head = [f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}"]
        if reply.content_type:
            head.append(f"Content-Type: {reply.content_type}")
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        head += [f"Content-Length: {len(reply.body)}", "Connection: close", "", ""]
        data = "\r\n".join(head).encode("latin-1") + reply.body
        self.close_connection = True
        pause = 1.0 / reply.drip_bytes_per_s
        stopping = self.server.sandbox._stopping
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                if stopping.wait(pause):
                    return
        except OSError:
            pass  # the client gave up: that is what a deadline is for


class _Server(http.server.ThreadingHTTPServer):
    """Threaded server that can drop idle keep-alive connections on stop.

    `block_on_close` is off because a client's pooled keep-alive connection would otherwise make
    `server_close()` wait forever; instead `stop()` shuts the open sockets down.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: at SYNC_CONCURRENCY=64, two lanes' workers connecting at
    # once were refused and retried. A real partner's backlog is not 5.
    request_queue_size = 128
    sandbox: Sandbox

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._connections_lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-request are normal; anything else is a sandbox bug worth a traceback."""
        log.debug("connection from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


# --------------------------------------------------------------------------------------------------------
# Downloads


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def download(url: str, timeout: float = DOWNLOAD_TIMEOUT) -> dict[str, Any]:
    """GET the url like the partner would; raises on any failure. Returns {"url", "sha256", "size",
    "content_type"} and what a browser would make of it (``web_check``): {"format", "width", "height",
    "web_image", "problem"}.

    Loopback URLs (Azurite, test servers) bypass any proxy from the environment, as the partner's own
    downloader would not go through the developer's proxy either.
    """
    handlers = [urllib.request.ProxyHandler({})] if _is_loopback(url) else []
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers={"User-Agent": "PartnerSandbox-Downloader/1.0"})
    with opener.open(request, timeout=timeout) as response:
        if response.status != 200:
            raise OSError(f"HTTP {response.status} {response.reason}")
        content_type = response.headers.get("Content-Type") or ""
        digest, size, kept = hashlib.sha256(), 0, bytearray()
        while chunk := response.read(65536):
            digest.update(chunk)
            size += len(chunk)
            if size <= CHECK_BYTES:
                kept += chunk
    result = {"url": url, "sha256": digest.hexdigest(), "size": size, "content_type": content_type}
    result.update(web_check(bytes(kept) if size <= CHECK_BYTES else None, content_type))
    return result


CHECK_BYTES = 64 * 2**20  # larger downloads are hashed, not decoded
WEB_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}


def web_check(data: bytes | None, content_type: str) -> dict[str, Any]:
    """What a browser makes of a download: it shows it when its bytes decode whole as JPEG, PNG, GIF or WebP
    and the response says that type (``web_image``); ``problem`` says why not."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is in requirements-dev.txt
        return {"web_image": None, "problem": "Pillow is not installed: not checked"}
    if data is None:
        return {"web_image": None, "problem": f"larger than {CHECK_BYTES} bytes: not checked"}
    import io
    import warnings

    out: dict[str, Any] = {"format": None, "width": 0, "height": 0}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            out.update(format=image.format, width=image.size[0], height=image.size[1], mode=image.mode)
            image.load()  # every pixel: a cut-off file fails here
    except Exception as exc:  # noqa: BLE001 - any decoder failure: a browser shows a broken image
        return {**out, "web_image": False, "problem": f"does not decode: {type(exc).__name__}: {exc}"}
    declared = content_type.split(";", 1)[0].strip().lower()
    if out["format"] not in WEB_TYPES:
        return {**out, "web_image": False, "problem": f"{out['format']} is not a web format"}
    if out["mode"] in ("CMYK", "YCbCr") and out["format"] == "JPEG":
        return {**out, "web_image": False, "problem": "CMYK JPEG: browsers show print colours wrongly"}
    if declared != WEB_TYPES[out["format"]]:
        return {**out, "web_image": False,
                "problem": f"served as {declared or 'no type'!r}, but the bytes are {out['format']}"}
    return {**out, "web_image": True, "problem": None}


# --------------------------------------------------------------------------------------------------------
# The sandbox


class Sandbox:
    """A partner sandbox: routes, faults, recorded requests and counters behind a local HTTP server.

    Subclasses define `routes()` (path -> Route), `counters` (their extra stats), `_clear_state()` and
    `_partner_state()`. All state is guarded by one lock; downloads happen outside it so slow downloads do
    not serialise concurrent requests.
    """

    name = "sandbox"
    counters: tuple[str, ...] = ()

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, download: bool = True) -> None:
        self.host = host
        self.port = port
        self.download = download
        self.faults = Faults()
        self._stopping = threading.Event()  # releases hung and dripping requests when the sandbox stops
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes = self.routes()
        self._clear()

    # --- lifecycle

    def start(self) -> Sandbox:
        if self._server is not None:
            raise RuntimeError(f"{self.name} sandbox is already running at {self.url}")
        self._stopping.clear()
        server_class = _Server6 if ":" in self.host else _Server
        self._server = server_class((self.host, self.port), self)
        self.port = self._server.server_address[1]
        # A short poll interval keeps stop() (which waits for the serve loop to notice) fast in tests.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name=f"{self.name}-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopping.set()
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL for clients; a wildcard bind address is reached through loopback."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # --- faults and inspection

    def configure_faults(self, **settings: Any) -> Faults:
        self.faults.update(**settings)
        return self.faults

    def reset(self) -> None:
        """Forget stored data, recorded requests and counters and restore default faults (not credentials)."""
        self.faults.restore_defaults()
        self._clear()

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            snapshot: dict[str, Any] = dict(self._stats)
            snapshot["responses"] = dict(sorted(self._responses.items()))
            return snapshot

    @property
    def received(self) -> list[Any]:
        with self._lock:
            return copy.deepcopy(self._received)

    @property
    def rejected(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._rejected)

    @property
    def download_errors(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._download_errors)

    def state(self) -> dict[str, Any]:
        """What GET /_sandbox/state answers."""
        with self._lock:
            return {
                "stats": self.stats,
                "faults": self.faults.as_dict(),
                "received": self.received,
                "rejected": self.rejected,
                "download_errors": self.download_errors,
                **copy.deepcopy(self._partner_state()),
            }

    # --- for subclasses

    def routes(self) -> dict[str, Route]:
        raise NotImplementedError

    def _clear_state(self) -> None:
        raise NotImplementedError

    def _partner_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._stats[name] += n

    def _accept(self, body: Any) -> None:
        with self._lock:
            self._received.append(body)

    def _refuse(self, request: Request, status: int, payload: dict[str, Any]) -> Reply:
        """Record a refused request and build its JSON error reply."""
        errors = payload.get("errors") or [{"message": payload.get("message")}]
        with self._lock:
            self._rejected.append(
                {"status": status, "path": request.path, "body_sent": request.body_sent(), "errors": errors}
            )
        return json_reply(status, payload)

    def _fetch(self, url: str, **context: Any) -> dict[str, Any] | None:
        """Download like the partner; a failure is counted and recorded, never raised (the partners
        download asynchronously, so a bad URL does not fail the API call)."""
        try:
            result = download(url)
        except Exception as exc:  # noqa: BLE001 - any failure is a recorded download failure
            with self._lock:
                self._stats["download_failures"] += 1
                self._download_errors.append({**context, "url": url, "reason": f"{type(exc).__name__}: {exc}"})
            return None
        self._count("downloads")
        return result

    # --- request handling

    def _clear(self) -> None:
        with self._lock:
            self._stats: Counter[str] = Counter({name: 0 for name in BASE_COUNTERS + self.counters})
            self._responses: Counter[int] = Counter()
            self._received: list[Any] = []
            self._rejected: list[dict[str, Any]] = []
            self._download_errors: list[dict[str, Any]] = []
            self._clear_state()

    def _handle(self, request: Request) -> Reply:
        if request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        self._count("requests")
        try:
            reply = self._api(request)
        except Exception:  # a sandbox bug must not look like a hung partner
            log.exception("%s sandbox failed on %s %s", self.name, request.method, request.path)
            reply = json_reply(500, {"message": "sandbox internal error (a bug in the sandbox, not a fault)"})
        with self._lock:
            self._responses[reply.status] += 1
        return reply

    def _api(self, request: Request) -> Reply:
        route = self._routes.get(request.path)
        if route is None:
            return json_reply(404, {"message": f"no such endpoint: {request.path}"})
        if route.counter:
            self._count(route.counter)
        faults = self.faults
        if faults.redirect_to:
            self._count("injected_redirect")
            return Reply(307, b"", None, {"Location": faults.redirect_to.rstrip("/") + request.path})
        if request.method != "POST":
            return json_reply(405, {"message": f"{request.path} only accepts POST"}, {"Allow": "POST"})
        if faults.hang:
            self._count("injected_hang")
            self._stopping.wait(HANG_LIMIT_S)
            return Reply(0, reset=True)
        slow = faults.take_slow()
        if slow:
            self._count("injected_slow")
            self._stopping.wait(slow)  # then handled and applied, as a partner that was merely slow
        if faults.max_body_bytes and len(request.body) > faults.max_body_bytes:
            self._count("injected_413")
            return json_reply(413, {"message": f"Payload Too Large: at most {faults.max_body_bytes} bytes, "
                                               f"got {len(request.body)}"})
        reply = self._injected_fault() or route.handler(request)
        if faults.echo_credentials and reply.status >= 400:
            reply = _with_echo(reply, request, str(faults.echo_credentials))
        if faults.take_reset():
            self._count("injected_reset")
            return Reply(0, reset=True)  # applied (the handler ran), but the client never hears so
        if faults.drip_bytes_per_s:
            self._count("injected_drip")
            return Reply(reply.status, reply.body, reply.content_type, reply.headers,
                         drip_bytes_per_s=faults.drip_bytes_per_s)
        return reply

    def _injected_fault(self) -> Reply | None:
        """Order: outage, latency, throttle, error, malformed."""
        decision = self.faults.decide()
        if decision.outage:
            self._count("injected_500")
            return json_reply(500, {"message": "Service unavailable (sandbox outage)"})
        if decision.latency_s > 0:
            time.sleep(decision.latency_s)
        if decision.throttle:
            self._count("injected_429")
            return json_reply(
                429, {"message": "Too Many Requests (sandbox throttle)"}, {"Retry-After": str(decision.retry_after)}
            )
        if decision.error:
            self._count("injected_500")
            return json_reply(500, {"message": "Internal server error (sandbox error_rate)"})
        if decision.malformed:
            self._count("injected_malformed")
            return Reply(200, GARBAGE_BODY, "application/json")
        return None

    def _control(self, request: Request) -> Reply:
        action = request.path[len(CONTROL_PREFIX):].strip("/")
        allowed = {"state": "GET", "faults": "GET or POST", "reset": "POST"}
        if action not in allowed:
            return json_reply(404, {"message": f"no such control endpoint: {request.path}"})
        if request.method not in allowed[action].split(" or "):
            return json_reply(405, {"message": f"{request.path} accepts {allowed[action]}"})
        if action == "state":
            return json_reply(200, self.state())
        if action == "reset":
            self.reset()
            return json_reply(200, {"status": "ok"})
        if request.method == "POST":
            try:
                settings = request.json()
                if not isinstance(settings, dict):
                    raise ValueError("body must be a JSON object of fault settings")
                self.faults.update(**settings)
            except ValueError as exc:
                return json_reply(400, {"message": str(exc)})
        return json_reply(200, self.faults.as_dict())
