"""A web rendition of one image: decoded in bounded memory, turned upright, converted to sRGB, its longest
side bounded, encoded as JPEG or WebP.

Memory: one decode at a time per process, always on the same thread (``_DECODER``), whatever the number of
threads or trigger
invocations asking; a JPEG is decoded at the smallest scale (1/2, 1/4, 1/8) still larger than the rendition
(Pillow's ``draft``); nothing with more than ``MAX_DECODE_PIXELS`` pixels to decode is decoded at all (a
decompression-bomb guard: a 2 KB PNG can declare 40,000 x 40,000 pixels). The original is read from a
temporary file, never held in memory whole.
"""
from __future__ import annotations

import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from ..catalog.web import WebPolicy
from .probe import _pillow

_ORIENTATION = 0x0112  # the EXIF tag
MAX_DECODE_PIXELS = 100_000_000  # 100 MP: 300 MB as RGB, 400 MB as CMYK; one at a time
# One thread decodes for the whole process: the decodes never overlap, and their large buffers are all
# allocated by one thread, so the C allocator reuses them instead of keeping a freed 80 MB decode in each
# worker thread's own arena (measured: 4 workers decoding 20 MP TIFFs peaked ~340 MB, one thread 241 MB).
_DECODER = ThreadPoolExecutor(1, thread_name_prefix="decode")


class CannotRender(Exception):
    """The image cannot be converted; ``code`` is a ``catalog.web.PROBLEMS`` key."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True, slots=True)
class Rendition:
    data: bytes
    width: int
    height: int


def render(source: IO[bytes], policy: WebPolicy) -> Rendition:
    """The rendition of the image in ``source`` under ``policy``; ``CannotRender`` when it cannot be made."""
    return _DECODER.submit(_render, source, policy).result()


def _render(source: IO[bytes], policy: WebPolicy) -> Rendition:
    Image = _pillow()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = Image.open(source)
        except Exception as exc:  # noqa: BLE001 - any reader error: the header does not parse
            raise CannotRender("damaged", f"{type(exc).__name__}: {exc}") from exc
        side = policy.rendition_side
        if image.format in ("JPEG", "MPO"):
            image.draft(image.mode if image.mode in ("RGB", "L", "CMYK") else None, (side, side))
        pixels = image.size[0] * image.size[1]
        if pixels > MAX_DECODE_PIXELS:
            raise CannotRender("toomany", f"{image.size[0]}x{image.size[1]} = {pixels / 1e6:.0f} MP to decode, "
                                          f"more than {MAX_DECODE_PIXELS / 1e6:.0f} MP")
        try:
            image.load()
            orientation = image.getexif().get(_ORIENTATION, 1)  # after load: Pillow turns TIFFs as it loads them
            return _encode(_web_ready(image), policy, orientation)
        except (CannotRender, MemoryError):  # out of memory is this process's state, not the image's verdict
            raise
        except Exception as exc:  # noqa: BLE001 - truncated or damaged data: the decoder says so
            raise CannotRender("undecodable", f"{type(exc).__name__}: {exc}") from exc


def _web_ready(image: Any) -> Any:
    """Upright, sRGB, 8 bits, RGB or RGBA, at most the rendition's size."""
    from PIL import ImageCms

    profile = image.info.get("icc_profile")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    elif image.mode == "F":
        image = image.convert("L")
    if profile and image.mode in ("RGB", "RGBA", "CMYK", "L"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            target_mode = "RGBA" if image.mode == "RGBA" else "RGB"
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"),
                                                  outputMode=target_mode)
            if converted is not None:
                image = converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: convert as if there were none
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
    elif image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGB")  # CMYK without a profile, L, YCbCr, LAB...
    return image


def _encode(image: Any, policy: WebPolicy, orientation: int = 1) -> Rendition:
    """Bounded, then turned upright (the rendition carries no EXIF: its orientation is baked in). Turning the
    small image, not the original, spares a copy of the full decode (80 MB for 20 MP)."""
    from PIL import Image

    side = policy.rendition_side
    if max(image.size) > side:
        image.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    turn = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}.get(orientation)  # as PIL.ImageOps.exif_transpose turns it
    if turn is not None:
        image = image.transpose(turn)
    out = io.BytesIO()
    if policy.rendition_format == "WEBP":
        image.save(out, "WEBP", quality=policy.rendition_quality, method=4)
    else:
        if image.mode == "RGBA":  # JPEG has no transparency: on white, as a page would show it
            flat = Image.new("RGB", image.size, (255, 255, 255))
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        image.save(out, "JPEG", quality=policy.rendition_quality, progressive=True, optimize=True)
    return Rendition(out.getvalue(), image.size[0], image.size[1])
