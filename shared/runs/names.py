"""Run ids, and the names of what a run keeps: they sort by time and say what ran.

A run's report is ``runs/YYYY/MM/DD/HH/<run-id>.json`` (``report_name``): the hour in the name lets ``runs``
list the newest hour only, never a whole day of thousands of runs. Runs kept before the hour was in the name
are ``runs/YYYY/MM/DD/<run-id>.json`` (``day_report_name``) and are still read until they expire.
"""
from __future__ import annotations

import re
import secrets
import zlib
from datetime import UTC, date, datetime
from urllib.parse import quote

from ..errors import ImageSyncError

RUNS, SENT, ITEMS, WIDE = "runs/", "sent/", "items/", "wide/"
FAILED = "failed/"        # failed/YYYY/MM/DD/<run-id>: a marker per run that failed or was stopped (runs --failed)
RESUBMITS = "resubmits/"  # resubmits/YYYY/MM/DD/<run-id>: the claim a resubmit of that run holds (``links``)
LATEST = "index/latest"   # the newest run's id, in metadata (``pointer``)


_RUN_ID = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})\.(\d{3})Z-([a-z0-9-]{1,24})-([0-9a-f]{6})")


class UnknownRun(ImageSyncError):
    """No run with this id is kept (a typo, or older than RUN_HISTORY_DAYS)."""


# What kept runs are, by what started them (the triggers in ``jobs``, the CLI): ``runs --kind``.
RUN_KINDS = ("nightly", "shard", "full", "upload", "delete", "product", "cli-sync", "cli-flush", "resubmit")


def new_run_id(kind: str, started: datetime) -> str:
    """``<UTC start, ms>Z-<kind>-<6 hex>``: sorts by start time, names what ran, never collides."""
    started = started.astimezone(UTC)
    slug = re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")[:24].strip("-") or "run"
    return f"{started:%Y%m%dT%H%M%S}.{started.microsecond // 1000:03d}Z-{slug}-{secrets.token_hex(3)}"


def check_run_id(text: str) -> str:
    if not _RUN_ID.fullmatch(text):
        raise UnknownRun(f"{text!r} is not a run id: expected one like 20261123T020000.123Z-nightly-1a2b3c "
                         "(image-sync runs lists them), or 'latest'")
    run_time(text)  # a real time, too
    return text


def is_run_id(text: str) -> bool:
    """A run id this app could have made: its shape, and a real time."""
    try:
        run_time(text)
    except UnknownRun:
        return False
    return True


def run_time(run_id: str) -> datetime:
    m = _RUN_ID.fullmatch(run_id)
    if not m:
        raise UnknownRun(f"{run_id!r} is not a run id")
    y, mo, d, h, mi, s, ms = (int(g) for g in m.groups()[:7])
    try:
        return datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=UTC)
    except ValueError as exc:  # the shape of a run id, but no such time (month 13, 30 February)
        raise UnknownRun(f"{run_id!r} is not a run id: {exc}") from exc


def run_kind(run_id: str) -> str:
    m = _RUN_ID.fullmatch(run_id)
    return m.group(8) if m else "?"


def day_of(when: date | datetime) -> str:
    return f"{when:%Y/%m/%d}"


def hour_of(when: datetime) -> str:
    return f"{when:%Y/%m/%d/%H}"


def report_name(run_id: str) -> str:
    """Where a run's report is kept: under its UTC start hour."""
    return f"{RUNS}{hour_of(run_time(run_id))}/{run_id}.json"


def day_report_name(run_id: str) -> str:
    """Where a version before the hourly layout kept a run's report: under its UTC start day."""
    return f"{RUNS}{day_of(run_time(run_id))}/{run_id}.json"


def run_of(name: str) -> str | None:
    """The run id a blob of the history is named after (its last segment, without ``.json``), if any."""
    last = name.rstrip("/").rsplit("/", 1)[-1]
    last = last[:-len(".json")] if last.endswith(".json") else last
    return last if is_run_id(last) else None


def part_of(item: str, parts: int) -> int:
    """The part holding a product's entries: stable across processes and Python versions (not hash())."""
    return zlib.crc32(item.encode("utf-8")) % parts if parts > 1 else 0


def part_name(run_id: str, part: int) -> str:
    return f"{SENT}{day_of(run_time(run_id))}/{run_id}/{part:03d}.jsonl"


def item_segment(item: str) -> str:
    """A product id as one path segment of a blob name: quoted, dots too ('.' and '..' would be dropped by
    web clients before the request is signed)."""
    return quote(item, safe="").replace(".", "%2E")

