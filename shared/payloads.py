"""What each partner receives for our images: Wallie records and TRAEDE product sets.

Pure functions of the catalog records and their URLs, so a dry run, a real sync and the tests all
build exactly the same bodies.
"""
from __future__ import annotations

import posixpath
from collections import Counter
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable

from .catalog import ImageRecord, SignedImage
from .layout import TYPE_NAMES

MAX_FILENAME_BYTES = 255


def wallie_record(signed: SignedImage) -> dict[str, Any]:
    """One record for Wallie's ``POST /Images/urls``: exactly the documented fields."""
    image = signed.record
    record: dict[str, Any] = {"imageId": image.image_id, "itemId": image.item_id}
    if image.color_id:
        record["colorId"] = image.color_id
    record["type"] = image.type
    record["url"] = signed.url
    return record


def order_key(i: ImageRecord) -> tuple[bool, int, str, int, str]:
    """TRAEDE's deterministic order: explicit sort, then colour, then kind (front first), then name."""
    return (i.sort is None, i.sort or 0, i.color_id or "", i.type, i.blob_name)



def default_alt(image: ImageRecord) -> str:
    kind = TYPE_NAMES.get(image.type, "image")
    colour = f", colour {image.color_id}" if image.color_id else ""
    return f"{image.item_id}{colour}, {kind}"


@dataclass(frozen=True, slots=True)
class TraedeProduct:
    """A product's body for TRAEDE and its images in the body's order (the report names each one)."""

    body: dict[str, Any]
    records: tuple[ImageRecord, ...]


def traede_product(item_id: str, images: Iterable[SignedImage], *, color_attribute: str = "Color") -> TraedeProduct:
    """One product for TRAEDE's ``POST /products/images/sync``: ALL its images, numbered 1..n.

    The stable ``existance_key`` lets TRAEDE skip images it already has although the SAS URL changes.
    """
    ordered = sorted(images, key=lambda s: order_key(s.record))
    names = _unique_filenames([s.record for s in ordered])
    out = []
    for n, signed in enumerate(ordered, start=1):
        image = signed.record
        entry = {
            "url": signed.url,
            "sort": n,
            "existance_key": image.content_key,
            "filename": names[image.blob_name],
            "alt": image.alt or default_alt(image),
        }
        if image.color_id:
            entry["attach_to_variants_matching_attribute_code"] = {color_attribute: image.color_id}
        out.append(entry)
    return TraedeProduct({"item_number": item_id, "images": out}, tuple(s.record for s in ordered))


def _unique_filenames(images: list[ImageRecord]) -> dict[str, str]:
    """File names unique within one product: ``front.jpg`` of two colours become ``100-front.jpg`` and
    ``900-front.jpg``, so TRAEDE never stores one picture under another's name."""
    plain_names = [i.filename for i in images]
    if len(set(plain_names)) == len(plain_names) and all(len(n) <= MAX_FILENAME_BYTES // 4 for n in plain_names):
        return dict(zip((i.blob_name for i in images), plain_names, strict=True))  # the usual case: nothing to change
    plain = Counter(_fit(i.filename) for i in images)
    names = {i.blob_name: _fit(f"{i.color_id}-{i.filename}" if plain[_fit(i.filename)] > 1 and i.color_id
                               else i.filename)
             for i in images}
    again = Counter(names.values())
    return {i.blob_name: names[i.blob_name] if again[names[i.blob_name]] == 1
            else _fit(f"{i.image_id[:8]}-{i.filename}") for i in images}


def _fit(filename: str) -> str:
    """At most 255 UTF-8 bytes, extension kept: blob names reach 1,024 characters, file names on the
    partner's side (a file system, a varchar(255)) do not."""
    if len(filename.encode("utf-8")) <= MAX_FILENAME_BYTES:
        return filename
    stem, ext = posixpath.splitext(filename)
    while stem and len((stem + ext).encode("utf-8")) > MAX_FILENAME_BYTES:
        stem = stem[:-1]
    return stem + ext
