"""Each partner's codes for a product and a colour, when they differ from the folder's.

Wallie wants the ids of its Items and Colors endpoints; TRAEDE wants the item number and the colour code
defined in its UI. A retailer whose folders use one code system maps them in two ways, the first that
says something wins:

1. **Blob metadata** on an image: ``wallie_item_id``, ``wallie_color_id``, ``traede_color``.
2. **A mapping file** (``PARTNER_CODES_FILE``: a CSV blob in the images container)::

       kind,code,wallie,traede
       item,100001,W-100001,TS-100001
       colour,100,BLK,100

   An empty cell means "this partner uses the folder's code". Once the file lists any item (or any
   colour), it is the list: a code it does not name is *unknown*, and its images are reported, not sent
   with a guessed code.
3. Otherwise the folder's code.

Codes are compared, looked up and sent in Unicode NFC (``nfc``): a folder named on a Mac (NFD) and the code
typed in a spreadsheet or a partner's UI (NFC) are one code. Wallie's ``imageId`` comes from the blob's path
and never from a code: a mapping change does not create new images at Wallie. A TRAEDE product is one
folder, so TRAEDE's item number comes from the file only (read whole, it refuses two folders with one
TRAEDE code; two folders that spell one code in two Unicode forms are refused by the engine); metadata
``traede_item_number`` is kept only so the engine can refuse a product whose metadata asks for another one
(``sync._Products``).
"""
from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..domain import Partner
from ..errors import ConfigError

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from .records import ImageRecord

SETTING = "PARTNER_CODES_FILE"
HEADER = ("kind", "code", "wallie", "traede")
KINDS = {"item": "item", "colour": "colour", "color": "colour"}
META_KEYS = ("traede_item_number", "traede_color", "wallie_item_id", "wallie_color_id")
MAX_FILE_BYTES = 20 * 1024 * 1024


def nfc(code: str) -> str:
    """A code as it is compared, looked up and sent: Unicode NFC (ASCII, the usual case, as it is)."""
    return code if code.isascii() else unicodedata.normalize("NFC", code)


def nfc_forms(code: str) -> list[str]:
    """The spellings of one code that tools produce: NFC (most), NFD (macOS file names), and ``code``."""
    if code.isascii():
        return [code]
    return list(dict.fromkeys((code, unicodedata.normalize("NFC", code), unicodedata.normalize("NFD", code))))


def missing_code(codes: PartnerCodes | None) -> str:
    """The cause of every "code not in the file" problem (the codes themselves are each problem's detail)."""
    name = codes.name if codes is not None else "?"
    return f"a code is not in {SETTING} {name!r}: add it to the file"


@dataclass(frozen=True, slots=True)
class PartnerIds:
    """One image's codes at one partner, or why it has none (``problem``, the detail: it is not sent there)."""

    item: str
    color: str | None
    problem: str | None = None


class PartnerCodes:
    """The mapping file, parsed: folder code -> (Wallie code, TRAEDE code) for items and colours."""

    def __init__(self, name: str, rows: Mapping[tuple[str, str], tuple[str, str]]):
        self.name = name
        self.etag: str | None = None  # the blob's ETag when read from storage
        self.items = {code: pair for (kind, code), pair in rows.items() if kind == "item"}
        self.colours = {code: pair for (kind, code), pair in rows.items() if kind == "colour"}

    @classmethod
    def parse(cls, name: str, data: bytes) -> PartnerCodes:
        """Every problem is a ConfigError naming the file and the line."""
        import csv  # on first use: the catalog imports this module at the app's cold start
        import io

        where = f"{SETTING} {name!r}"
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise ConfigError(f"{where} line {line}: not UTF-8 text ({exc.reason}); save the file as UTF-8 "
                              "CSV") from exc
        rows: dict[tuple[str, str], tuple[str, str]] = {}
        first_line: dict[tuple[str, str], int] = {}
        traede_items: dict[str, tuple[str, int]] = {}
        reader = csv.reader(io.StringIO(text))
        try:
            header = next(reader, None)
            if header is None or tuple(h.strip().lower() for h in header) != HEADER:
                raise ConfigError(f"{where} line 1: expected the header {','.join(HEADER)!r}, "
                                  f"found {','.join(header or [])!r}")
            for fields in reader:
                line = reader.line_num
                if not any(f.strip() for f in fields):
                    continue  # blank line
                if len(fields) != len(HEADER):
                    raise ConfigError(f"{where} line {line}: expected {len(HEADER)} columns "
                                      f"({','.join(HEADER)}), found {len(fields)}")
                # NFC: a folder named on macOS (NFD) and the same code typed in a spreadsheet are one code
                kind_raw, code, wallie, traede = (nfc(f.strip()) for f in fields)
                kind = KINDS.get(kind_raw.lower())
                if kind is None:
                    raise ConfigError(f"{where} line {line}: kind {kind_raw!r} is not 'item' or 'colour'")
                if not code:
                    raise ConfigError(f"{where} line {line}: the folder code (column 'code') is empty")
                if (kind, code) in rows:
                    raise ConfigError(f"{where} line {line}: {kind} {code!r} is listed twice "
                                      f"(first on line {first_line[kind, code]})")
                if kind == "item":
                    target = traede or code
                    if target in traede_items:
                        other, other_line = traede_items[target]
                        raise ConfigError(f"{where} line {line}: TRAEDE item {target!r} is already the code of "
                                          f"item {other!r} (line {other_line}); one TRAEDE product is one folder, "
                                          "two would each replace the other's images")
                    traede_items[target] = (code, line)
                rows[kind, code] = (wallie or code, traede or code)
                first_line[kind, code] = line
        except csv.Error as exc:
            raise ConfigError(f"{where} line {reader.line_num}: not valid CSV ({exc})") from exc
        return cls(name, rows)

    def ids(self, partner: Partner, item: str, color: str | None) -> tuple[str | None, str | None]:
        """``(item code, colour code)`` at one partner; None where the file has no row for a code it should
        list."""
        column = _COLUMN[partner]
        item_code: str | None = nfc(item)
        if self.items:
            pair = self.items.get(nfc(item))
            item_code = pair[column] if pair else None
        color_code = None if color is None else nfc(color)
        if color is not None and self.colours:
            pair = self.colours.get(nfc(color))
            color_code = pair[column] if pair else None
        return item_code, color_code


def load(container: ContainerClient, name: str, cached: PartnerCodes | None = None) -> PartnerCodes:
    """Read and parse the mapping file from the images container; any problem is a ConfigError.

    ``cached``: the file as last read; while the blob's ETag is the same it is used again (one small
    request per run instead of the whole file).
    """
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    try:
        blob = container.get_blob_client(name)
        props = blob.get_blob_properties()
        if cached is not None and cached.etag == props.etag:
            return cached
        if props.size > MAX_FILE_BYTES:
            raise ConfigError(f"{SETTING}={name!r} is {props.size:,} bytes: a mapping file of at most "
                              f"{MAX_FILE_BYTES:,} bytes is read (is it the right blob?)")
        data = blob.download_blob(max_concurrency=1, etag=props.etag,
                                  match_condition=_if_match()).readall()
    except ResourceNotFoundError as exc:
        raise ConfigError(f"{SETTING}={name!r}: no such blob in container {container.container_name!r}; upload "
                          f"the CSV there or clear the setting") from exc
    except AzureError as exc:
        raise ConfigError(f"{SETTING}={name!r} could not be read ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]})") from exc
    codes = PartnerCodes.parse(name, data)
    codes.etag = props.etag
    return codes


def _if_match() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


_COLUMN = {Partner.WALLIE: 0, Partner.TRAEDE: 1}  # each partner's code in a (wallie, traede) row of the file
_META = {Partner.WALLIE: ("wallie_item_id", "wallie_color_id"), Partner.TRAEDE: (None, "traede_color")}


def partner_ids(record: ImageRecord, codes: PartnerCodes | None, partner: Partner) -> PartnerIds:
    """An image's codes at one partner, in NFC: metadata first, then the mapping file, then the folder's;
    ``problem`` says why there are none."""
    item_key, color_key = _META[partner]
    meta = record.codes or {}
    item, color = (codes.ids(partner, record.item_id, record.color_id) if codes is not None
                   else (nfc(record.item_id), None if record.color_id is None else nfc(record.color_id)))
    item = nfc(meta[item_key]) if item_key and meta.get(item_key) else item
    color = nfc(meta[color_key]) if meta.get(color_key) else color
    if codes is None:
        return PartnerIds(item or nfc(record.item_id), color)
    missing = [] if item is not None else [f"item {record.item_id!r}"]
    if record.color_id is not None and color is None:
        missing.append(f"colour {record.color_id!r}")
    problem = None
    if missing:
        keys = [k for k, gone in ((item_key, item is None), (color_key, color is None)) if gone and k]
        problem = (f"{' and '.join(missing)} not in the file"
                   + (f" (or set the blob's metadata {' and '.join(keys)})" if keys else ""))
    return PartnerIds(item or nfc(record.item_id), color, problem)
