"""What each partner got: every record sent, by partner and product, with its outcome.

"What did TRAEDE get for product X?" is the question an integration team gets most. The ledger answers it
in the run's report: for Wallie each image record (blob, imageId, colour, type, URL), for TRAEDE each
product set (every image's blob, existance_key, sort, type, colour, file name, alt, URL), each with what
became of it. URLs are kept without their query: the SAS signature never reaches the report.

A full sync sends hundreds of thousands of records, so entries are spooled to one temporary JSON-lines
file per partner while the run goes on, and streamed into the report file at the end: memory stays flat.
"""
from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from typing import IO, Any, Protocol

from ..catalog.records import ImageRecord
from ..catalog.web import summary
from ..domain import Outcome
from ..redact import redact


class Sent(Protocol):
    """What a ledger records of a unit a partner was sent (``engine.lanes.Unit`` is one)."""

    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def item_id(self) -> str: ...
    @property
    def blob_name(self) -> str | None: ...
    @property
    def records(self) -> tuple[ImageRecord, ...]: ...


def public_url(url: str) -> str:
    """The URL without its query string: the SAS (and its signature) stays out of every report."""
    return url.split("?", 1)[0]


def _sent_image(record: ImageRecord, sent: dict[str, Any]) -> dict[str, Any]:
    """One image of a TRAEDE set as the report keeps it; ``variant`` only where TRAEDE's colour code is not
    the folder's (``partner_codes``)."""
    image = {"blob": record.blob_name, "existance_key": sent.get("existance_key"), "sort": sent.get("sort"),
             "sort_b2c": sent.get("sort_b2c"), "type": record.type, "colour": record.color_id,
             "filename": sent.get("filename"), "alt": sent.get("alt"), "url": public_url(sent.get("url", ""))}
    variant = sent.get("attach_to_variants_matching_attribute_code")
    if variant and record.color_id not in variant.values():
        image["variant"] = variant
    if record.verdict is not None or record.delivery is not None:
        image["image"] = web_summary(record)
    return image


def web_summary(record: ImageRecord) -> dict[str, Any]:
    """The image's verdict and what was sent for it (the contact sheet shows it)."""
    out = summary(record.verdict, record.size, record.delivery)
    if record.delivery is not None and record.delivery.rendition:
        out["rendition"] = record.delivery.rendition
        if record.delivery.rendition_container:
            out["rendition_container"] = record.delivery.rendition_container
    return out


class Ledger:
    def __init__(self) -> None:
        self._files: dict[str, IO[str]] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, partner: str, unit: Sent, outcome: Outcome, reason: str | None = None,
               detail: str | None = None) -> None:
        """One unit (a Wallie record or a TRAEDE product) and what became of it: the cause (``reason``) and
        what is particular to this unit (``detail``, e.g. the partner's answer)."""
        entry: dict[str, Any] = {"item": unit.item_id, "outcome": outcome}
        if reason:
            entry["reason"] = redact(reason)
        if detail:
            entry["detail"] = redact(detail)
        payload = unit.payload
        if unit.records and "images" in payload:  # a product set: its images in the order TRAEDE got them
            if payload.get("item_number", unit.item_id) != unit.item_id:  # TRAEDE's own code (partner_codes)
                entry["item_number"] = payload["item_number"]
            entry["images"] = [_sent_image(record, sent)
                               for record, sent in zip(unit.records, payload.get("images", []), strict=True)]
        else:
            entry.update({"blob": unit.blob_name, **{k: v for k, v in payload.items() if k != "url"},
                          "url": public_url(payload.get("url", ""))})
            record = unit.records[0] if unit.records else None
            if record is not None and (record.verdict is not None or record.delivery is not None):
                entry["image"] = web_summary(record)
        self.add_entry(partner, json.dumps(entry, ensure_ascii=False))

    def add_entry(self, partner: str, text: str) -> None:
        """An entry as recorded before (one JSON object, e.g. read back from the run history)."""
        with self._lock:
            spool = self._files.get(partner)
            if spool is None:
                spool = self._files[partner] = tempfile.TemporaryFile("w+", encoding="utf-8", prefix="image-sync-sent-")
            spool.write(text.rstrip("\n") + "\n")
            self._counts[partner] = self._counts.get(partner, 0) + 1

    def partners(self) -> list[str]:
        return list(self._files)

    def count(self) -> int:
        """How many entries were recorded, over every partner."""
        with self._lock:
            return sum(self._counts.values())

    def entries(self, partner: str) -> Iterator[str]:
        """The partner's entries as JSON texts, in the order they were recorded."""
        spool = self._files.get(partner)
        if spool is None:
            return
        spool.flush()
        spool.seek(0)
        for line in spool:
            yield line.rstrip("\n")

    def close(self) -> None:
        for spool in self._files.values():
            spool.close()
        self._files.clear()


def write_report(path: str, report_dict: dict[str, Any], ledger: Ledger | None) -> None:
    """The report as JSON, with ``"sent": {partner: [entries...]}`` streamed from the ledger's spools."""
    with open(path, "w", encoding="utf-8") as out:
        write_report_to(out, report_dict, ledger)


def write_report_to(out: IO[str], report_dict: dict[str, Any], ledger: Ledger | None) -> None:
    """``write_report`` into an open text stream (a file, stdout)."""
    from ..redact import redact_tree

    head = json.dumps(redact_tree(report_dict), indent=2, ensure_ascii=False)
    if ledger is None or not ledger.partners():
        out.write(head + "\n")
        return
    out.write(head[:head.rstrip().rfind("}")].rstrip() + ',\n  "sent": {')
    for n, partner in enumerate(ledger.partners()):
        out.write(("," if n else "") + f"\n    {json.dumps(partner)}: [")
        for m, entry in enumerate(ledger.entries(partner)):
            out.write(("," if m else "") + "\n      " + entry)
        out.write("\n    ]")
    out.write("\n  }\n}\n")
