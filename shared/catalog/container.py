"""The image catalog: what the images container holds, described, page by page.

Listing streams page by page, so memory does not grow with the container (the wire protocol, paging and
prefetch are ``listing``; what one blob is, ``describe``).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .describe import describe_blob
from .layout import PathLayout
from .listing import ContainerListing, ListedBlob, Pages, content_md5
from .partner_codes import nfc, nfc_forms
from .records import CatalogEntry, ImageRecord, SkippedBlob
from .web import TAG as WEB_TAG

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobProperties, ContainerClient


class Catalog:
    """What the images container holds, described: every blob an ``ImageRecord`` or a ``SkippedBlob``.

    The listing itself (wire protocol, paging, prefetch) is ``listing.ContainerListing``.
    """

    def __init__(self, container_client: ContainerClient, layout: PathLayout, *, page_size: int | None = None,
                 raw_listing: bool | None = None, listing: Pages | None = None, tags: bool = False):
        """``tags``: list the image verdicts too (``web``: WEB_IMAGES is not off)."""
        self.container = container_client
        self.layout = layout
        self.tags = tags
        # ``listing``: anything with ContainerListing's ``pages()`` (the benchmark's synthetic catalog).
        self.listing = listing or ContainerListing(container_client, page_size=page_size, raw=raw_listing,
                                                   tags=tags)

    def scan(self, prefix: str | None = None) -> Iterator[CatalogEntry]:
        """Every blob under ``prefix``, one page in memory at a time."""
        for _marker, blobs in self.pages(prefix=prefix):
            for blob in blobs:
                yield self.describe(blob)

    def pages(self, prefix: str | None = None,
              marker: str | None = None) -> Iterator[tuple[str | None, list[ListedBlob]]]:
        """``(marker that fetched it, blobs)`` per listing page, starting at ``marker`` (None: the start)."""
        return self.listing.pages(prefix, marker)

    def describe(self, blob: ListedBlob | BlobProperties, web_tag: str | None = None) -> CatalogEntry:
        """Describe a ``ListedBlob`` or a ``BlobProperties`` (from ``get_blob_properties``; ``web_tag``: its
        verdict tag, read apart)."""
        if isinstance(blob, ListedBlob):
            return describe_blob(self.layout, blob.name, blob.size, blob.metadata, blob.content_md5, blob.etag,
                                 content_type=blob.content_type, web_tag=blob.web_tag, tag_count=blob.tag_count)
        md5 = content_md5(blob.content_settings)
        content_type = blob.content_settings.content_type if blob.content_settings else None
        return describe_blob(self.layout, blob.name, blob.size, blob.metadata, md5, blob.etag,
                             content_type=content_type, web_tag=web_tag, tag_count=int(blob.tag_count or 0))

    @property
    def tags_refused(self) -> bool:
        """The listing asked for the image verdicts (blob index tags) and was refused them."""
        return bool(getattr(self.listing, "tags_refused", False))

    def get(self, blob_name: str) -> CatalogEntry:
        """One blob by name; a blob that is gone is reported as skipped, not raised."""
        from azure.core.exceptions import ResourceNotFoundError

        blob = self.container.get_blob_client(blob_name)
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            return SkippedBlob(blob_name, "blob no longer exists")
        return self.describe(props, web_tag=self._web_tag(blob) if props.tag_count and self.tags else None)

    @staticmethod
    def _web_tag(blob: BlobClient) -> str | None:
        """One blob's verdict tag (one more request, only for a blob that has tags); None when the identity
        may not read tags (the image is then looked at again)."""
        from azure.core.exceptions import HttpResponseError

        try:
            return (blob.get_blob_tags() or {}).get(WEB_TAG)
        except HttpResponseError as exc:
            if exc.status_code == 403:
                return None
            raise

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
