"""The image catalog: which blobs are product images, and what each one is.

Listing streams page by page, so memory does not grow with the container. Every blob becomes either an
``ImageRecord`` or a ``SkippedBlob`` with a reason a person can act on; nothing is dropped silently.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import posixpath
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Union
from urllib.parse import quote, unquote

from .layout import PathLayout, parse_sort, parse_type, type_from_words

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".avif"})
# Fixed forever: changing it would give every image a new Wallie imageId.
IMAGE_ID_NAMESPACE = uuid.UUID("6f2b9c1e-4c1a-5d7e-9a3b-2f1e0c8d7b6a")
_NAMESPACE_BYTES = IMAGE_ID_NAMESPACE.bytes
LIST_PAGE_SIZE = 5000  # the service maximum: fewest round trips


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One product image, described the way both partners need it."""

    blob_name: str
    item_id: str
    color_id: str | None
    type: int
    sort: int | None
    alt: str | None
    size: int
    image_id: str
    content_key: str

    @property
    def filename(self) -> str:
        return posixpath.basename(self.blob_name)


@dataclass(frozen=True, slots=True)
class SignedImage:
    """An image and the SAS URL a partner downloads it from: the one value that flows from the listing
    to both partners' payloads."""

    record: ImageRecord
    url: str


@dataclass(frozen=True, slots=True)
class SkippedBlob:
    blob_name: str
    reason: str
    layout_miss: bool = False  # an image file whose path does not fit IMAGE_PATH_PATTERN


CatalogEntry = Union[ImageRecord, SkippedBlob]


def image_id_for(blob_name: str) -> str:
    """A stable UUID from the blob's path in the container: same blob, same id, on every run and machine."""
    # uuid.uuid5, spelled out: the same bytes and bits without building a UUID object (a quarter of the
    # per-blob cost of describing a listing).
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + blob_name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def content_key_for(image_id: str, content_md5: bytes | None, etag: str | None) -> str:
    """TRAEDE's existance_key: stable while the bytes are, new when they change, never a URL or SAS."""
    if content_md5:
        return f"{image_id}:md5:{bytes(content_md5).hex()}"
    return f"{image_id}:etag:{(etag or '').strip(chr(34))}"


def describe_blob(layout: PathLayout, name: str, size: int | None, metadata: Mapping[str, str] | None,
                  content_md5: bytes | None, etag: str | None) -> CatalogEntry:
    """Turn one blob's name and properties into a record, or say why it is not one."""
    base = posixpath.basename(name)
    if not base:
        return SkippedBlob(name, "name ends with '/': a folder marker, not an image")
    if name.startswith("/") or "//" in name:
        # Not guessed into a product: a per-product sync lists '<item>/' and would never see it there.
        problem = "starts with '/'" if name.startswith("/") else "has an empty folder name ('//')"
        return SkippedBlob(name, f"path does not fit IMAGE_PATH_PATTERN: the name {problem}; rename it to "
                                 f"{'/'.join(p for p in name.split('/') if p)!r}", layout_miss=True)
    if base.startswith("."):
        return SkippedBlob(name, "hidden file (name starts with '.')")
    if base.lower() == "thumbs.db":
        return SkippedBlob(name, "Windows thumbnail cache (Thumbs.db), not an image")
    ext = posixpath.splitext(base)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        return SkippedBlob(name, f"not an image: extension {ext or '(none)'!r} is not one of "
                                 f"{', '.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))}")
    if not size:
        return SkippedBlob(name, "empty blob (0 bytes)")
    meta = {k.lower(): v for k, v in (metadata or {}).items()}
    fields = layout.match(name)
    meta_item = (meta.get("itemid") or "").strip()
    item_id = meta_item or (fields.item_id if fields else None)
    if not item_id:
        dots = [seg for seg in name.split("/")[:-1] if seg in (".", "..")]
        if dots:
            return SkippedBlob(name, f"path does not fit IMAGE_PATH_PATTERN: the name has a {dots[0]!r} folder, "
                                     "which web clients drop before they download; rename it to "
                                     f"{'/'.join(s for s in name.split('/') if s not in ('.', '..'))!r}",
                               layout_miss=True)
        return SkippedBlob(name, f"path does not fit IMAGE_PATH_PATTERN {layout.pattern!r} "
                                 "and the blob has no 'itemid' metadata", layout_miss=True)
    sep = layout.item_prefix_separator
    if meta_item and sep and (fields is None or fields.item_id != meta_item):
        # With a folder-per-product layout the blob and delete triggers list '<item>/' to build a product's
        # full set for TRAEDE; an image filed elsewhere would be deleted there at the product's next upload.
        where = f"the folder {fields.item_id!r}" if fields else f"a path outside IMAGE_PATH_PATTERN {layout.pattern!r}"
        return SkippedBlob(name, f"metadata itemid {meta_item!r} disagrees with {where}: move the blob under "
                                 f"'{meta_item}{sep}' or correct its metadata")
    color_id = (meta.get("colorid") or "").strip() or (fields.color_id if fields else None)
    try:
        if meta.get("type", "").strip():
            kind = parse_type(meta["type"])
        elif fields and fields.type:
            kind = parse_type(fields.type)
        else:
            kind = type_from_words(posixpath.splitext(base)[0])
        raw_sort = (meta.get("sort") or "").strip() or (fields.sort if fields else None)
        sort = parse_sort(raw_sort) if raw_sort else None
    except ValueError as exc:
        source = "metadata" if any(k in meta for k in ("type", "sort")) else "path"
        return SkippedBlob(name, f"{source} {exc}")
    image_id = image_id_for(name)
    return ImageRecord(
        blob_name=name,
        item_id=item_id,
        color_id=color_id or None,
        type=kind,
        sort=sort,
        alt=(meta.get("alt") or "").strip() or None,
        size=int(size),
        image_id=image_id,
        content_key=content_key_for(image_id, content_md5, etag),
    )


class ListedBlob:
    """What a listing says about one blob: the few properties ``describe_blob`` reads."""

    __slots__ = ("name", "size", "metadata", "content_md5", "etag")

    def __init__(self, name: str, size: int | None, metadata: dict, content_md5: bytes | None, etag: str | None):
        self.name, self.size, self.metadata, self.content_md5, self.etag = name, size, metadata, content_md5, etag


class Catalog:
    """Reads the images container through an azure-storage-blob ``ContainerClient``.

    Listings go through the client's own pipeline (auth, retries, API version) but parse the XML with
    ElementTree: the SDK's generic deserializer costs ~0.5 ms a blob, the whole budget of a large sync.
    """

    def __init__(self, container_client: Any, layout: PathLayout, *, page_size: int = LIST_PAGE_SIZE):
        self.container = container_client
        self.layout = layout
        self.page_size = page_size

    def scan(self, prefix: str | None = None) -> Iterator[CatalogEntry]:
        """Every blob under ``prefix``, one page in memory at a time."""
        for _marker, blobs in self.pages(prefix=prefix):
            for blob in blobs:
                yield self.describe(blob)

    def pages(self, prefix: str | None = None, marker: str | None = None) -> Iterator[tuple[str | None, list]]:
        """``(marker that fetched it, blobs)`` per listing page, starting at ``marker`` (None: the start).

        The next page is requested while the caller works on this one (at most one page ahead): listing is
        sequential, and at catalog scale the storage round trips and our parsing/signing take about as long
        as each other, so overlapping them nearly halves a full sync.
        """
        fetch = self._fetch_page if _raw_listing_supported(self.container) else self._fetch_page_sdk
        ahead = _PageAhead(fetch, prefix, marker)
        page = 0
        while True:
            blobs, next_marker = ahead.result()
            page += 1
            log.debug("listed page %d of %r%s: %d blobs in %.0f ms%s", page, self.container.container_name,
                      f" (prefix {prefix!r})" if prefix else "", len(blobs), ahead.seconds * 1000,
                      "" if next_marker else ", the last")
            if next_marker:
                ahead = _PageAhead(fetch, prefix, next_marker)
            yield marker, blobs
            if not next_marker:
                return
            marker = next_marker

    def _fetch_page(self, prefix: str | None, marker: str | None) -> tuple[list, str | None]:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        from azure.core.rest import HttpRequest

        params = {"restype": "container", "comp": "list", "maxresults": str(self.page_size), "include": "metadata"}
        if prefix:
            params["prefix"] = quote(prefix, safe="")  # HttpRequest does not encode params; the SDK quotes
        if marker:
            params["marker"] = quote(marker, safe="")
        request = HttpRequest("GET", self.container.url, params=params,
                              headers={"x-ms-version": self.container.api_version, "Accept": "application/xml"})
        response = self.container._client._send_request(request)
        if response.status_code != 200:
            error = ResourceNotFoundError if response.status_code == 404 else HttpResponseError
            raise error(response=response)
        return parse_listing(response.content)

    def _fetch_page_sdk(self, prefix: str | None, marker: str | None) -> tuple[list, str | None]:
        pages = self.container.list_blobs(name_starts_with=prefix, include=["metadata"],
                                          results_per_page=self.page_size).by_page(continuation_token=marker)
        blobs = [ListedBlob(b.name, b.size, b.metadata or {},
                            b.content_settings.content_md5 if b.content_settings else None, b.etag)
                 for b in next(pages, [])]
        return blobs, pages.continuation_token

    def describe(self, blob: Any) -> CatalogEntry:
        """Describe a ``ListedBlob`` or a ``BlobProperties`` (from ``get_blob_properties``)."""
        if isinstance(blob, ListedBlob):
            return describe_blob(self.layout, blob.name, blob.size, blob.metadata, blob.content_md5, blob.etag)
        settings = blob.content_settings
        return describe_blob(self.layout, blob.name, blob.size, blob.metadata,
                             settings.content_md5 if settings else None, blob.etag)

    def get(self, blob_name: str) -> CatalogEntry:
        """One blob by name; a blob that is gone is reported as skipped, not raised."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self.container.get_blob_client(blob_name).get_blob_properties()
        except ResourceNotFoundError:
            return SkippedBlob(blob_name, "blob no longer exists")
        return self.describe(props)

    def product(self, item_id: str) -> tuple[list[ImageRecord], list[SkippedBlob]]:
        """All images of one product: listed by prefix when the layout starts with the item id."""
        sep = self.layout.item_prefix_separator
        images, skipped = [], []
        for entry in self.scan(prefix=f"{item_id}{sep}" if sep else None):
            if isinstance(entry, ImageRecord):
                if entry.item_id == item_id:
                    images.append(entry)
            elif sep:
                skipped.append(entry)
        return images, skipped


def parse_listing(xml: bytes) -> tuple[list[ListedBlob], str | None]:
    """The blobs and NextMarker of one List Blobs response body."""
    from xml.etree.ElementTree import fromstring

    root = fromstring(xml)
    blobs = []
    for blob in root.iterfind("Blobs/Blob"):
        name_el = blob.find("Name")
        name = name_el.text or ""
        if name_el.get("Encoded") == "true":  # names with characters XML cannot carry come percent-encoded
            name = unquote(name)
        props = blob.find("Properties")
        size = md5 = etag = None
        if props is not None:
            length = props.findtext("Content-Length")
            size = int(length) if length else None
            raw_md5 = props.findtext("Content-MD5")
            md5 = base64.b64decode(raw_md5) if raw_md5 else None
            etag = props.findtext("Etag")
        meta_el = blob.find("Metadata")
        metadata = {m.tag: m.text or "" for m in meta_el} if meta_el is not None else {}
        blobs.append(ListedBlob(name, size, metadata, md5, etag))
    return blobs, root.findtext("NextMarker") or None


class _PageAhead:
    """One listing request on a helper thread; ``result()`` waits for it and re-raises its error here."""

    def __init__(self, fetch: Any, prefix: str | None, marker: str | None):
        self._outcome: tuple | None = None
        self._error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, args=(fetch, prefix, marker), name="catalog-list",
                                        daemon=True)
        self._thread.start()

    def _run(self, fetch: Any, prefix: str | None, marker: str | None) -> None:
        started = time.monotonic()
        try:
            self._outcome = fetch(prefix, marker)
        except BaseException as exc:  # handed to the consuming thread
            self._error = exc
        self.seconds = time.monotonic() - started

    def result(self) -> tuple:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._outcome


def _raw_listing_supported(container: Any) -> bool:
    client = getattr(container, "_client", None)
    return callable(getattr(client, "_send_request", None)) and isinstance(getattr(container, "api_version", None), str)


def split_entries(entries: Iterable[CatalogEntry]) -> tuple[list[ImageRecord], list[SkippedBlob]]:
    images: list[ImageRecord] = []
    skipped: list[SkippedBlob] = []
    for e in entries:
        (images if isinstance(e, ImageRecord) else skipped).append(e)
    return images, skipped
