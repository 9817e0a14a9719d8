"""What a kept blob may be when it is read back: anything (a damaged or foreign blob) is named, never a
traceback, and nothing larger than this app writes is read.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..errors import ImageSyncError
from ..redact import redact_tree
from .parts import MAX_PARTS

# What a reader reads at most: a blob larger than this is not one this app wrote (or is damaged), and is named
# instead of read. A kept report is trimmed to fit (see ``save``); a part holds ~2,000 entries (1-4 MB).
MAX_REPORT_BYTES = 32 * 1024 * 1024


MAX_PART_BYTES = 64 * 1024 * 1024


MAX_ENTRY_BYTES = 4 * 1024 * 1024    # one line of a part: one product's set, a few KB


KEPT_PER_LIST = 10_000               # a report above MAX_REPORT_BYTES keeps this many of each list


class DamagedHistory(ImageSyncError):
    """A kept report is not one this app wrote: not JSON, wrong types, too large. The message names the blob
    and what is wrong, in one line; the rest of the history stays readable."""


_REPORT_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **{key: ("a list of objects", lambda v: isinstance(v, list) and all(isinstance(e, dict) for e in v))
       for key in ("skipped", "ignored", "rejected", "failed", "deferred")},
    **{key: ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(e, str) for e in v))
       for key in ("notes", "queued", "resubmits")},
    **{key: ("a string", lambda v: isinstance(v, str))
       for key in ("run", "kind", "mode", "started_at", "ended_at", "container", "layout", "interrupted", "storage",
                   "via")},
    **{key: ("a whole number >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)
       for key in ("images", "products", "requests", "retries", "layout_misses")},
    "parts": (f"a whole number from 1 to {MAX_PARTS}",
              lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_PARTS),
    "seconds": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    **{key: ("true or false", lambda v: isinstance(v, bool)) for key in ("ok", "dry_run")},
    "delivered": ("an object of counts", lambda v: isinstance(v, dict) and all(
        isinstance(c, int) and not isinstance(c, bool) for c in v.values())),
    **{key: ("an object", lambda v: isinstance(v, dict)) for key in ("partners", "stopped_partners", "accounting",
                                                                     "truncated", "shard")},
}

def _kind_of(value: Any) -> str:
    """What a JSON value is, for a message: 'a string', 'a list', 'null'..."""
    if value is None:
        return "null"
    names = {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _parse(data: bytes) -> tuple[Any, str | None]:
    """JSON from bytes, or why not (one phrase)."""
    try:
        return json.loads(data.decode("utf-8")), None
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start})"
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as exc:  # JSONDecodeError, and numbers of more than 4,300 digits
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        return None, f"not JSON ({getattr(exc, 'msg', str(exc))}{where})"


def check_report(name: str, data: bytes, run_id: str) -> dict[str, Any]:
    """A kept report read back, with every field a reader uses of the type it expects; ``DamagedHistory``
    names the blob and the first thing that is wrong."""
    head, problem = _parse(data)
    if problem is None and not isinstance(head, dict):
        problem = f"{_kind_of(head)}, not a JSON object"
    if problem is not None:
        raise DamagedHistory(f"run history: {name} is not a run report: {problem}")
    for key, (expected, fits) in _REPORT_TYPES.items():
        value = head.get(key)
        if value is not None and not fits(value):
            raise DamagedHistory(f"run history: {name} is not a run report this app wrote: {key!r} is "
                                 f"{_kind_of(value)}, expected {expected}")
    if head.get("run") not in (None, run_id):
        raise DamagedHistory(f"run history: {name} names another run, {str(head['run'])[:80]!r}")
    checked: dict[str, Any] = head
    return checked


def parse_entry(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """One line of a part as an entry, or why it is not one."""
    if len(raw) > MAX_ENTRY_BYTES:
        return None, f"{len(raw):,} bytes, more than the {MAX_ENTRY_BYTES:,} an entry may have"
    entry, problem = _parse(raw)
    if problem is not None:
        return None, problem
    if not isinstance(entry, dict):
        return None, f"{_kind_of(entry)}, not a JSON object"
    for key in ("partner", "item", "outcome"):
        if not isinstance(entry.get(key), str):
            return None, f"{key!r} is {_kind_of(entry.get(key))}, expected a string"
    for key in ("reason", "blob", "item_number"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            return None, f"{key!r} is {_kind_of(entry[key])}, expected a string"
    images = entry.get("images")
    if images is not None and not (isinstance(images, list) and all(isinstance(i, dict) for i in images)):
        return None, f"'images' is {_kind_of(images)}, expected a list of objects"
    return entry, ""


def listed(head: dict[str, Any], key: str) -> int:
    """How many entries a report's list had (a report kept trimmed says how many there were)."""
    truncated = head.get("truncated") or {}
    count = truncated.get(key)
    return count if isinstance(count, int) else len(head.get(key) or [])


def report_body(head: dict[str, Any]) -> bytes:
    """The kept report as JSON, at most MAX_REPORT_BYTES: a run with hundreds of thousands of skipped blobs
    keeps the first KEPT_PER_LIST of each list (and how many there were); ``--report`` names every one."""
    body = json.dumps(redact_tree(head), indent=2, ensure_ascii=False).encode("utf-8")
    if len(body) <= MAX_REPORT_BYTES:
        return body
    trimmed, cut = dict(head), {}
    for key in ("skipped", "ignored", "rejected", "failed", "deferred"):
        if len(trimmed.get(key) or []) > KEPT_PER_LIST:
            cut[key] = len(trimmed[key])
            trimmed[key] = trimmed[key][:KEPT_PER_LIST]
    trimmed["truncated"] = cut
    trimmed["notes"] = [*(head.get("notes") or []),
                        f"this kept report names the first {KEPT_PER_LIST:,} of each list "
                        f"({', '.join(f'{k} {n:,}' for k, n in cut.items())}); the sync's --report file names "
                        "every one"]
    body = json.dumps(redact_tree(trimmed), indent=2, ensure_ascii=False).encode("utf-8")
    if len(body) > MAX_REPORT_BYTES:  # a few enormous reasons: keep the counts only
        for key in cut or ("skipped", "ignored", "rejected", "failed", "deferred"):
            cut.setdefault(key, len(head.get(key) or []))
            trimmed[key] = []
        body = json.dumps(redact_tree(trimmed), indent=2, ensure_ascii=False).encode("utf-8")
    return body

