"""What one blob is: its name, size and metadata read against IMAGE_PATH_PATTERN.

Every blob becomes an ``ImageRecord`` or a ``SkippedBlob`` with a reason a person can act on; nothing is
dropped silently. Called once per blob of every listing, so the common path avoids the slower general helpers
(``posixpath``): a full sync describes 100,000 blobs in about a second.
"""
from __future__ import annotations

from collections.abc import Mapping

from .layout import InvalidValue, PathFields, PathLayout, parse_sort, parse_type, type_from_words
from .partner_codes import META_KEYS, nfc
from .records import CatalogEntry, ImageRecord, SkippedBlob, content_key_for, image_id_for
from .web import Verdict

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".avif"})
_IMAGE_EXTENSION_LIST = ", ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
_NO_METADATA: Mapping[str, str] = {}


def describe_blob(layout: PathLayout, name: str, size: int | None, metadata: Mapping[str, str] | None,
                  content_md5: bytes | None, etag: str | None, *, content_type: str | None = None,
                  web_tag: str | None = None, tag_count: int = 0) -> CatalogEntry:
    """Turn one blob's name and properties into a record, or say why it is not one. ``web_tag``: its verdict
    tag (``web.TAG``), kept only when it is about the blob's content now."""
    base = name[name.rfind("/") + 1:]
    not_an_image = _not_an_image(name, base, size)
    if not_an_image is not None:
        return not_an_image
    meta = {k.lower(): v for k, v in metadata.items()} if metadata else _NO_METADATA
    fields = layout.match(name)
    placed = _product(layout, name, meta, fields)
    if isinstance(placed, SkippedBlob):
        return placed
    kind_and_sort = _kind_and_sort(name, base, meta, fields)
    if isinstance(kind_and_sort, SkippedBlob):
        return kind_and_sort
    kind, sort = kind_and_sort
    sort_b2c, codes, ignored = _partner_fields(meta) if meta else (None, None, ())
    image_id = image_id_for(name)
    content_key = content_key_for(image_id, content_md5, etag)
    return ImageRecord(
        blob_name=name,
        item_id=placed,
        color_id=(meta.get("colorid") or "").strip() or (fields.color_id if fields else None) or None,
        type=kind,
        sort=sort,
        alt=(meta.get("alt") or "").strip() or None,
        size=int(size or 0),
        image_id=image_id,
        content_key=content_key,
        sort_b2c=sort_b2c,
        codes=codes,
        ignored=ignored,
        content_type=content_type,
        etag=etag,
        tag_count=tag_count,
        verdict=Verdict.decode(web_tag, content_key[len(image_id) + 1:]) if web_tag else None,
    )


def _not_an_image(name: str, base: str, size: int | None) -> SkippedBlob | None:
    """What the name and size alone say: a folder marker, a path web clients mangle, a hidden or non-image
    file, an empty blob."""
    if not base:
        return SkippedBlob(name, "name ends with '/': a folder marker, not an image")
    if name[0] == "/" or "//" in name:
        # Not guessed into a product: a per-product sync lists '<item>/' and would never see it there.
        problem = "starts with '/'" if name.startswith("/") else "has an empty folder name ('//')"
        return SkippedBlob(name, f"path does not fit IMAGE_PATH_PATTERN: the name {problem}", layout_miss=True,
                           detail=f"rename it to {'/'.join(p for p in name.split('/') if p)!r}")
    if base[0] == ".":
        return SkippedBlob(name, "hidden file (name starts with '.')")
    dot = base.rfind(".")
    ext = base[dot:].lower() if dot > 0 else ""
    if ext not in IMAGE_EXTENSIONS:
        if base.lower() == "thumbs.db":
            return SkippedBlob(name, "Windows thumbnail cache (Thumbs.db), not an image")
        return SkippedBlob(name, f"not an image: the extension is not one of {_IMAGE_EXTENSION_LIST}",
                           detail=f"extension {ext or '(none)'!r}")
    if not size:
        return SkippedBlob(name, "empty blob (0 bytes)")
    return None


def _product(layout: PathLayout, name: str, meta: Mapping[str, str], fields: PathFields | None) -> str | SkippedBlob:
    """The product (item id) a blob belongs to, from its path or its ``itemid`` metadata."""
    meta_item = (meta.get("itemid") or "").strip()
    item_id = meta_item or (fields.item_id if fields else None)
    if not item_id:
        dots = [seg for seg in name.split("/")[:-1] if seg in (".", "..")]
        if dots:
            return SkippedBlob(name, "path does not fit IMAGE_PATH_PATTERN: the name has a '.' or '..' folder, "
                                     "which web clients drop before they download", layout_miss=True,
                               detail=f"a {dots[0]!r} folder; rename it to "
                                      f"{'/'.join(s for s in name.split('/') if s not in ('.', '..'))!r}")
        return SkippedBlob(name, f"path does not fit IMAGE_PATH_PATTERN {layout.pattern!r} "
                                 "and the blob has no 'itemid' metadata", layout_miss=True)
    sep = layout.item_prefix_separator
    if not sep:
        return nfc(item_id)  # no folder: the code is the product, in NFC (one code, however typed)
    if meta_item and (fields is None or nfc(fields.item_id) != nfc(meta_item)):
        # With a folder-per-product layout the blob and delete triggers list '<item>/' to build a product's
        # full set for TRAEDE; an image filed elsewhere would be deleted there at the product's next upload.
        where = "the blob's folder" if fields else f"a path outside IMAGE_PATH_PATTERN {layout.pattern!r}"
        folder = f"folder {fields.item_id!r}" if fields else "no folder"
        return SkippedBlob(name, f"metadata itemid disagrees with {where}: move each blob under the folder its "
                                 "itemid names, or correct its metadata",
                           detail=f"itemid {meta_item!r}, {folder}: move it under '{meta_item}{sep}'")
    return fields.item_id if fields else item_id  # the folder is the product (as listed: its own spelling)


def _kind_and_sort(name: str, base: str, meta: Mapping[str, str],
                   fields: PathFields | None) -> tuple[int, int | None] | SkippedBlob:
    """Wallie's type (metadata, else the path's {type}, else a kind word in the file name) and the sort."""
    try:
        if meta.get("type", "").strip():
            kind = parse_type(meta["type"])
        elif fields and fields.type:
            kind = parse_type(fields.type)
        else:
            kind = type_from_words(base[:base.rfind(".")])
        raw_sort = (meta.get("sort") or "").strip() or (fields.sort if fields else None)
        return kind, parse_sort(raw_sort) if raw_sort else None
    except InvalidValue as exc:
        source = "metadata" if exc.field in meta and (meta.get(exc.field) or "").strip() else "path"
        return SkippedBlob(name, f"{source} {exc.field} is not {exc.expected}", detail=f"{exc.field} {exc.value!r}")


MAX_CODE_LENGTH = 255


def _partner_fields(meta: Mapping[str, str]) -> tuple[int | None, dict[str, str] | None,
                                                     tuple[tuple[str, str], ...]]:
    """TRAEDE's ``sort_b2c`` and the per-partner codes from metadata; a value not valid for its field is
    left out (the image still goes) with the reason in ``ignored``."""
    ignored = []
    sort_b2c = None
    raw = (meta.get("sort_b2c") or "").strip()
    if raw:
        try:
            sort_b2c = parse_sort(raw, "sort_b2c")
        except InvalidValue as exc:
            ignored.append((f"metadata sort_b2c ignored: not {exc.expected}", f"sort_b2c {exc.value!r}"))
    codes = {}
    for key in META_KEYS:
        value = (meta.get(key) or "").strip()
        if not value:
            continue
        if key != "traede_item_number" and (len(value) > MAX_CODE_LENGTH or not value.isprintable()):
            # (a traede_item_number is kept whatever it is: the engine withholds a product whose metadata
            # names another TRAEDE item number than its own, rather than send its set under a guessed one)
            ignored.append((f"metadata {key} ignored: not a code (printable text of at most {MAX_CODE_LENGTH} "
                            "characters)", f"{key} {value[:40]!r}"))
        else:
            codes[key] = value
    return sort_b2c, codes or None, tuple(ignored)
