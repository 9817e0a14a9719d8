"""The image catalog: which blobs are product images, and what each one is.

Listing streams page by page, so memory does not grow with the container. Every blob becomes either an
``ImageRecord`` or a ``SkippedBlob`` with a reason a person can act on; nothing is dropped silently.
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterator, Mapping

from .layout import InvalidValue, PathLayout, parse_sort, parse_type, type_from_words
from .listing import ContainerListing, ListedBlob
from .partner_codes import META_KEYS, nfc, nfc_forms

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".avif"})
_IMAGE_EXTENSION_LIST = ", ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
_NO_METADATA: Mapping[str, str] = {}
# Fixed forever: changing it would give every image a new Wallie imageId.
IMAGE_ID_NAMESPACE = uuid.UUID("6f2b9c1e-4c1a-5d7e-9a3b-2f1e0c8d7b6a")
_NAMESPACE_BYTES = IMAGE_ID_NAMESPACE.bytes


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
    sort_b2c: int | None = None                 # TRAEDE's B2C sort (metadata ``sort_b2c``)
    codes: Mapping[str, str] | None = None      # per-partner code overrides from metadata (``partner_codes``)
    ignored: tuple[tuple[str, str], ...] = ()   # metadata values not valid for their field: (cause, detail)

    @property
    def filename(self) -> str:
        return self.blob_name[self.blob_name.rfind("/") + 1:]


@dataclass(frozen=True, slots=True)
class SignedImage:
    """An image and the SAS URL a partner downloads it from: the one value that flows from the listing
    to both partners' payloads."""

    record: ImageRecord
    url: str


@dataclass(frozen=True, slots=True)
class SkippedBlob:
    """A blob that is not sent, and why. ``reason`` is the cause, the same words for every blob it applies
    to (output groups by it: 2,000 blobs of one cause are one line); ``detail`` is what is particular to this
    blob (the name to rename it to, the value that is wrong), kept in the report and the run history."""

    blob_name: str
    reason: str
    layout_miss: bool = False  # an image file whose path does not fit IMAGE_PATH_PATTERN
    detail: str | None = None

    @property
    def text(self) -> str:
        """The cause and this blob's detail, as one sentence."""
        return f"{self.reason}: {self.detail}" if self.detail else self.reason

    def to_dict(self) -> dict[str, str]:
        out = {"blob": self.blob_name, "reason": self.reason}
        if self.detail:
            out["detail"] = self.detail
        return out


CatalogEntry = ImageRecord | SkippedBlob


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
    """Turn one blob's name and properties into a record, or say why it is not one.

    Called once per blob of every listing, so the common path avoids the slower general helpers
    (``posixpath``): a full sync describes 100,000 blobs in about a second.
    """
    base = name[name.rfind("/") + 1:]
    if not base:
        return SkippedBlob(name, "name ends with '/': a folder marker, not an image")
    if name[0] == "/" or "//" in name:
        # Not guessed into a product: a per-product sync lists '<item>/' and would never see it there.
        problem = "starts with '/'" if name.startswith("/") else "has an empty folder name ('//')"
        return SkippedBlob(name, f"path does not fit IMAGE_PATH_PATTERN: the name {problem}", layout_miss=True,
                           detail=f"rename it to {'/'.join(p for p in name.split('/') if p)!r}")
    if base[0] == ".":
        return SkippedBlob(name, "hidden file (name starts with '.')")
    dot = base.rfind(".")
    ext = base[dot:].lower() if dot > 0 else ""
    if ext not in IMAGE_EXTENSIONS:
        if base.lower() == "thumbs.db":
            return SkippedBlob(name, "Windows thumbnail cache (Thumbs.db), not an image")
        return SkippedBlob(name, f"not an image: the extension is not one of {_IMAGE_EXTENSION_LIST}",
                           detail=f"extension {ext or '(none)'!r}")
    if not size:
        return SkippedBlob(name, "empty blob (0 bytes)")
    meta = {k.lower(): v for k, v in metadata.items()} if metadata else _NO_METADATA
    fields = layout.match(name)
    meta_item = (meta.get("itemid") or "").strip()
    item_id = meta_item or (fields.item_id if fields else None)
    if not item_id:
        dots = [seg for seg in name.split("/")[:-1] if seg in (".", "..")]
        if dots:
            return SkippedBlob(name, "path does not fit IMAGE_PATH_PATTERN: the name has a '.' or '..' folder, "
                                     "which web clients drop before they download", layout_miss=True,
                               detail=f"a {dots[0]!r} folder; rename it to "
                                      f"{'/'.join(s for s in name.split('/') if s not in ('.', '..'))!r}")
        return SkippedBlob(name, f"path does not fit IMAGE_PATH_PATTERN {layout.pattern!r} "
                                 "and the blob has no 'itemid' metadata", layout_miss=True)
    sep = layout.item_prefix_separator
    if sep:
        item_id = fields.item_id if fields else item_id  # the folder is the product (as listed: its own spelling)
    else:
        item_id = nfc(item_id)  # no folder: the code is the product, in NFC (one code, however typed)
    if meta_item and sep and (fields is None or nfc(fields.item_id) != nfc(meta_item)):
        # With a folder-per-product layout the blob and delete triggers list '<item>/' to build a product's
        # full set for TRAEDE; an image filed elsewhere would be deleted there at the product's next upload.
        where = "the blob's folder" if fields else f"a path outside IMAGE_PATH_PATTERN {layout.pattern!r}"
        folder = f"folder {fields.item_id!r}" if fields else "no folder"
        return SkippedBlob(name, f"metadata itemid disagrees with {where}: move each blob under the folder its "
                                 "itemid names, or correct its metadata",
                           detail=f"itemid {meta_item!r}, {folder}: move it under '{meta_item}{sep}'")
    color_id = (meta.get("colorid") or "").strip() or (fields.color_id if fields else None)
    try:
        if meta.get("type", "").strip():
            kind = parse_type(meta["type"])
        elif fields and fields.type:
            kind = parse_type(fields.type)
        else:
            kind = type_from_words(base[:dot])
        raw_sort = (meta.get("sort") or "").strip() or (fields.sort if fields else None)
        sort = parse_sort(raw_sort) if raw_sort else None
    except InvalidValue as exc:
        source = "metadata" if exc.field in meta and (meta.get(exc.field) or "").strip() else "path"
        return SkippedBlob(name, f"{source} {exc.field} is not {exc.expected}", detail=f"{exc.field} {exc.value!r}")
    sort_b2c, codes, ignored = _partner_fields(meta) if meta else (None, None, ())
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
        sort_b2c=sort_b2c,
        codes=codes,
        ignored=ignored,
    )


MAX_CODE_LENGTH = 255


def _partner_fields(meta: Mapping[str, str]) -> tuple[int | None, dict[str, str] | None,
                                                     tuple[tuple[str, str], ...]]:
    """TRAEDE's ``sort_b2c`` and the per-partner codes from metadata; a value not valid for its field is
    left out (the image still goes) with the reason in ``ignored``."""
    ignored = []
    sort_b2c = None
    raw = (meta.get("sort_b2c") or "").strip()
    if raw:
        try:
            sort_b2c = parse_sort(raw, "sort_b2c")
        except InvalidValue as exc:
            ignored.append((f"metadata sort_b2c ignored: not {exc.expected}", f"sort_b2c {exc.value!r}"))
    codes = {}
    for key in META_KEYS:
        value = (meta.get(key) or "").strip()
        if not value:
            continue
        if key != "traede_item_number" and (len(value) > MAX_CODE_LENGTH or not value.isprintable()):
            # (a traede_item_number is kept whatever it is: the engine withholds a product whose metadata
            # names another TRAEDE item number than its own, rather than send its set under a guessed one)
            ignored.append((f"metadata {key} ignored: not a code (printable text of at most {MAX_CODE_LENGTH} "
                            "characters)", f"{key} {value[:40]!r}"))
        else:
            codes[key] = value
    return sort_b2c, codes or None, tuple(ignored)


class Catalog:
    """What the images container holds, described: every blob an ``ImageRecord`` or a ``SkippedBlob``.

    The listing itself (wire protocol, paging, prefetch) is ``listing.ContainerListing``.
    """

    def __init__(self, container_client: Any, layout: PathLayout, *, page_size: int | None = None,
                 raw_listing: bool | None = None, listing: Any = None):
        self.container = container_client
        self.layout = layout
        # ``listing``: anything with ContainerListing's ``pages()`` (the benchmark's synthetic catalog).
        self.listing = listing or ContainerListing(container_client, page_size=page_size, raw=raw_listing)

    def scan(self, prefix: str | None = None) -> Iterator[CatalogEntry]:
        """Every blob under ``prefix``, one page in memory at a time."""
        for _marker, blobs in self.pages(prefix=prefix):
            for blob in blobs:
                yield self.describe(blob)

    def pages(self, prefix: str | None = None,
              marker: str | None = None) -> Iterator[tuple[str | None, list[ListedBlob]]]:
        """``(marker that fetched it, blobs)`` per listing page, starting at ``marker`` (None: the start)."""
        return self.listing.pages(prefix, marker)

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
        """All images of one product: listed by prefix when the layout starts with the item id (its folder,
        spelled exactly), else every blob whose item id is the same code in NFC."""
        sep = self.layout.item_prefix_separator
        images, skipped = [], []
        wanted = item_id if sep else nfc(item_id)
        for entry in self.scan(prefix=f"{item_id}{sep}" if sep else None):
            if isinstance(entry, ImageRecord):
                if entry.item_id == wanted:
                    images.append(entry)
            elif sep:
                skipped.append(entry)
        return images, skipped


    def twins(self, item_id: str) -> list[str]:
        """Other folders that spell the same code in another Unicode form and hold an image: 'Café' named on
        a Mac (NFD) beside 'Café' typed elsewhere (NFC). Both give one partner code, so neither may be sent
        to TRAEDE as that product's whole set. One small listing per form, only for non-ASCII names."""
        if not self.layout.item_prefix_separator:
            return []  # without folders the item id is the code, in NFC: the two spellings are one product
        return [form for form in nfc_forms(item_id) if form != item_id and self.product(form)[0]]

    def folders(self, code: str) -> list[str]:
        """The products a code typed by a person names (``sync --item``): with folders, each spelling of it
        that exists (NFC, NFD), else the code as typed; without folders, the code in NFC."""
        if not self.layout.item_prefix_separator:
            return [nfc(code)]
        from azure.core.exceptions import AzureError

        forms = nfc_forms(code)
        if len(forms) == 1:
            return forms
        try:
            return [form for form in forms if self.product(form)[0]] or [code]
        except AzureError:
            return [code]  # storage did not answer: the sync lists it again and reports what storage says
