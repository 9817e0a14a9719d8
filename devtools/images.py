"""Small real images (PNG written by hand, JPEG via Pillow when present) for the demo, tests and bench."""
from __future__ import annotations

import io
import struct
import zlib


def png(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (200, 30, 30), *, note: str = "") -> bytes:
    """A valid RGB PNG; ``note`` goes into a tEXt chunk so otherwise equal images differ in bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    raw = row * height
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if note:
        out += chunk(b"tEXt", b"Comment\x00" + note.encode("utf-8"))
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def jpeg(width: int = 16, height: int = 16, rgb: tuple[int, int, int] = (30, 30, 200), *, note: str = "") -> bytes:
    """A valid JPEG (needs Pillow, a dev dependency); falls back to a PNG if Pillow is missing."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is in requirements-dev.txt
        return png(width, height, rgb, note=note)
    buf = io.BytesIO()
    Image.new("RGB", (width, height), rgb).save(buf, "JPEG", quality=80, comment=note.encode("utf-8"))
    return buf.getvalue()
