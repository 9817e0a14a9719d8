"""How the container is listed: the List Blobs wire protocol, parsed with ElementTree, pages fetched ahead
on a listing thread.

Listings go through the SDK client's own pipeline (auth, retries, API version) but the XML is parsed here:
the SDK's generic deserializer costs ~0.5 ms a blob, the whole budget of a large sync. Where the SDK does
not expose its pipeline (``raw=False``, or a future SDK without ``_client._send_request``), pages come
from ``list_blobs`` instead; both paths give the same ``ListedBlob`` values.
"""
from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote

from .web import TAG as _WEB_TAG

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient, ContentSettings

log = logging.getLogger(__name__)
LIST_PAGE_SIZE = 5000  # the service maximum: fewest round trips
PAGES_AHEAD = 2  # pages the listing thread may fetch before the caller takes them
# No page for this long: the listing has stalled. Longer than one storage call can take (storage.py: a
# read timeout of 20 s, retries within 10 s), so only storage that hangs or drips trips it.
STALL_SECONDS = 60.0
# ...and about the most memory one page may hold: a page of blobs with large metadata (up to 8 KB a blob)
# asks for fewer blobs next time, so the pages in flight hold at most (PAGES_AHEAD + 2) x this much.
PAGE_BYTES = 4 * 2**20


@dataclass(slots=True)
class ListedBlob:
    """What a listing says about one blob: the few properties the catalog reads."""

    name: str
    size: int | None
    metadata: dict[str, str] = field(default_factory=dict)
    content_md5: bytes | None = None
    etag: str | None = None
    content_type: str | None = None
    web_tag: str | None = None  # the image's verdict tag (``web.TAG``), when the listing asked for tags
    tag_count: int = 0


Page = tuple[list[ListedBlob], str | None]  # the blobs and the marker of the next page (None: the last)


class Pages(Protocol):
    """Anything that lists a container page by page (``ContainerListing``; the benchmark's synthetic catalog)."""

    def pages(self, prefix: str | None = None,
              marker: str | None = None) -> Iterator[tuple[str | None, list[ListedBlob]]]: ...


def content_md5(settings: ContentSettings | None) -> bytes | None:
    """A blob's Content-MD5 as listed (the SDK gives a bytearray, or nothing)."""
    md5 = settings.content_md5 if settings else None
    return bytes(md5) if md5 else None


class ListingStalled(Exception):
    """Storage stopped answering mid-listing (it neither answered nor failed within the stall limit)."""


class ContainerListing:
    """``tags``: also list each blob's index tags (the image verdicts of ``web``). An identity without the
    permission to read tags gets its listing without them (``tags_refused`` says so): the images are then
    sent unchecked, as before, rather than not at all."""

    def __init__(self, container: ContainerClient, *, page_size: int | None = None, raw: bool | None = None,
                 stall_seconds: float = STALL_SECONDS, tags: bool = False):
        self.container = container
        self.page_size = page_size or LIST_PAGE_SIZE
        self.raw = raw_listing_supported(container) if raw is None else raw
        self.stall_seconds = stall_seconds
        self.tags = tags
        self.tags_refused = False

    def pages(self, prefix: str | None = None,
              marker: str | None = None) -> Iterator[tuple[str | None, list[ListedBlob]]]:
        """``(marker that fetched it, blobs)`` per listing page, starting at ``marker`` (None: the start).

        A listing thread fetches page after page on its own, up to ``PAGES_AHEAD`` pages ahead of the
        caller: listing is sequential (each page names the next), so storage must never wait for the
        caller to finish a page before it is asked for the next. At catalog scale the storage round trips
        and our describing and signing take about as long as each other; overlapping them nearly halves a
        full sync. Memory: at most ``PAGES_AHEAD + 2`` pages are held (queued, being fetched, being
        read), each of about ``PAGE_BYTES`` at most (see ``next_page_size``).

        Failures: the listing thread's error reaches the caller as soon as it happens (it never waits for
        room in the queue), right after the pages already fetched (valid, and in memory). A listing that
        makes no progress for ``stall_seconds`` (storage that accepts and never answers, or answers a byte
        at a time) ends with ``ListingStalled``: no wait here is unbounded.
        """
        fetch = self._fetch_raw if self.raw else self._fetch_sdk
        ready: queue.Queue[tuple[str | None, Page, float]] = queue.Queue(maxsize=PAGES_AHEAD)
        done = threading.Event()
        failure: list[BaseException] = []
        failed = threading.Event()

        def produce() -> None:
            at, size = marker, self.page_size
            try:
                while not done.is_set():
                    page, seconds = _timed(fetch, prefix, at, size)
                    while not done.is_set():
                        try:
                            ready.put((at, page, seconds), timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if not page[1]:
                        return
                    at, size = page[1], next_page_size(page[0], self.page_size)
            except BaseException as exc:  # handed to the caller, raised there
                failure.append(exc)
                failed.set()

        threading.Thread(target=produce, name="listing", daemon=True).start()
        try:
            number = 0
            waited_since = time.monotonic()
            while True:
                try:
                    at, (blobs, next_marker), seconds = ready.get(timeout=0.2)
                except queue.Empty:
                    if failed.is_set():
                        raise failure[0] from None
                    if time.monotonic() - waited_since > self.stall_seconds:
                        raise ListingStalled(f"listing {self.container.container_name!r} made no progress for "
                                             f"{self.stall_seconds:g} s (storage accepts requests but does not "
                                             "answer them)") from None
                    continue
                number += 1
                log.debug("listed page %d of %r%s: %d blobs in %.0f ms%s", number, self.container.container_name,
                          f" (prefix {prefix!r})" if prefix else "", len(blobs), seconds * 1000,
                          "" if next_marker else ", the last")
                yield at, blobs
                waited_since = time.monotonic()
                if not next_marker:
                    return
        finally:
            done.set()  # the listing thread stops after its current request

    def _fetch_raw(self, prefix: str | None, marker: str | None, size: int) -> Page:
        from azure.core.exceptions import HttpResponseError

        try:
            return self._fetch_raw_once(prefix, marker, size)
        except HttpResponseError as exc:
            if not self._tags_refused(exc):
                raise
            return self._fetch_raw_once(prefix, marker, size)

    def _tags_refused(self, exc: Exception) -> bool:
        """The identity may list blobs but not read their tags: list without them from now on."""
        if not self.tags or getattr(exc, "status_code", None) != 403 \
                or getattr(exc, "error_code", None) == "AuthenticationFailed":
            return False
        self.tags, self.tags_refused = False, True
        log.warning("listing %r with its blob index tags was refused (%s): images are sent unchecked; give the "
                    "app's identity the tags permission (docs/images.md, 'Web-ready images')",
                    self.container.container_name, getattr(exc, "error_code", None) or "HTTP 403")
        return True

    def _fetch_raw_once(self, prefix: str | None, marker: str | None, size: int) -> Page:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        from azure.core.rest import HttpRequest

        params = {"restype": "container", "comp": "list", "maxresults": str(size),
                  "include": "metadata,tags" if self.tags else "metadata"}
        if prefix:
            params["prefix"] = quote(prefix, safe="")  # HttpRequest does not encode params; the SDK quotes
        if marker:
            params["marker"] = quote(marker, safe="")
        request = HttpRequest("GET", self.container.url, params=params,
                              headers={"x-ms-version": self.container.api_version, "Accept": "application/xml"})
        # stream=True: the pipeline's ContentDecodePolicy would parse the XML too, doubling the work. The body
        # is parsed as it arrives, neither held whole nor built into a tree (a page's tree is ~15 MB).
        response = self.container._client._send_request(request, stream=True)
        try:
            if response.status_code != 200:
                response.read()
                error = ResourceNotFoundError if response.status_code == 404 else HttpResponseError
                exc: Any = error(response=response)
                exc.error_code = getattr(exc, "error_code", None) or response.headers.get("x-ms-error-code")
                raise exc
            return parse_listing(response.iter_bytes())
        finally:
            response.close()

    def _fetch_sdk(self, prefix: str | None, marker: str | None, size: int) -> Page:
        from azure.core.exceptions import HttpResponseError

        try:
            return self._fetch_sdk_once(prefix, marker, size)
        except HttpResponseError as exc:
            if not self._tags_refused(exc):
                raise
            return self._fetch_sdk_once(prefix, marker, size)

    def _fetch_sdk_once(self, prefix: str | None, marker: str | None, size: int) -> Page:
        include = ["metadata", "tags"] if self.tags else ["metadata"]
        pages: Any = self.container.list_blobs(  # an ItemPaged page iterator: it has the continuation token
            name_starts_with=prefix, include=include, results_per_page=size).by_page(continuation_token=marker)
        blobs = [ListedBlob(b.name, b.size, b.metadata or {}, content_md5(b.content_settings), b.etag,
                            b.content_settings.content_type if b.content_settings else None,
                            (b.tags or {}).get(_WEB_TAG), int(getattr(b, "tag_count", 0) or 0))
                 for b in next(pages, [])]
        return blobs, pages.continuation_token


def parse_listing(xml: bytes | Iterable[bytes]) -> Page:
    """The blobs and NextMarker of one List Blobs response body, whole or as the chunks it arrives in.

    Parsed incrementally: each ``Blob`` element is read and dropped, so the memory it takes is the blobs'
    values, not the document's tree."""
    from xml.etree.ElementTree import XMLPullParser

    parser: Any = XMLPullParser(events=("end",))
    blobs: list[ListedBlob] = []
    marker = None
    for chunk in (xml,) if isinstance(xml, bytes) else xml:
        parser.feed(chunk)
        for _, element in parser.read_events():
            # A metadata key may be called Blob or NextMarker too: its element has no children and ends
            # before its blob does, so the blob's end forgets a marker seen inside it.
            if element.tag == "Blob" and len(element):
                blobs.append(_listed_blob(element))
                element.clear()
                marker = None
            elif element.tag == "NextMarker":
                marker = element.text or None
    parser.close()
    return blobs, marker


def _listed_blob(blob: Any) -> ListedBlob:
    name_el = blob.find("Name")
    name = (name_el.text or "") if name_el is not None else ""
    if name_el is not None and name_el.get("Encoded") == "true":  # names XML cannot carry come encoded
        name = unquote(name)
    props = blob.find("Properties")
    size = md5 = etag = content_type = None
    tag_count = 0
    if props is not None:
        length = props.findtext("Content-Length")
        size = int(length) if length else None
        raw_md5 = props.findtext("Content-MD5")
        md5 = base64.b64decode(raw_md5) if raw_md5 else None
        etag = props.findtext("Etag")
        content_type = props.findtext("Content-Type") or None
        count = props.findtext("TagCount")
        tag_count = int(count) if count and count.isdigit() else 0
    meta_el = blob.find("Metadata")
    metadata = {m.tag: m.text or "" for m in meta_el} if meta_el is not None else {}
    web_tag = None
    tags_el = blob.find("Tags")
    if tags_el is not None:
        for tag in tags_el.iter("Tag"):
            if tag.findtext("Key") == _WEB_TAG:
                web_tag = tag.findtext("Value")
    return ListedBlob(name, size, metadata, md5, etag, content_type, web_tag, tag_count)


def blob_bytes(blob: ListedBlob) -> int:
    """About the memory a listed blob holds (CPython object sizes, rounded up)."""
    return 250 + len(blob.name) + len(blob.web_tag or "") + sum(120 + len(k) + len(v)
                                                                for k, v in blob.metadata.items())


def next_page_size(page: list[ListedBlob], page_size: int) -> int:
    """How many blobs to ask for next so a page holds about ``PAGE_BYTES`` at most: ``page_size`` (the
    service maximum) unless the last page's blobs were large (long names, much metadata)."""
    if not page:
        return page_size
    per_blob = sum(blob_bytes(b) for b in page) / len(page)
    return max(1, min(page_size, int(PAGE_BYTES / per_blob)))


def raw_listing_supported(container: Any) -> bool:
    client = getattr(container, "_client", None)
    return callable(getattr(client, "_send_request", None)) and isinstance(getattr(container, "api_version", None), str)


def _timed(fetch: Any, prefix: str | None, marker: str | None, size: int) -> tuple[Page, float]:
    started = time.monotonic()
    return fetch(prefix, marker, size), time.monotonic() - started
