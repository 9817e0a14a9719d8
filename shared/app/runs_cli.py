"""``image-sync runs``: the kept runs, one run, a product's history, contact sheets, and resubmitting what a
run left undone (``resubmit``, the one subcommand that sends: see ``resubmit``).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from .. import redact
from ..config.settings import Settings
from ..coordination.product_queue import DEFAULT_WAIT_SECONDS
from ..errors import ConfigError, ImageSyncError
from ..runs.history import RunHistory, why
from ..runs.ledger import write_report_to
from ..runs.links import Links
from ..runs.names import RUN_KINDS, UnknownRun
from ..runs.report import SyncReport
from ..runs.validation import DamagedHistory, listed
from .output import EXIT_BUSY, EXIT_CONFIG, EXIT_OK, EXIT_PROBLEMS, path_problem, printable

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

log = logging.getLogger(__name__)


RUNS_EPILOG = """\
Every run (the nightly sync, each shard, each trigger invocation, this CLI; not a dry run) keeps its
report in RUN_HISTORY_CONTAINER for RUN_HISTORY_DAYS days. Examples:
  image-sync runs                               recent runs, newest first: time, kind, counts, ok/FAILED
  image-sync runs --kind nightly --limit 5      only the last five nightly runs
  image-sync runs --failed --since 24h          runs of the last 24 hours that failed or were stopped
  image-sync runs show RUN_ID                   one run: counts and every problem (RUN_ID or latest)
  image-sync runs show RUN_ID --json            the whole report, with what each partner got
  image-sync runs --item 100001                 which runs touched product 100001, what each partner got
  image-sync runs sheet RUN_ID -o sheet.html    a contact sheet (HTML, thumbnails) of a run
  image-sync runs sheet --item 100001 -o p.html a contact sheet of one product over its runs
  image-sync runs resubmit RUN_ID               send again what that run left undone, as it is now
  image-sync runs resubmit --failed-since 24h   the same for every run of the last 24 hours that failed

exit codes: 0 done; 1 storage could not be reached, no kept run touched the product of a sheet, or a
  kept blob is damaged or not one this app wrote (one line names it; the rest is still shown);
  2 configuration error or an unknown run id (the line says which).
  resubmit exits as sync does: 0 everything delivered (or nothing left to send), 1 a record was rejected
  or failed, 2 configuration error, 75 a product's lock or a full sync's fence held on longer than --wait,
  130/143 stopped by Ctrl-C/SIGTERM
"""

RESUBMIT_DESCRIPTION = """\
Send again exactly what a kept run left undone: the products TRAEDE rejected, failed, deferred or was not
sent (a stopped run names what it did not reach), and the Wallie images rejected or failed. Each is listed
now: a product goes with its current complete set (never the old payload), under its lock and never while a
full sync runs (it waits, like sync --item); a product whose folder has no image any more goes as the empty
set, which deletes its images at TRAEDE (said per product), unless the run itself found it without any
image (a typo'd --item: not sent). A blob gone since is reported, not sent. The resubmit is kept as a run
of kind resubmit that names the runs it resubmits; runs show of either names the other. A run already
resubmitted is not sent again (the line names its resubmit) unless --again.
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
    runs.add_argument("--failed", action="store_true", help="only runs with a record rejected or failed, or that "
                                                           "were stopped")
    runs.add_argument("--since", metavar="DURATION", help="only runs started in the last DURATION: 30m, 24h, 7d")
    actions = runs.add_subparsers(dest="runs_command", metavar="{show,sheet,resubmit}")
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
    resubmit = actions.add_parser("resubmit", help="send again what a run (or every failed run of a window) "
                                                   "left undone, as the container holds it now",
                                  description=RESUBMIT_DESCRIPTION,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    resubmit.add_argument("run_id", metavar="RUN_ID", nargs="?", help="a run id from 'image-sync runs', or latest")
    resubmit.add_argument("--failed-since", metavar="DURATION", help="instead of a run: every kept run of the last "
                                                                     "DURATION (30m, 24h, 7d) that failed or was "
                                                                     "stopped, each product once")
    resubmit.add_argument("--dry-run", action="store_true", help="print what would be sent, as it is now; send "
                                                                 "nothing, keep nothing")
    resubmit.add_argument("--again", action="store_true", help="also a run that was resubmitted before")
    resubmit.add_argument("--wait", metavar="SECONDS", type=float, default=DEFAULT_WAIT_SECONDS,
                          help="wait at most this long for a product's sender or a full sync "
                               f"(default {DEFAULT_WAIT_SECONDS:g}); then exit 75")


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
    if args.runs_command == "resubmit":
        return _resubmit(args, settings, stdout, stderr)
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
            since = datetime.now(UTC) - window(args.since) if args.since else None
            code = _list_runs(history, args.limit or 20, args, since, stdout, stderr)
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
    listing = (args.item is not None or args.kind or args.limit is not None or args.failed or args.since)
    if args.runs_command is not None and listing:
        where = {"sheet": "runs sheet --item ID", "resubmit": "runs resubmit --failed-since DURATION"}.get(
            args.runs_command, "runs show RUN_ID")
        return (f"--item, --kind, --limit, --failed and --since go before '{args.runs_command}' only when listing; "
                f"use '{where}'")
    if args.item is not None and not args.item.strip():
        return "--item: expected a product id"
    if args.kind is not None and args.kind not in RUN_KINDS:
        return f"--kind {args.kind!r}: expected one of {', '.join(RUN_KINDS)}"
    if args.item is not None and (args.kind or args.failed or args.since):
        return "--item lists a product's runs: --kind, --failed and --since list runs, not with --item"
    for option, value in (("--since", args.since), ("--failed-since", getattr(args, "failed_since", None))):
        if value is not None and window_problem(value):
            return f"{option} {value}: {window_problem(value)}"
    if args.runs_command == "sheet":
        if (args.run_id is None) == (args.sheet_item is None):
            return "runs sheet: give a RUN_ID (or latest) or --item ID, one of them"
        return path_problem("-o", args.output, "sheet.html")
    if args.runs_command == "resubmit":
        if (args.run_id is None) == (args.failed_since is None):
            return "runs resubmit: give a RUN_ID (or latest) or --failed-since DURATION, one of them"
        if not args.wait >= 0:
            return f"--wait {args.wait:g}: expected a number of seconds >= 0"
    return None


_WINDOW = re.compile(r"(\d{1,6})([mhd])")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


MAX_WINDOW = timedelta(days=3650)


def window_problem(text: str) -> str | None:
    m = _WINDOW.fullmatch(text.strip())
    if not m:
        return "expected a duration: a whole number and m, h or d (30m, 24h, 7d)"
    if int(m.group(1)) == 0:
        return "expected a duration longer than 0"
    if int(m.group(1)) * _UNITS[m.group(2)] > MAX_WINDOW:
        return f"expected at most {MAX_WINDOW.days}d (runs are kept for RUN_HISTORY_DAYS days)"
    return None


def window(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d`` as a timedelta (``window_problem`` says what is wrong with a bad one)."""
    m = _WINDOW.fullmatch(text.strip())
    problem = window_problem(text)
    if not m or problem:
        raise ConfigError(f"{text!r}: {problem}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _list_runs(history: RunHistory, limit: int, args: argparse.Namespace, since: datetime | None, stdout: TextIO,
               stderr: TextIO) -> int:
    runs = history.recent(limit, kind=args.kind, since=since, failed=args.failed)
    links = Links(history)
    for run in runs:
        line = run.line()
        if args.failed:  # which of them were resubmitted already (one small read each)
            claim = links.get(run.run_id)
            line += f"  {claim.describe()}" if claim is not None else "  not resubmitted"
        print(printable(redact.redact(line)), file=stdout)  # (metadata is anyone's to write)
    what = " ".join(filter(None, ("failed or stopped" if args.failed else "", args.kind, "runs")))
    when = f"since {since:%Y-%m-%d %H:%M}Z" if since else f"in the last {history.days} days"
    if not runs:
        print(f"no {what} kept in RUN_HISTORY_CONTAINER {history.container!r} {when}", file=stderr)
    else:
        print(f"{len(runs)} {what}, newest first (at most {limit}: --limit; kept {history.days} days in "
              f"{history.container!r}); one run: image-sync runs show RUN_ID", file=stderr)
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
    web = head.get("web") or {}
    if web:  # the web stage (docs/images.md, "Web-ready images")
        lines.append("  images    " + " ".join(f"{what}={count}" for what, count in web.items()))
    # the lines the run printed, one per cause with the first few names (--json names every one)
    lines += [f"  {line}" for line in SyncReport.from_dict(head).grouped_lines(deferred=True)]
    lines += [f"  note: {note}" for note in head.get("notes") or []]
    lines += _link_lines(history, run_id, head)
    for line in lines:
        print(printable(redact.redact(line)), file=stdout)
    print(f"what each partner got: image-sync runs show {run_id} --json; the pictures: "
          f"image-sync runs sheet {run_id} -o sheet.html", file=stderr)
    return EXIT_OK


def _link_lines(history: RunHistory, run_id: str, head: dict[str, Any]) -> list[str]:
    """Which runs this one resubmits, and which run resubmitted it."""
    lines = []
    resubmits = head.get("resubmits") or []
    if resubmits:
        shown = ", ".join(resubmits[:5]) + (f" and {len(resubmits) - 5} more" if len(resubmits) > 5 else "")
        lines.append(f"  resubmit  of {shown} (via {head.get('via') or '?'})")
    claim = Links(history).get(run_id)
    if claim is not None:
        lines.append(f"  resubmit  this run was {claim.describe()}: image-sync runs show {claim.latest}")
    return lines


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


def _web_note(image: dict[str, Any]) -> str:
    """``, TIFF 640x480 RGB: its web rendition`` (empty when the image's verdict was not kept)."""
    verdict = image.get("image")
    if not isinstance(verdict, dict) or not verdict.get("format"):
        return ""
    what = " ".join(str(verdict[k]) for k in ("format", "pixels", "mode") if verdict.get(k))
    return f", {what}: its web rendition" if verdict.get("sent") == "rendition" else f", {what}"


def _entry_line(entry: dict[str, Any]) -> str:
    """One kept entry of a product, as a line: what the partner was sent, and what became of it."""
    partner, outcome = entry.get("partner"), entry.get("outcome")
    reason = f": {entry['reason']}" if entry.get("reason") else ""
    reason += f": {entry['detail']}" if entry.get("reason") and entry.get("detail") else ""
    if isinstance(entry.get("images"), list):
        images = entry["images"]
        listed = " ".join(f"{i.get('sort')}. {i.get('filename')} (type {i.get('type')}, colour "
                          f"{i.get('colour') or '-'}, key {i.get('existance_key')}{_web_note(i)})" for i in images)
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



def _resubmit(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    """``runs resubmit``: what kept runs left undone, sent again as the container holds it now (``resubmit``)."""
    from azure.core.exceptions import AzureError

    from ..coordination.product_queue import FullSyncBusy
    from ..engine.stopping import Stopper
    from ..storage.clients import StorageUnreachable, check_container
    from . import resubmit as rs
    from .factory import Components

    def say(line: str) -> None:
        print(printable(redact.redact(line, settings.secrets())), file=stderr, flush=True)

    try:
        check_container(settings.storage)
    except ConfigError as exc:
        say(f"configuration error: {exc}")
        return EXIT_CONFIG
    except StorageUnreachable as exc:
        say(f"resubmit not started: {exc}")
        return EXIT_PROBLEMS
    stopper = Stopper()
    stopper.install()
    try:
        with Components(settings, stop=stopper.stop) as parts:
            stopper.on_abort(parts.abort)
            if args.failed_since:
                since = datetime.now(UTC) - window(args.failed_since)
                assert parts.history is not None  # (run() refused an empty RUN_HISTORY_CONTAINER)
                run_ids = [r.run_id for r in reversed(parts.history.recent(None, failed=True, since=since))]
                if not run_ids:
                    say(f"no kept run failed or was stopped since {since:%Y-%m-%d %H:%M}Z: nothing to resubmit")
                    return EXIT_OK
            else:
                run_ids = [args.run_id]
            done = rs.resubmit(parts, run_ids, via="cli", again=args.again, dry_run=args.dry_run,
                               wait_seconds=args.wait, on_wait=say,
                               on_start=lambda plan, run_id: say(f"resubmitting {plan.describe()} as run {run_id}"))
            if args.dry_run and done.plan is not None:
                for line in rs.dry_run_lines(parts, done.plan):
                    print(printable(redact.redact(line)), file=stdout)
    except UnknownRun as exc:
        say(str(exc))
        return EXIT_CONFIG
    except DamagedHistory as exc:
        say(str(exc))
        return EXIT_PROBLEMS
    except ConfigError as exc:
        say(f"configuration error: {exc}")
        return EXIT_CONFIG
    except FullSyncBusy as exc:
        say(f"resubmit not done: {exc}; the run may be resubmitted again")
        return EXIT_BUSY
    except AzureError as exc:
        say(f"resubmit failed: storage did not answer as expected ({why(exc)}); what was sent is in the kept run "
            "(image-sync runs --kind resubmit), and the run may be resubmitted again")
        return EXIT_PROBLEMS
    except ImageSyncError as exc:
        say(f"resubmit failed: {exc}")
        return EXIT_PROBLEMS
    finally:
        stopper.uninstall()
    return _resubmit_told(done, args, say, stopper.exit_code)


def _resubmit_told(done: Any, args: argparse.Namespace, say: Any, stopped_code: int) -> int:
    """What ``runs resubmit`` did, on stderr, and its exit code (as ``sync``'s)."""
    for run_id in done.nothing:
        say(f"run {run_id} left nothing undone: nothing to resubmit")
    for claim in done.already:
        say(f"run {claim.run_id} was already {claim.describe()}: nothing sent for it (image-sync runs show "
            f"{claim.latest}; --again resubmits it again)")
    for line in done.damage:
        say(line)
    code = EXIT_PROBLEMS if done.damage else EXIT_OK
    if args.dry_run:
        if done.plan is not None:
            for note in done.plan.notes:
                say(f"note: {note}")
            say(f"dry run: would resubmit {done.plan.describe()}; nothing sent, nothing kept")
        return code
    report = done.report
    if report is None:
        return code
    for line in report.grouped_lines(deferred=True):
        say(line)
    for note in report.notes:
        say(f"note: {note}")
    say(report.summary())
    say(f"resubmit kept as run {done.run_id}: image-sync runs show {done.run_id}")
    if report.interrupted:
        return stopped_code
    return code if report.ok else EXIT_PROBLEMS
