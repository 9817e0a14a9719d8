"""Whether a partner can show an image: its real content (a ``Verdict``), and what a partner is sent for it
under the web policy (``WebPolicy``): the original, the original served with its real type, a web rendition,
or nothing (``deliver``).

Pure: no Pillow, no storage. The verdict is read from the image's pixels once per content (``imaging``) and
kept in a blob index tag on the image itself (``TAG``): tags change neither the blob's ETag nor its
Content-MD5, so no partner downloads anything again because of it, and the listing returns them with
everything else (``include=tags``): the nightly sync of an unchanged catalog reads no more than before.
A verdict names the content it was made for (``identity``: the blob's Content-MD5, else its ETag); a tag
left from older bytes is ignored, so a changed image is looked at again.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

TAG = "image-sync-web"  # the blob index tag holding an image's verdict
_VERSION = "1"
# What a tag value may hold (Azure: letters, digits, space and + - . / : = _), at most 256 characters.
_TAG_SAFE = re.compile(r"[A-Za-z0-9 +\-./:=_]{1,256}")

OFF, CHECK, CONVERT = "off", "check", "convert"
MODES = (OFF, CHECK, CONVERT)

# Pillow's format names -> the type a browser is told, and the usual file extension.
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
               "TIFF": "image/tiff", "BMP": "image/bmp", "HEIF": "image/heic", "AVIF": "image/avif",
               "ICO": "image/x-icon", "PSD": "image/vnd.adobe.photoshop", "JPEG2000": "image/jp2"}
EXTENSIONS = {"JPEG": ".jpg", "WEBP": ".webp", "PNG": ".png", "GIF": ".gif"}
# The type a file's extension promises: what a download is served as while its content is not known yet.
EXTENSION_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
                   ".webp": "image/webp", ".tif": "image/tiff", ".tiff": "image/tiff", ".bmp": "image/bmp",
                   ".avif": "image/avif", ".heic": "image/heic", ".heif": "image/heif"}
DEFAULT_WEB_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")
RENDITION_FORMATS = ("JPEG", "WEBP")
RENDERER_VERSION = "1"  # bump when renditions of the same settings would come out differently

# Why an image cannot be shown anywhere: the code kept in its tag -> the cause reported.
PROBLEMS = {
    "notimage": "not an image: its bytes are in no image format (a file renamed to an image's name?)",
    "truncated": "the image is cut off (an interrupted upload?): its end is missing, so it cannot be decoded "
                 "whole; upload it again",
    "damaged": "the image is damaged: its header cannot be read; upload it again",
    "undecodable": "the image cannot be decoded (damaged data); upload it again",
    "toomany": "the image has more pixels than can be decoded safely (a decompression-bomb guard): export a "
               "smaller version",
    "nodecoder": "no decoder for this format here: it cannot be checked or converted",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an image's bytes really are: format (None: not an image), pixels, colour mode, and whether it can
    be decoded (``problem``: a key of ``PROBLEMS``). ``rendition`` is the fingerprint of the web rendition
    made from this content, if one was made."""

    identity: str                 # the content it is about: "md5:<hex>" or "etag:<etag>"
    format: str | None
    width: int = 0
    height: int = 0
    mode: str = ""
    problem: str | None = None
    rendition: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.format is not None

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    def encode(self) -> str:
        """The tag value: ``1 <identity> <format> <w>x<h> <mode> <ok|problem> [r:<fingerprint>]``."""
        parts = [_VERSION, self.identity, self.format or "-", self.size, (self.mode or "-").replace(";", "."),
                 self.problem or "ok"]
        if self.rendition:
            parts.append(f"r:{self.rendition}")
        return " ".join(parts)

    @classmethod
    def decode(cls, value: str | None, identity: str) -> Verdict | None:
        """The verdict a tag keeps, if it is about ``identity`` (the blob's content now); else None."""
        if not value:
            return None
        parts = value.split(" ")
        if len(parts) < 6 or parts[0] != _VERSION or parts[1] != identity:
            return None
        width, _, height = parts[3].partition("x")
        if not (width.isdigit() and height.isdigit()):
            return None
        rendition = parts[6][2:] if len(parts) > 6 and parts[6].startswith("r:") else None
        return cls(identity, None if parts[2] == "-" else parts[2], int(width), int(height),
                   "" if parts[4] == "-" else parts[4].replace(".", ";"),
                   None if parts[5] == "ok" else parts[5], rendition)

    def with_rendition(self, fingerprint: str | None) -> Verdict:
        return Verdict(self.identity, self.format, self.width, self.height, self.mode, self.problem, fingerprint)


def identity_of(content_md5: bytes | None, etag: str | None) -> str:
    """What identifies a blob's content: its Content-MD5 when it has one, else its ETag."""
    if content_md5:
        return f"md5:{bytes(content_md5).hex()}"
    return f"etag:{(etag or '').strip(chr(34))}"


def tag_safe(value: str) -> bool:
    return bool(_TAG_SAFE.fullmatch(value))


@dataclass(frozen=True)
class WebPolicy:
    """What a partner may be sent as it is, and what a web rendition is (settings ``WEB_*``, ``RENDITION_*``).

    ``mode``: ``convert`` (the default: check every image, convert what is not web-ready), ``check`` (check,
    skip what cannot be decoded, send the rest as it is with a warning), ``off`` (send everything as it is,
    unchecked, as before). The budget bounds the work one run does for images it has not seen yet."""

    mode: str = CONVERT
    formats: frozenset[str] = frozenset(DEFAULT_WEB_FORMATS)
    max_side: int = 6000
    max_bytes: int = 20 * 2**20
    rendition_format: str = "JPEG"
    rendition_side: int = 3000
    rendition_quality: int = 85
    renditions_container: str = "image-sync-renditions"
    budget_images: int = 500
    budget_bytes: int = 2048 * 2**20
    budget_seconds: float = 120.0
    fingerprint: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        spec = f"{RENDERER_VERSION}/{self.rendition_format}/{self.rendition_side}/{self.rendition_quality}"
        object.__setattr__(self, "fingerprint", hashlib.sha256(spec.encode()).hexdigest()[:8])

    @property
    def on(self) -> bool:
        return self.mode != OFF

    @property
    def rendition_type(self) -> str:
        return MEDIA_TYPES[self.rendition_format]

    def rendition_name(self, blob_name: str) -> str:
        """Where an image's rendition is kept in ``renditions_container``: its name plus the format's
        extension (``100001/BLK/front.tif`` -> ``100001/BLK/front.tif.jpg``)."""
        return blob_name + EXTENSIONS[self.rendition_format]

    def not_web_ready(self, verdict: Verdict, size: int) -> list[str]:
        """Why an image that can be decoded is not fit to send as it is (empty: it is)."""
        why = []
        if verdict.format not in self.formats:
            why.append(f"{verdict.format} is not a web format (browsers show {', '.join(sorted(self.formats))})")
        if verdict.mode in ("CMYK", "YCCK"):
            why.append(f"{verdict.mode} colours (print colours: browsers show them wrongly or not at all)")
        if max(verdict.width, verdict.height) > self.max_side:
            why.append(f"{max(verdict.width, verdict.height)} px on its longest side, over WEB_MAX_SIDE "
                       f"{self.max_side}")
        if size > self.max_bytes:
            why.append(f"{size / 2**20:.1f} MB, over WEB_MAX_MEGABYTES {self.max_bytes / 2**20:g}")
        return why


DEFAULT_POLICY = WebPolicy()
OFF_POLICY = WebPolicy(mode=OFF)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a partner is sent for one image, when it is not simply the original as stored.

    ``rendition``: the rendition blob (in ``WebPolicy.renditions_container``) sent instead of the original;
    ``content_type``: the type the original's download is served with (its stored type is wrong or missing);
    ``content_key``: TRAEDE's existance_key for what is sent; ``filename``: TRAEDE's file name when the
    rendition's extension differs; ``why``: what is not web-ready about the original; ``warning``: why a
    not web-ready original is sent as it is (the run's report names it)."""

    content_key: str
    rendition: str | None = None
    content_type: str | None = None
    filename: str | None = None
    why: tuple[str, ...] = ()
    warning: str | None = None
    rendition_container: str | None = None  # where ``rendition`` is (the contact sheet shows it from there)


def stored_type(content_type: str | None) -> str:
    """A stored Content-Type as compared: its media type, lower case, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def served_type(blob_name: str, stored: str | None, verdict: Verdict | None) -> str | None:
    """The type a download of the original must be served with when the stored one is wrong or missing (None:
    the stored one is right). Known content: its real type. Not known yet: the extension's, where the stored
    type says nothing (missing, ``application/octet-stream``, not an image type)."""
    have = stored_type(stored)
    if verdict is not None and verdict.format in MEDIA_TYPES:
        real = MEDIA_TYPES[verdict.format]
        return None if have == real or (real == "image/heic" and have == "image/heif") else real
    if have.startswith("image/"):
        return None
    dot = blob_name.rfind(".")
    return EXTENSION_TYPES.get(blob_name[dot:].lower()) if dot > blob_name.rfind("/") else None


def rendition_key(image_id: str, identity: str, policy: WebPolicy) -> str:
    """TRAEDE's existance_key of a rendition: new when the source's bytes or the rendition settings change."""
    return f"{image_id}:r{policy.fingerprint}:{identity}"


def rendition_filename(filename: str, policy: WebPolicy) -> str:
    """``front.tif`` -> ``front.jpg``: the file name a partner keeps for a rendition."""
    dot = filename.rfind(".")
    stem = filename[:dot] if dot > 0 else filename
    return stem + EXTENSIONS[policy.rendition_format]


def summary(verdict: Verdict | None, size: int, delivery: Delivery | None) -> dict[str, object]:
    """One image's verdict as the report, the ledger and the contact sheet keep it."""
    if verdict is None:
        return {"checked": False, "sent": "original"}
    out: dict[str, object] = {"format": verdict.format, "pixels": verdict.size, "mode": verdict.mode,
                              "bytes": size, "sent": "rendition" if delivery and delivery.rendition else "original"}
    if delivery is not None:
        if delivery.why:
            out["why"] = "; ".join(delivery.why)
        if delivery.content_type:
            out["served_as"] = delivery.content_type
        if delivery.warning:
            out["warning"] = delivery.warning
    return out


def problem_reason(code: str) -> str:
    return PROBLEMS.get(code, f"the image cannot be decoded ({code})")


def describe_verdict(verdict: Verdict) -> str:
    """``TIFF 6000x4000 CMYK``: what an image is, in a few words."""
    if verdict.format is None:
        return "not an image"
    return f"{verdict.format} {verdict.size} {verdict.mode}".strip()


def parse_formats(text: str, known: Mapping[str, str] = MEDIA_TYPES) -> frozenset[str]:
    """``jpeg, png`` -> {"JPEG", "PNG"}; raises ValueError naming a format that is not known."""
    aliases = {"JPG": "JPEG", "TIF": "TIFF", "HEIC": "HEIF"}
    out = set()
    for raw in text.split(","):
        name = raw.strip().upper()
        if not name:
            continue
        name = aliases.get(name, name)
        if name not in known:
            raise ValueError(name)
        out.add(name)
    return frozenset(out)
