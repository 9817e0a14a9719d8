"""The image catalog: which blobs are product images, and what each one is.

Listing streams page by page, so memory does not grow with the container. Every blob becomes either an
``ImageRecord`` or a ``SkippedBlob`` with a reason a person can act on; nothing is dropped silently.
"""
from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Union

from .layout import PathLayout, parse_sort, parse_type, type_from_words

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".avif"})
# Fixed forever: changing it would give every image a new Wallie imageId.
IMAGE_ID_NAMESPACE = uuid.UUID("6f2b9c1e-4c1a-5d7e-9a3b-2f1e0c8d7b6a")
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
class SkippedBlob:
    blob_name: str
    reason: str


CatalogEntry = Union[ImageRecord, SkippedBlob]


def image_id_for(blob_name: str) -> str:
    """A stable UUID from the blob's path in the container: same blob, same id, on every run and machine."""
    return str(uuid.uuid5(IMAGE_ID_NAMESPACE, blob_name))


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
                                 f"{'/'.join(p for p in name.split('/') if p)!r}")
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
    item_id = (meta.get("itemid") or "").strip() or (fields.item_id if fields else None)
    if not item_id:
        return SkippedBlob(name, f"path does not fit IMAGE_PATH_PATTERN {layout.pattern!r} "
                                 "and the blob has no 'itemid' metadata")
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


class Catalog:
    """Reads the images container through an azure-storage-blob ``ContainerClient``."""

    def __init__(self, container_client: Any, layout: PathLayout, *, page_size: int = LIST_PAGE_SIZE):
        self.container = container_client
        self.layout = layout
        self.page_size = page_size

    def scan(self, prefix: str | None = None) -> Iterator[CatalogEntry]:
        """Every blob under ``prefix``, one page in memory at a time."""
        pages = self.container.list_blobs(name_starts_with=prefix, include=["metadata"],
                                          results_per_page=self.page_size).by_page()
        for page in pages:
            for blob in page:
                yield self.describe(blob)

    def describe(self, blob: Any) -> CatalogEntry:
        """Describe a ``BlobProperties`` (from a listing or ``get_blob_properties``)."""
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


def split_entries(entries: Iterable[CatalogEntry]) -> tuple[list[ImageRecord], list[SkippedBlob]]:
    images: list[ImageRecord] = []
    skipped: list[SkippedBlob] = []
    for e in entries:
        (images if isinstance(e, ImageRecord) else skipped).append(e)
    return images, skipped
