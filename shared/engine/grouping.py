"""Products of a layout whose listing does not come product by product, grouped in bounded memory.

With ``{item_id}/...`` a product is complete when the listing passes its folder (``sync``). With any
other layout (``{color_id}/{item_id}/...``, an ``itemid`` from metadata) a product's images may be anywhere
in the listing, so none is complete before the listing ends. Holding them all costs ~1 KB an image; here
at most ``MEMORY_IMAGES`` images and ``MEMORY_BYTES`` bytes are held, sorted by product and written to a
temporary file as a run when the bound is reached; at the end the runs are merged, product by product
(an external merge sort), so memory stays flat in catalog size.
"""
from __future__ import annotations

import heapq
import itertools
import pickle
import struct
import tempfile
from collections.abc import Iterator
from typing import IO

from ..catalog.records import SignedImage

MEMORY_IMAGES = 20_000
MEMORY_BYTES = 16 * 2**20
IMAGE_BYTES = 700  # a SignedImage and its ImageRecord (ids, key, fields), besides its name and URL
_LENGTH = struct.Struct("<I")


class ProductGroups:
    """Signed images in any order in; each product's images out, one product at a time."""

    def __init__(self, memory_images: int | None = None, memory_bytes: int | None = None):
        self.memory_images = MEMORY_IMAGES if memory_images is None else memory_images
        self.memory_bytes = MEMORY_BYTES if memory_bytes is None else memory_bytes
        self._held: dict[str, list[SignedImage]] = {}
        self._images = self._bytes = 0
        self._file: IO[bytes] | None = None
        self._runs: list[tuple[int, int]] = []  # (start, end) of each sorted run in the file
        self.peak_images = 0  # the most images held in memory at once (the tests read it)
        self.spilled = 0  # runs written to disk

    def add(self, signed: SignedImage) -> None:
        self._held.setdefault(signed.record.item_id, []).append(signed)
        self._images += 1
        self._bytes += IMAGE_BYTES + len(signed.url) + len(signed.record.blob_name)
        self.peak_images = max(self.peak_images, self._images)
        if self._images >= self.memory_images or self._bytes >= self.memory_bytes:
            self._spill()

    def products(self) -> Iterator[tuple[str, list[SignedImage]]]:
        """Every product and all its images, by item id (in first-seen order while nothing was spilled),
        then empties the groups."""
        if not self._runs:
            held, self._held = self._held, {}
            self._images = self._bytes = 0
            yield from held.items()
            return
        self._spill()
        merged = heapq.merge(*(self._read_run(start, end) for start, end in self._runs), key=lambda g: g[0])
        for item, groups in itertools.groupby(merged, key=lambda g: g[0]):
            yield item, [image for _, images in groups for image in images]
        self.close()

    def items(self) -> Iterator[str]:
        """The item ids held, without their images (each once)."""
        for item, _ in self.products():
            yield item

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._runs = []

    def _spill(self) -> None:
        if not self._held:
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="image-sync-products-")
        self._file.seek(0, 2)
        start = self._file.tell()
        for item in sorted(self._held):
            data = pickle.dumps((item, self._held[item]), protocol=pickle.HIGHEST_PROTOCOL)
            self._file.write(_LENGTH.pack(len(data)) + data)
        self._runs.append((start, self._file.tell()))
        self.spilled += 1
        self._held = {}
        self._images = self._bytes = 0

    def _read_run(self, start: int, end: int) -> Iterator[tuple[str, list[SignedImage]]]:
        at = start
        while at < end:
            assert self._file is not None
            self._file.seek(at)
            (size,) = _LENGTH.unpack(self._file.read(_LENGTH.size))
            group: tuple[str, list[SignedImage]] = pickle.loads(self._file.read(size))
            at = self._file.tell()
            yield group
