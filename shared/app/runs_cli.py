"""``image-sync runs``: the kept runs, one run, a product's history, contact sheets (read only).
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any, TextIO

from .. import redact
from ..config.settings import Settings
from ..errors import ConfigError, ImageSyncError
from ..runs.history import RunHistory
from ..runs.ledger import write_report_to
from ..runs.names import RUN_KINDS, UnknownRun
from ..runs.report import SyncReport
from ..runs.validation import DamagedHistory, listed
from .output import EXIT_CONFIG, EXIT_OK, EXIT_PROBLEMS, path_problem, printable

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

log = logging.getLogger(__name__)


RUNS_EPILOG = """\
Every run (the nightly sync, each shard, each trigger invocation, this CLI; not a dry run) keeps its
report in RUN_HISTORY_CONTAINER for RUN_HISTORY_DAYS days. Examples:
  image-sync runs                               recent runs, newest first: time, kind, counts, ok/FAILED
  image-sync runs --kind nightly --limit 5      only the last five nightly runs
  image-sync runs show RUN_ID                   one run: counts and every problem (RUN_ID or latest)
  image-sync runs show RUN_ID --json            the whole report, with what each partner got
  image-sync runs --item 100001                 which runs touched product 100001, what each partner got
  image-sync runs sheet RUN_ID -o sheet.html    a contact sheet (HTML, thumbnails) of a run
  image-sync runs sheet --item 100001 -o p.html a contact sheet of one product over its runs

exit codes: 0 done; 1 storage could not be reached, no kept run touched the product of a sheet, or a
  kept blob is damaged or not one this app wrote (one line names it; the rest is still shown);
  2 configuration error or an unknown run id (the line says which)
"""


def add_runs_parser(sub: Any) -> None:
    runs = sub.add_parser("runs", help="the run history: recent runs, one run, a product's history, contact sheets",
                          description="List the kept runs (newest first), or a product's history with --item.",
                          epilog=RUNS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    runs.add_argument("--item", metavar="ID", help="the history of one product: which runs touched it, what each "
                                                   "partner was sent for it, and the outcomes")
    runs.add_argument("--limit", metavar="N", type=int, default=None,
                      help="at most N runs (default 20; 10 with --item)")
    runs.add_argument("--kind", help=f"only runs of this kind: {', '.join(RUN_KINDS)}")
    actions = runs.add_subparsers(dest="runs_command", metavar="{show,sheet}")
    show = actions.add_parser("show", help="one run: when, what, counts and every problem")
    show.add_argument("run_id", metavar="RUN_ID", help="a run id from 'image-sync runs', or latest")
    show.add_argument("--json", action="store_true", help="the whole report as JSON, with what each partner got "
                                                          "per product (the --report file's format)")
    sheet = actions.add_parser("sheet", help="write a contact sheet: a self-contained HTML page with the pictures "
                                             "each partner got, of a run or of one product")
    sheet.add_argument("run_id", metavar="RUN_ID", nargs="?", help="a run id from 'image-sync runs', or latest")
    sheet.add_argument("--item", dest="sheet_item", metavar="ID", help="instead of a run: one product over the "
                                                                       "newest runs that touched it")
    sheet.add_argument("-o", "--output", metavar="FILE", help="where to write the page (default: "
                                                              "contact-sheet-<run or product>.html here)")


def run(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    """``runs``: the kept runs, one run, a product's history, contact sheets (read only)."""
    from azure.core.exceptions import AzureError

    from ..storage.clients import QUICK, blob_service, storage_problem

    if settings.run_history_container is None:
        print("configuration error: RUN_HISTORY_CONTAINER is empty, so runs keep no report: set it to a container "
              "name (default image-sync-runs) to keep a history", file=stderr)
        return EXIT_CONFIG
    problem = _runs_option_problem(args)
    if problem:
        print(f"configuration error: {problem}", file=stderr)
        return EXIT_CONFIG
    service = blob_service(settings.storage, **QUICK)  # unreachable storage: one line in seconds, not minutes
    history = RunHistory(service, settings.run_history_container, days=settings.run_history_days)
    damage: list[str] = []  # kept blobs that were left out as damaged: one line each, then exit 1
    try:
        if args.runs_command == "show":
            code = _show_run(history, args.run_id, args.json, stdout, stderr, damage)
        elif args.runs_command == "sheet":
            code = _write_sheet(history, service, settings, args, stdout, stderr, damage)
        elif args.item is not None:
            code = _item_history(history, args.item, args.limit or 10, stdout, stderr, damage)
        else:
            code = _list_runs(history, args.limit or 20, args.kind, stdout, stderr)
    except UnknownRun as exc:
        print(printable(str(exc)), file=stderr)
        return EXIT_CONFIG
    except DamagedHistory as exc:
        print(printable(redact.redact(str(exc))), file=stderr)
        return EXIT_PROBLEMS
    except ConfigError as exc:
        print(redact.redact(f"configuration error: {exc}"), file=stderr)
        return EXIT_CONFIG
    except AzureError as exc:
        config, message = storage_problem(exc, history.client)
        print(("configuration error: " if config else "runs failed: ") + redact.redact(message), file=stderr)
        return EXIT_CONFIG if config else EXIT_PROBLEMS
    except ImageSyncError as exc:
        print(redact.redact(f"runs failed: {exc}", settings.secrets()), file=stderr)
        return EXIT_PROBLEMS
    finally:
        service.close()
    for line in damage:
        print(printable(redact.redact(line)), file=stderr)
    return EXIT_PROBLEMS if damage and code == EXIT_OK else code


def _runs_option_problem(args: argparse.Namespace) -> str | None:
    if args.limit is not None and args.limit < 1:
        return f"--limit {args.limit}: expected a whole number of runs >= 1"
    if args.runs_command is not None and (args.item is not None or args.kind or args.limit is not None):
        where = "runs sheet --item ID" if args.runs_command == "sheet" else "runs show RUN_ID"
        return f"--item, --kind and --limit go before 'show'/'sheet' only when listing; use '{where}'"
    if args.item is not None and not args.item.strip():
        return "--item: expected a product id"
    if args.kind is not None and args.kind not in RUN_KINDS:
        return f"--kind {args.kind!r}: expected one of {', '.join(RUN_KINDS)}"
    if args.runs_command == "sheet":
        if (args.run_id is None) == (args.sheet_item is None):
            return "runs sheet: give a RUN_ID (or latest) or --item ID, one of them"
        return path_problem("-o", args.output, "sheet.html")
    return None


def _list_runs(history: RunHistory, limit: int, kind: str | None, stdout: TextIO, stderr: TextIO) -> int:
    runs = history.recent(limit, kind=kind)
    for run in runs:
        print(printable(redact.redact(run.line())), file=stdout)  # (metadata is anyone's to write)
    what = f"{kind} runs" if kind else "runs"
    if not runs:
        print(f"no {what} kept in RUN_HISTORY_CONTAINER {history.container!r} in the last {history.days} days",
              file=stderr)
    else:
        print(f"{len(runs)} {what}, newest first (kept {history.days} days in {history.container!r}); one run: "
              "image-sync runs show RUN_ID", file=stderr)
    return EXIT_OK


def _show_run(history: RunHistory, run_id: str, as_json: bool, stdout: TextIO, stderr: TextIO,
              damage: list[str]) -> int:
    head = history.load(run_id)
    run_id = str(head.get("run", run_id))
    if as_json:
        ledger = history.ledger(run_id, int(head.get("parts") or 1), damage)
        try:
            write_report_to(stdout, head, ledger)
        finally:
            ledger.close()
        return EXIT_OK
    delivered = " ".join(f"{n}={c}" for n, c in (head.get("delivered") or {}).items()) or "nothing"
    lines = [
        f"run {run_id}",
        f"  started   {head.get('started_at')} ({float(head.get('seconds') or 0):.1f} s), ended {head.get('ended_at')}",
        f"  what      {head.get('kind')} ({head.get('mode')})" + (" STOPPED by " + str(head["interrupted"])
                                                                  if head.get("interrupted") else ""),
        f"  where     container {head.get('container')!r}; partners: " + (", ".join(
            f"{n} at {u}" for n, u in (head.get("partners") or {}).items()) or "none"),
        f"  outcome   {'ok' if head.get('ok') else 'FAILED'}: images={head.get('images')} "
        f"products={head.get('products')} delivered {delivered} rejected={listed(head, 'rejected')} "
        f"failed={listed(head, 'failed')} deferred={listed(head, 'deferred')} skipped={listed(head, 'skipped')}",
    ]
    # the lines the run printed, one per cause with the first few names (--json names every one)
    lines += [f"  {line}" for line in SyncReport.from_dict(head).grouped_lines(deferred=True)]
    lines += [f"  note: {note}" for note in head.get("notes") or []]
    for line in lines:
        print(printable(redact.redact(line)), file=stdout)
    print(f"what each partner got: image-sync runs show {run_id} --json; the pictures: "
          f"image-sync runs sheet {run_id} -o sheet.html", file=stderr)
    return EXIT_OK


def _item_history(history: RunHistory, item: str, limit: int, stdout: TextIO, stderr: TextIO,
                  damage: list[str]) -> int:
    runs = history.item_runs(item, limit=limit, damage=damage)
    if not runs:
        print(f"no kept run touched product {item!r} in the last {history.days} days", file=stderr)
        return EXIT_OK
    for run in runs:
        print(f"{run.started:%Y-%m-%d %H:%M:%S}Z  {run.run_id}", file=stdout)
        for entry in run.entries:
            print("  " + printable(redact.redact(_entry_line(entry))), file=stdout)
    print(f"{len(runs)} runs touched product {item!r}, newest first (at most {limit}: --limit); the pictures: "
          f"image-sync runs sheet --item {item} -o sheet.html", file=stderr)
    return EXIT_OK


def _entry_line(entry: dict[str, Any]) -> str:
    """One kept entry of a product, as a line: what the partner was sent, and what became of it."""
    partner, outcome = entry.get("partner"), entry.get("outcome")
    reason = f": {entry['reason']}" if entry.get("reason") else ""
    reason += f": {entry['detail']}" if entry.get("reason") and entry.get("detail") else ""
    if isinstance(entry.get("images"), list):
        images = entry["images"]
        listed = " ".join(f"{i.get('sort')}. {i.get('filename')} (type {i.get('type')}, colour "
                          f"{i.get('colour') or '-'}, key {i.get('existance_key')})" for i in images)
        return f"{partner}: {outcome}{reason}: a set of {len(images)} images: {listed or '(empty: deletes all)'}"
    if entry.get("imageId"):
        return (f"{partner}: {outcome}{reason}: {entry.get('blob')!r} as imageId {entry.get('imageId')} (type "
                f"{entry.get('type')}, colour {entry.get('colorId') or '-'})")
    blob = f" {entry['blob']!r}" if entry.get("blob") else ""
    return f"{partner}: {outcome}{blob}{reason}"


def _write_sheet(history: RunHistory, service: BlobServiceClient, settings: Settings, args: argparse.Namespace,
                 stdout: TextIO, stderr: TextIO, damage: list[str]) -> int:
    from datetime import timedelta

    from ..runs import contact_sheet

    sign = contact_sheet.signer(service, start_skew=timedelta(minutes=settings.sas_start_skew_minutes))
    if args.sheet_item is not None:
        page = contact_sheet.product_sheet(history, args.sheet_item, sign,
                                           default_container=settings.storage.container, damage=damage)
        if page is None:
            print(f"no kept run touched product {args.sheet_item!r} in the last {history.days} days: no sheet "
                  "written", file=stderr)
            return EXIT_PROBLEMS
        what = f"product {args.sheet_item!r}"
        name = "item-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in args.sheet_item)[:80]
    else:
        run_id = history.resolve(args.run_id)
        page = contact_sheet.run_sheet(history, run_id, sign, default_container=settings.storage.container,
                                       damage=damage)
        what, name = f"run {run_id}", run_id
    path = args.output or f"contact-sheet-{name}.html"
    with open(path, "w", encoding="utf-8") as out:
        out.write(page)
    print(os.path.abspath(path), file=stdout)
    print(f"contact sheet of {what} written; its thumbnails load for "
          f"{contact_sheet.THUMBNAIL_TTL.total_seconds() / 3600:g} hour(s)", file=stderr)
    return EXIT_OK

