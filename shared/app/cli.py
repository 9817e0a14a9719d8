"""The operator CLI, ``image-sync`` (also ``python -m shared``): sync, flush, doctor and runs.

Every mistake gets one line that names the setting or option and what is expected; configuration errors
are found before any work starts.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from .. import redact
from ..config.settings import Settings
from ..coordination.product_queue import DEFAULT_WAIT_SECONDS, FullSyncBusy
from ..domain import Partner
from ..engine.progress import Progress, progress_line
from ..engine.stopping import Stopper
from ..engine.target import Guard
from ..errors import ConfigError, ImageSyncError
from ..partners.traede import TraedeClient
from ..runs.history import RunHistory
from ..runs.ledger import write_report, write_report_to
from ..runs.names import RUN_KINDS, UnknownRun
from ..runs.recording import Recording
from ..runs.report import SyncReport
from ..runs.validation import DamagedHistory, listed
from ..storage.clients import StorageUnreachable, check_container
from .factory import Components

EXIT_OK, EXIT_PROBLEMS, EXIT_CONFIG = 0, 1, 2
EXIT_BUSY = 75  # sysexits' EX_TEMPFAIL: another full sync held on for longer than --wait; try again later
log = logging.getLogger(__name__)

EPILOG = """\
exit codes:
  0    everything delivered
  1    a record was rejected or failed after retries, a product asked for by --item has no image,
       or storage could not be reached (each is named on stderr, one line per cause)
  2    configuration error: a setting or option is missing or wrong (the line names it), including a
       layout (IMAGE_PATH_PATTERN) that no image file fits
  75   another full sync (or a product's sender) still held on after --wait seconds: the line names it
       (run id, host, when it started and was last renewed); nothing more was sent, run it again later
  130  stopped by Ctrl-C (SIGINT); 143 stopped by SIGTERM: the summary and --report name what was not sent

Settings come from the environment (see README, "Settings"). Examples:
  image-sync sync                      full sync to every configured partner
  image-sync sync --item 100001        one product (repeatable); its full set goes to TRAEDE
  image-sync sync --dry-run            print what would be sent (JSON lines on stdout); call no partner
  image-sync sync --report run.json    also write the run report (what each partner got) as JSON
  image-sync flush                     send every pending product (queued by uploads/deletes) now
  image-sync doctor                    check settings, storage, a SAS download and both partners
  image-sync runs                      the run history: recent runs (see image-sync runs --help)
"""

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


class DryRunOutput:
    """Stands in for a partner (a ``Target`` with its name and batch size) and prints what would be sent, one
    JSON object per line: ``{"partner": ..., "record": ...}`` or ``{"partner": ..., "product": ...}``."""

    def __init__(self, partner: Partner, batch_size: int, out: TextIO):
        self.name = partner
        self.batch_size = batch_size
        self.out = out
        self._key = "product" if partner is Partner.TRAEDE else "record"
        self._lock = threading.Lock()

    def send(self, payloads: list[dict[str, Any]], guard: Guard | None = None) -> None:
        text = "".join(json.dumps({"partner": self.name, self._key: p}, ensure_ascii=False) + "\n"
                       for p in payloads)
        with self._lock:
            self.out.write(text)

    def stats(self) -> dict[str, int]:
        return {"requests": 0, "retries": 0}

    def abort(self) -> None:
        """Nothing is in flight: the dry run only prints."""

    def close(self) -> None:
        """Nothing to release."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image-sync", description="Sync product images from Azure Blob Storage to Wallie and TRAEDE.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sync,flush,doctor,runs}")
    sync = sub.add_parser("sync", help="sync images to the configured partners", epilog=EPILOG,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    sync.add_argument("--item", action="append", metavar="ID", help="only this product (repeatable)")
    sync.add_argument("--allow-empty", action="store_true",
                      help="with --item: send a product that has no image as an empty set, which deletes all "
                           "its images at TRAEDE (without it such a product is reported and not sent)")
    sync.add_argument("--dry-run", action="store_true",
                      help="print what would be sent (one JSON object per line, with working SAS URLs); "
                           "call no partner")
    sync.add_argument("--report", metavar="PATH",
                      help="also write the run report as JSON to PATH: counts, every problem, and what each "
                           "partner got per product (URLs without their signature)")
    sync.add_argument("--wait", metavar="SECONDS", type=float, default=DEFAULT_WAIT_SECONDS,
                      help="wait at most this long for another full sync (or a product's sender) to finish "
                           f"(default {DEFAULT_WAIT_SECONDS:g}; a crashed one's fence lapses within "
                           "FULL_SYNC_FENCE_SECONDS); then exit 75")
    sync.add_argument("--progress", metavar="SECONDS", type=float, default=10.0,
                      help="a progress line every SECONDS when stderr is not a terminal (default 10; 0: none)")
    flush = sub.add_parser("flush", help="send every pending product to TRAEDE now, without waiting for "
                                         "PRODUCT_SYNC_DELAY_SECONDS (uploads and deletes queue their product)")
    flush.add_argument("--list", action="store_true", help="only list the pending products; send nothing")
    flush.add_argument("--wait", metavar="SECONDS", type=float, default=DEFAULT_WAIT_SECONDS,
                       help=f"wait at most this long for a running full sync (default {DEFAULT_WAIT_SECONDS:g}); "
                            "then exit 75")
    sub.add_parser("doctor", help="check settings, storage, the layout, a SAS download and both partners' "
                                  "credentials; one line per check, exit 1 if any fails")
    _add_runs_parser(sub)
    return parser


def _add_runs_parser(sub: Any) -> None:
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


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        from . import doctor

        try:
            _configure_logging(Settings.from_env(env), stderr)
        except ConfigError:
            pass  # doctor's own first line names the bad setting
        return doctor.main(env, stdout)
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        print(redact.redact(f"configuration error: {exc}"), file=stderr)
        return EXIT_CONFIG
    _configure_logging(settings, stderr)
    if args.command == "sync":
        return _sync(args, settings, stdout, stderr)
    if args.command == "runs":
        return _runs(args, settings, stdout, stderr)
    return _flush(args, settings, stdout, stderr)


def _sync(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    problem = _path_problem("--report", args.report) or _option_problem(args)
    if problem:
        print(f"configuration error: {problem}", file=stderr)
        return EXIT_CONFIG
    try:
        check_container(settings.storage)
    except ConfigError as exc:
        print(redact.redact(f"configuration error: {exc}"), file=stderr)
        return EXIT_CONFIG
    except StorageUnreachable as exc:
        print(f"sync not started: {exc}", file=stderr)
        return EXIT_PROBLEMS
    dry_wallie = dry_traede = None
    if args.dry_run:
        batch = settings.wallie.batch_size if settings.wallie else 500
        # What each configured partner would get; with none configured yet, what both would get.
        both = not (settings.wallie or settings.traede)
        dry_wallie = DryRunOutput(Partner.WALLIE, batch, stdout) if settings.wallie or both else None
        dry_traede = DryRunOutput(Partner.TRAEDE, TraedeClient.batch_size, stdout) if settings.traede or both else None
    log.info("sync started: %s", settings.describe())

    def waiting(line: str) -> None:
        print(line, file=stderr, flush=True)

    stopper = Stopper()
    stopper.install()
    try:
        with Components(settings, stop=stopper.stop, wallie=dry_wallie, traede=dry_traede) as parts, \
                Recording(None if args.dry_run else parts.history, "cli-sync", want_ledger=bool(args.report)) as rec:
            report = rec.report = SyncReport(ledger=rec.ledger, context={
                "container": settings.storage.container, "partners": settings.partner_urls(),
                "storage": parts.service.url})
            # --item is a code a person typed: each folder that spells it (NFC, or NFD as a Mac names it)
            items = [folder for code in args.item for folder in parts.catalog.folders(code)] if args.item else None
            with _progress(report, args, stderr):
                stopper.on_abort(parts.abort)
                if args.dry_run:
                    parts.engine.full_sync(items, dry_run=True, empty_sets=args.allow_empty, report=report)
                elif items and parts.engine.traede:
                    parts.product_queue.sync_now(items, empty_sets=args.allow_empty, on_wait=waiting, report=report,
                                            wait_seconds=args.wait)
                else:
                    parts.product_queue.fenced("CLI sync", lambda fence: parts.engine.full_sync(
                        items, fence=fence, empty_sets=args.allow_empty, report=report),
                        wait_seconds=args.wait, on_wait=waiting)
            if stopper.stop.is_set():
                report.interrupted = stopper.stop.reason
            rec.keep_now()
            _print_report(report, stderr, settings.secrets())
            if args.report:
                write_report(args.report, report.to_dict(), report.ledger)
    except ConfigError as exc:
        print(redact.redact(f"configuration error: {exc}"), file=stderr)
        return EXIT_CONFIG
    except FullSyncBusy as exc:
        print(redact.redact(f"sync not done: {exc}", settings.secrets()), file=stderr)
        return EXIT_BUSY
    except ImageSyncError as exc:
        print(redact.redact(f"sync failed: {exc}", settings.secrets()), file=stderr)
        return EXIT_PROBLEMS
    finally:
        stopper.uninstall()
    if report.interrupted:
        return stopper.exit_code
    if report.nothing_fits:
        return EXIT_CONFIG
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _flush(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    if not args.wait >= 0:
        print(f"configuration error: --wait {args.wait:g}: expected a number of seconds >= 0", file=stderr)
        return EXIT_CONFIG
    try:
        with Components(settings) as parts:
            if args.list:
                pending = parts.product_queue.pending()
                for item, age in sorted(pending.items()):
                    print(f"{item}\tpending for {age:.0f} s", file=stdout)
                print(f"{len(pending)} products pending", file=stderr)
                return EXIT_OK
            with Recording(parts.history, "cli-flush", context={
                    "container": settings.storage.container, "partners": settings.partner_urls()}) as rec:
                report = rec.report = parts.product_queue.flush(
                    on_wait=lambda line: print(line, file=stderr, flush=True), ledger=rec.ledger,
                    wait_seconds=args.wait)
    except ConfigError as exc:
        print(redact.redact(f"configuration error: {exc}"), file=stderr)
        return EXIT_CONFIG
    except FullSyncBusy as exc:
        print(redact.redact(f"flush not done: {exc}"), file=stderr)
        return EXIT_BUSY
    except ImageSyncError as exc:
        print(redact.redact(f"flush failed: {exc}"), file=stderr)
        return EXIT_PROBLEMS
    _print_report(report, stderr, settings.secrets())
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _runs(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
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
        print(_printable(str(exc)), file=stderr)
        return EXIT_CONFIG
    except DamagedHistory as exc:
        print(_printable(redact.redact(str(exc))), file=stderr)
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
        print(_printable(redact.redact(line)), file=stderr)
    return EXIT_PROBLEMS if damage and code == EXIT_OK else code


def _printable(text: str) -> str:
    """A line for a terminal: control characters from a partner's answer or a blob name are shown escaped
    (``\x1b``), never sent to the operator's terminal as escape sequences."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


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
        return _path_problem("-o", args.output, "sheet.html")
    return None


def _list_runs(history: RunHistory, limit: int, kind: str | None, stdout: TextIO, stderr: TextIO) -> int:
    runs = history.recent(limit, kind=kind)
    for run in runs:
        print(_printable(redact.redact(run.line())), file=stdout)  # (metadata is anyone's to write)
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
        print(_printable(redact.redact(line)), file=stdout)
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
            print("  " + _printable(redact.redact(_entry_line(entry))), file=stdout)
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


def _write_sheet(history: RunHistory, service: Any, settings: Settings, args: argparse.Namespace, stdout: TextIO,
                 stderr: TextIO, damage: list[str]) -> int:
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


def _path_problem(option: str, path: str | None, example: str = "run.json") -> str | None:
    """An output file (``--report``, ``-o``) must be writable before the work starts: it is written after."""
    if not path:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"{option} {path}: is a folder; expected a file name, e.g. {os.path.join(path, example)}"
    if not os.path.isdir(folder):
        return f"{option} {path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return f"{option} {path}: not writable by this user"
    return None


def _option_problem(args: argparse.Namespace) -> str | None:
    if args.allow_empty and not args.item:
        return "--allow-empty only applies with --item (a full sync never sends a product without images)"
    if args.progress < 0:
        return f"--progress {args.progress:g}: expected a number of seconds >= 0"
    if not args.wait >= 0:
        return f"--wait {args.wait:g}: expected a number of seconds >= 0"
    return None


def _progress(report: SyncReport, args: argparse.Namespace, stderr: TextIO) -> Progress:
    """On a terminal: one line that keeps updating (twice a second). Elsewhere: a log line at INFO."""
    if args.dry_run or args.progress == 0:
        return Progress(report, lambda line: None, every=0)
    if stderr.isatty():
        lock = threading.Lock()

        def show(line: str) -> None:
            with lock:
                stderr.write("\r" + line + " " * 8)
                stderr.flush()

        return _Terminal(report, show, stderr)
    return Progress(report, lambda line: log.info("%s", line), every=args.progress)


class _Terminal(Progress):
    """Progress on a terminal: updates twice a second, ends its line when the run ends."""

    def __init__(self, report: SyncReport, show: Any, stream: TextIO):
        super().__init__(report, show, every=0.5)
        self.stream = stream
        self.report = report

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.emit(progress_line(self.report, 0.0).rsplit(";", 1)[0])
        self.stream.write("\n")


def _print_report(report: SyncReport, stderr: TextIO, secrets: Sequence[str] = ()) -> None:
    """One line per cause, then the summary. Printed, not logged: the log filter does not see these
    lines, so they are redacted here."""
    for line in report.grouped_lines() + [report.summary()]:
        print(_printable(redact.redact(line, secrets)), file=stderr)


def _configure_logging(settings: Settings, stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    redact.install(handler, settings.secrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("shared").setLevel(settings.log_level)
