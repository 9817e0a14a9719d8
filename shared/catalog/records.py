"""What the catalog says of a blob: an image record (and its signed URL), or a skipped blob and why.

The values that flow from the listing to both partners' payloads; the stable ids both partners key on.
"""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from .web import Delivery, Verdict, identity_of

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
    content_type: str | None = None             # the Content-Type stored with the blob
    etag: str | None = None                     # as listed: the web stage reads only these bytes
    tag_count: int = 0                          # blob index tags it has (ours among them, perhaps)
    verdict: Verdict | None = None              # what its bytes really are, when known (``web``)
    delivery: Delivery | None = None            # what a partner is sent instead of the plain original, if not it

    @property
    def filename(self) -> str:
        return self.blob_name[self.blob_name.rfind("/") + 1:]

    @property
    def identity(self) -> str:
        """What identifies the blob's content (``md5:<hex>`` or ``etag:<etag>``): its content key's tail."""
        return self.content_key[len(self.image_id) + 1:]

    @property
    def sent_key(self) -> str:
        """TRAEDE's existance_key for what a partner downloads: the rendition's when one is sent."""
        return self.delivery.content_key if self.delivery is not None else self.content_key

    @property
    def sent_filename(self) -> str:
        return self.delivery.filename or self.filename if self.delivery is not None else self.filename


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
    return f"{image_id}:{identity_of(content_md5, etag)}"
