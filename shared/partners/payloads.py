"""What each partner receives for our images: Wallie records and TRAEDE product sets.

Pure functions of the catalog records and their URLs, so a dry run, a real sync and the tests all
build exactly the same bodies.
"""
from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..catalog.layout import TYPE_NAMES
from ..catalog.partner_codes import PartnerIds, nfc
from ..catalog.records import ImageRecord, SignedImage

MAX_FILENAME_BYTES = 255
# About what a payload holds in memory while it waits in a partner's lane (the lane's byte bound), from
# tracemalloc on CPython 3.11: a record's dict, its small values and the Unit around it, plus its strings.
# Cheaper than walking the payload: a full sync builds 100,000 of them.
WALLIE_RECORD_BYTES = 560
TRAEDE_PRODUCT_BYTES = 350
TRAEDE_IMAGE_BYTES = 750


def wallie_record(signed: SignedImage, ids: PartnerIds | None = None) -> dict[str, Any]:
    """One record for Wallie's ``POST /Images/urls``: exactly the documented fields. ``ids``: Wallie's codes
    for the item and colour when they are not the folder's (``partner_codes``); the imageId never changes."""
    image = signed.record
    item, color = (ids.item, ids.color) if ids else (nfc(image.item_id), image.color_id and nfc(image.color_id))
    record: dict[str, Any] = {"imageId": image.image_id, "itemId": item}
    if color:
        record["colorId"] = color
    record["type"] = image.type
    record["url"] = signed.url
    return record


def wallie_record_bytes(record: dict[str, Any]) -> int:
    """About the memory a Wallie record holds (its SAS URL is most of it)."""
    return WALLIE_RECORD_BYTES + len(record["url"]) + len(record["itemId"]) + len(record.get("colorId") or "")


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
    size: int = 0  # about the memory the body holds, in bytes


@dataclass(frozen=True, slots=True)
class TraedeOptions:
    """TRAEDE's optional fields: ``use_sort_b2c`` "auto" (on for a product when any image has a
    ``sort_b2c``, else left to TRAEDE), "true" or "false"; ``skip_if_no_variant_match`` is sent with every
    image that names a variant (a colour)."""

    color_attribute: str = "Color"
    use_sort_b2c: str = "auto"
    skip_if_no_variant_match: bool = False


DEFAULT_TRAEDE_OPTIONS = TraedeOptions()


def traede_product(item_id: str, images: Iterable[SignedImage], *,
                   options: TraedeOptions = DEFAULT_TRAEDE_OPTIONS,
                   colors: dict[str, str | None] | None = None) -> TraedeProduct:
    """One product for TRAEDE's ``POST /products/images/sync``: ALL its images, numbered 1..n.

    The stable ``existance_key`` lets TRAEDE skip images it already has although the SAS URL changes.
    ``item_id`` is TRAEDE's item number; ``colors`` maps a blob to TRAEDE's colour code where it is not the
    folder's (``partner_codes``).
    """
    ordered = sorted(images, key=lambda s: order_key(s.record))
    names = _unique_filenames([s.record for s in ordered])
    out = []
    size = TRAEDE_PRODUCT_BYTES + len(item_id)
    for n, signed in enumerate(ordered, start=1):
        image = signed.record
        filename, alt = names[image.blob_name], image.alt or default_alt(image)
        entry = {
            "url": signed.url,
            "sort": n,
            "existance_key": image.sent_key,
            "filename": filename,
            "alt": alt,
        }
        size += TRAEDE_IMAGE_BYTES + len(signed.url) + len(alt) + len(filename)
        if image.sort_b2c is not None:
            entry["sort_b2c"] = image.sort_b2c
        color = colors.get(image.blob_name, image.color_id) if colors else image.color_id
        if color:
            color = nfc(color)
            entry["attach_to_variants_matching_attribute_code"] = {options.color_attribute: color}
            if options.skip_if_no_variant_match:
                entry["skip_if_no_variant_matches_attribute_code"] = True
        out.append(entry)
    body: dict[str, Any] = {"item_number": item_id}
    if options.use_sort_b2c == "auto":
        if any(s.record.sort_b2c is not None for s in ordered):
            body["use_sort_b2c"] = True
    else:
        body["use_sort_b2c"] = options.use_sort_b2c == "true"
    body["images"] = out
    return TraedeProduct(body, tuple(s.record for s in ordered), size)


def _unique_filenames(images: list[ImageRecord]) -> dict[str, str]:
    """File names unique within one product: ``front.jpg`` of two colours become ``100-front.jpg`` and
    ``900-front.jpg``, so TRAEDE never stores one picture under another's name."""
    plain_names = [i.sent_filename for i in images]  # a rendition's name has the rendition's extension
    if len(set(plain_names)) == len(plain_names) and all(len(n) <= MAX_FILENAME_BYTES // 4 for n in plain_names):
        return dict(zip((i.blob_name for i in images), plain_names, strict=True))  # the usual case: nothing to change
    plain = Counter(_fit(i.sent_filename) for i in images)
    names = {i.blob_name: _fit(f"{i.color_id}-{i.sent_filename}" if plain[_fit(i.sent_filename)] > 1 and i.color_id
                               else i.sent_filename)
             for i in images}
    again = Counter(names.values())
    return {i.blob_name: names[i.blob_name] if again[names[i.blob_name]] == 1
            else _fit(f"{i.image_id[:8]}-{i.sent_filename}") for i in images}


def _fit(filename: str) -> str:
    """At most 255 UTF-8 bytes, extension kept: blob names reach 1,024 characters, file names on the
    partner's side (a file system, a varchar(255)) do not."""
    if len(filename.encode("utf-8")) <= MAX_FILENAME_BYTES:
        return filename
    stem, ext = posixpath.splitext(filename)
    while stem and len((stem + ext).encode("utf-8")) > MAX_FILENAME_BYTES:
        stem = stem[:-1]
    return stem + ext
