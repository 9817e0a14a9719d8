"""A catalog of any size without storage: listing pages generated in the shape Azure returns them.

The benchmark's synthetic mode pushes these pages through the real engine (catalog rules, SAS signing,
payloads, both partner lanes, the real HTTP clients against the sandboxes) to measure CPU and peak memory at
a scale Azurite cannot hold (1,000,000 images). Pages come sorted by name and one at a time, like the
service's, so the engine streams exactly as it does against real storage.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

from shared.catalog.listing import LIST_PAGE_SIZE, ListedBlob

from .storage import catalog_names

MD5 = hashlib.md5(b"synthetic image").digest()


class SyntheticListing:
    """``ContainerListing.pages`` for ``images`` blobs over ``products`` product folders, in name order."""

    def __init__(self, images: int, products: int, page_size: int = LIST_PAGE_SIZE):
        self.images = images
        self.products = products
        self.page_size = page_size
        self.pages_served = 0

    def pages(self, prefix: str | None = None,
              marker: str | None = None) -> Iterator[tuple[str | None, list[ListedBlob]]]:
        names = sorted_names(self.images, self.products)
        page: list[ListedBlob] = []
        page_marker = None
        for name in names:
            if prefix and not name.startswith(prefix):
                continue
            page.append(ListedBlob(name, 12345, {}, MD5, '"0x8D0"'))
            if len(page) == self.page_size:
                self.pages_served += 1
                yield page_marker, page
                page_marker, page = name, []
        if page:
            self.pages_served += 1
            yield page_marker, page


def sorted_names(images: int, products: int) -> Iterator[str]:
    """The catalog's blob names in the order a listing returns them (by name), one product at a time.

    Product folders are fixed-width numbers, so folder order is numeric order; within a folder the names
    are sorted, which is all a listing promises."""
    current, folder = None, []
    for item, name in catalog_names(images, products):
        if item != current:
            yield from sorted(folder)
            current, folder = item, []
        folder.append(name)
    yield from sorted(folder)
