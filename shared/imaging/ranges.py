"""A blob read as a file, a range at a time: a header is read without downloading the image.

Pillow reads an image's header through ``read``/``seek`` like any file; ``BlobWindow`` answers from the few
ranges it fetched (``CHUNK`` bytes each, aligned), and stops at ``limit`` bytes in all, so a header that
points far into a large file costs a bounded read, never the whole blob.
"""
from __future__ import annotations

import io
from collections.abc import Callable

CHUNK = 64 * 1024
DEFAULT_LIMIT = 16 * 2**20  # a header needing more is not checked (Photoshop masters carry MBs of APP13)

Fetch = Callable[[int, int], bytes]  # (offset, length) -> those bytes of the blob


class ReadLimit(Exception):
    """Reading the header would take more than the window's limit."""


class BlobWindow(io.RawIOBase):
    """A read-only, seekable file over ``size`` bytes fetched with ``fetch(offset, length)``."""

    def __init__(self, fetch: Fetch, size: int, *, limit: int = DEFAULT_LIMIT, chunk: int = CHUNK):
        super().__init__()
        self._fetch = fetch
        self.size = size
        self.limit = limit
        self.chunk = chunk
        self._chunks: dict[int, bytes] = {}
        self.pos = 0
        self.fetched = 0     # bytes fetched so far
        self.requests = 0    # ranged reads made
        self.high_water = 0  # the furthest byte anything read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if self.pos >= self.size:
            return b""
        end = self.size if size is None or size < 0 else min(self.size, self.pos + size)
        data = self.range(self.pos, end)
        self.pos = end
        self.high_water = max(self.high_water, end)
        return data

    def range(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``, fetched in aligned chunks (neighbouring missing chunks in one request)."""
        first, last = start // self.chunk, (max(start, end - 1)) // self.chunk
        missing = [n for n in range(first, last + 1) if n not in self._chunks]
        while missing:
            run = 1
            while run < len(missing) and missing[run] == missing[0] + run:
                run += 1
            offset = missing[0] * self.chunk
            length = min(run * self.chunk, self.size - offset)
            if self.fetched + length > self.limit:
                raise ReadLimit(f"reading the header needs more than {self.limit:,} bytes")
            data = self._fetch(offset, length)
            self.fetched += len(data)
            self.requests += 1
            for k in range(run):
                self._chunks[missing[0] + k] = data[k * self.chunk:(k + 1) * self.chunk]
            missing = missing[run:]
        joined = b"".join(self._chunks[n] for n in range(first, last + 1))
        return joined[start - first * self.chunk:end - first * self.chunk]
