"""What an image's bytes really are, from its header and its last bytes: format, pixels, colour mode, and
whether it can be decoded whole.

Read through a ``BlobWindow``: usually one 64 KB range for the header and one for the end, never the whole
image. Pillow reads the headers it knows (JPEG, PNG, GIF, TIFF, BMP, ...); WebP and HEIF/AVIF headers are
read here (Pillow's readers for those load the whole file). "Decodable" is judged by structure: the
header parses, and the file is as long as its header says (a JPEG ends with its end-of-image marker after
the scan, a PNG with IEND, a TIFF's strips and a BMP's rows lie within the file, a WebP's RIFF size and an
HEIF's boxes fit). Pixel data damaged in the middle is found only when a rendition decodes it.
"""
from __future__ import annotations

import struct
import warnings
from typing import Any

from ..catalog.web import Verdict
from .ranges import BlobWindow

TAIL = 64 * 1024  # how much of the end is read to find a JPEG's end-of-image marker
# A JPEG that declares a trailer after its image (Android motion photos, Samsung's SEF data) does not end
# with its end-of-image marker: these words in its header say so.
_TRAILER_MARKS = (b"MotionPhoto", b"MicroVideo", b"Container:Directory", b"GCamera:", b"SEFH")
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"mif2"}
_AVIF_BRANDS = {b"avif", b"avis"}


def _pillow() -> Any:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # headers only here; ``render`` enforces its own decode limit
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:  # pragma: no cover - pillow-heif is in requirements.txt
        pass
    return Image


def sniff(head: bytes) -> str | None:
    """The format the first bytes announce (Pillow's names), whatever Pillow makes of the rest."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:2] == b"BM":
        return "BMP"
    if head[4:8] == b"ftyp":
        brands = {head[8:12]} | {head[i:i + 4] for i in range(16, min(len(head), 8 + 64), 4)}
        if brands & _AVIF_BRANDS:
            return "AVIF"
        if brands & _HEIF_BRANDS:
            return "HEIF"
    return None


def inspect(window: BlobWindow, identity: str) -> Verdict:
    """The verdict on the image in ``window`` (raises ``ranges.ReadLimit`` or the storage error when the
    header cannot be read at all: that is "not checked", not a verdict)."""
    head = window.range(0, min(window.size, 32))
    sniffed = sniff(head)
    if sniffed == "WEBP":
        return _webp(window, identity)
    if sniffed in ("HEIF", "AVIF"):
        return _isobmff(window, identity, sniffed)
    Image = _pillow()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(window)
            fmt, (width, height), mode = image.format, image.size, image.mode
            complete = _complete(fmt, image, window)
    except Exception as exc:  # noqa: BLE001 - every reader error means the same: the header does not parse
        from .ranges import ReadLimit

        if isinstance(exc, ReadLimit) or _is_storage_error(exc):
            raise
        return Verdict(identity, sniffed, problem="damaged" if sniffed else "notimage")
    if fmt == "MPO":
        fmt = "JPEG"  # a JPEG with extra pictures (depth maps, stereo): browsers show its first
    return Verdict(identity, fmt, width, height, mode, problem=None if complete else "truncated")


def _complete(fmt: str | None, image: Any, window: BlobWindow) -> bool:
    """Whether the file holds all its header promises."""
    size = window.size
    if fmt in ("JPEG", "MPO"):
        start = max(window.high_water, size - TAIL)  # only past the scan's start: no thumbnail's marker
        tail = window.range(start, size).rstrip(b"\x00")
        if not tail and start > window.high_water:
            return True  # padded with zeros after the image: its end cannot be seen, so it is not judged
        if b"\xff\xd9" in tail:
            return True
        header = window.range(0, min(window.high_water, size))
        return any(mark in header for mark in _TRAILER_MARKS)
    if fmt == "PNG":
        return b"IEND" in window.range(max(0, size - 1024), size)
    if fmt == "GIF":
        return b";" in window.range(max(0, size - 16), size)
    if fmt == "TIFF":
        tags = getattr(image, "tag_v2", {})
        offsets, counts = tags.get(273) or tags.get(324), tags.get(279) or tags.get(325)
        if offsets and counts:
            return bool(max(o + c for o, c in zip(offsets, counts, strict=False)) <= size)
        return True
    if fmt == "BMP" and image.tile and image.tile[0].codec_name == "raw":
        tile = image.tile[0]
        stride = tile.args[1] if len(tile.args) > 1 and tile.args[1] else 0
        return not stride or tile.offset + abs(stride) * image.size[1] <= size
    return True


def _webp(window: BlobWindow, identity: str) -> Verdict:
    """A WebP's RIFF header: its size, and the first image chunk's dimensions (lossy, lossless or extended)."""
    head = window.range(0, min(window.size, 64))
    riff_size = struct.unpack("<I", head[4:8])[0] + 8 if len(head) >= 8 else 0
    kind = head[12:16]
    width = height = 0
    mode = "RGB"
    try:
        if kind == b"VP8X":
            flags = head[20]
            width = 1 + int.from_bytes(head[24:27], "little")
            height = 1 + int.from_bytes(head[27:30], "little")
            mode = "RGBA" if flags & 0x10 else "RGB"
        elif kind == b"VP8 ":
            if head[23:26] != b"\x9d\x01\x2a":
                return Verdict(identity, "WEBP", problem="damaged")
            width, height = (int.from_bytes(head[26:28], "little") & 0x3FFF,
                             int.from_bytes(head[28:30], "little") & 0x3FFF)
        elif kind == b"VP8L":
            if head[20] != 0x2F:
                return Verdict(identity, "WEBP", problem="damaged")
            bits = int.from_bytes(head[21:25], "little")
            width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            mode = "RGBA" if bits >> 28 & 1 else "RGB"
        else:
            return Verdict(identity, "WEBP", problem="damaged")
    except IndexError:
        return Verdict(identity, "WEBP", problem="damaged")
    return Verdict(identity, "WEBP", width, height, mode, problem=None if riff_size <= window.size else "truncated")


def _isobmff(window: BlobWindow, identity: str, fmt: str) -> Verdict:
    """An HEIF/AVIF file's top-level boxes (they must fit the file) and its largest ``ispe`` (the primary
    image's width and height; thumbnails are smaller)."""
    size, at = window.size, 0
    width = height = 0
    while at + 8 <= size:
        box_size, kind = struct.unpack(">I4s", window.range(at, at + 8))
        header = 8
        if box_size == 1:
            if at + 16 > size:
                return Verdict(identity, fmt, problem="truncated")
            box_size, header = struct.unpack(">Q", window.range(at + 8, at + 16))[0], 16
        elif box_size == 0:
            box_size = size - at
        if box_size < header:
            return Verdict(identity, fmt, problem="damaged")
        if at + box_size > size:
            return Verdict(identity, fmt, width, height, "RGB", problem="truncated")
        if kind == b"meta" and box_size <= 4 * 2**20:
            for w, h in _ispe(window.range(at + header + 4, at + box_size)):  # (meta is a full box)
                if w * h > width * height:
                    width, height = w, h
        at += box_size
    if not width:
        return Verdict(identity, fmt, problem="damaged")
    return Verdict(identity, fmt, width, height, "RGB")


def _ispe(data: bytes) -> list[tuple[int, int]]:
    """Every ``ispe`` (image spatial extents) property inside a ``meta`` box's bytes."""
    found, at = [], 0
    while (at := data.find(b"ispe", at)) >= 4:
        if at + 16 <= len(data):
            found.append(struct.unpack(">II", data[at + 8:at + 16]))
        at += 4
    return found


def _is_storage_error(exc: Exception) -> bool:
    from azure.core.exceptions import AzureError

    return isinstance(exc, AzureError)
