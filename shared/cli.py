"""The operator CLI, ``image-sync`` (also ``python -m shared``): sync, flush and doctor.

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
from typing import Any, TextIO
from collections.abc import Mapping, Sequence

from . import redact
from .errors import ConfigError, ImageSyncError
from .factory import Components
from .ledger import Ledger, write_report
from .progress import Progress, progress_line
from .report import SyncReport
from .settings import Settings
from .stopping import Stopper
from .storage import StorageUnreachable, check_container
from .traede import TraedeClient
from .wallie import WallieClient

EXIT_OK, EXIT_PROBLEMS, EXIT_CONFIG = 0, 1, 2
log = logging.getLogger("shared.cli")

EPILOG = """\
exit codes:
  0    everything delivered
  1    a record was rejected or failed after retries, a product asked for by --item has no image,
       or storage could not be reached (each is named on stderr, one line per cause)
  2    configuration error: a setting or option is missing or wrong (the line names it), including a
       layout (IMAGE_PATH_PATTERN) that no image file fits
  130  stopped by Ctrl-C (SIGINT); 143 stopped by SIGTERM: the summary and --report name what was not sent

Settings come from the environment (see README, "Settings"). Examples:
  image-sync sync                      full sync to every configured partner
  image-sync sync --item 100001        one product (repeatable); its full set goes to TRAEDE
  image-sync sync --dry-run            print what would be sent (JSON lines on stdout); call no partner
  image-sync sync --report run.json    also write the run report (what each partner got) as JSON
  image-sync flush                     send every pending product (queued by uploads/deletes) now
  image-sync doctor                    check settings, storage, a SAS download and both partners
"""


class DryRunOutput:
    """Stands in for a partner client (same name, unit and batch size) and prints what would be sent, one
    JSON object per line: ``{"partner": ..., "record": ...}`` or ``{"partner": ..., "product": ...}``."""

    def __init__(self, like: Any, batch_size: int, out: TextIO):
        self.name = like.name
        self.unit = like.unit
        self.batch_size = batch_size
        self.out = out
        self._key = "product" if like.unit == "products" else "record"
        self._lock = threading.Lock()

    def send(self, payloads: list[dict[str, Any]], guard: Any = None) -> None:
        text = "".join(json.dumps({"partner": self.name, self._key: p}, ensure_ascii=False) + "\n"
                       for p in payloads)
        with self._lock:
            self.out.write(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image-sync", description="Sync product images from Azure Blob Storage to Wallie and TRAEDE.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sync,flush,doctor}")
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
    sync.add_argument("--progress", metavar="SECONDS", type=float, default=10.0,
                      help="a progress line every SECONDS when stderr is not a terminal (default 10; 0: none)")
    flush = sub.add_parser("flush", help="send every pending product to TRAEDE now, without waiting for "
                                         "PRODUCT_SYNC_DELAY_SECONDS (uploads and deletes queue their product)")
    flush.add_argument("--list", action="store_true", help="only list the pending products; send nothing")
    sub.add_parser("doctor", help="check settings, storage, the layout, a SAS download and both partners' "
                                  "credentials; one line per check, exit 1 if any fails")
    return parser


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
        print(f"configuration error: {exc}", file=stderr)
        return EXIT_CONFIG
    _configure_logging(settings, stderr)
    if args.command == "sync":
        return _sync(args, settings, stdout, stderr)
    return _flush(args, settings, stdout, stderr)


def _sync(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    problem = _report_path_problem(args.report) or _option_problem(args)
    if problem:
        print(f"configuration error: {problem}", file=stderr)
        return EXIT_CONFIG
    try:
        check_container(settings.storage)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=stderr)
        return EXIT_CONFIG
    except StorageUnreachable as exc:
        print(f"sync not started: {exc}", file=stderr)
        return EXIT_PROBLEMS
    dry_wallie = dry_traede = None
    if args.dry_run:
        batch = settings.wallie.batch_size if settings.wallie else 500
        # What each configured partner would get; with none configured yet, what both would get.
        both = not (settings.wallie or settings.traede)
        dry_wallie = DryRunOutput(WallieClient, batch, stdout) if settings.wallie or both else None
        dry_traede = DryRunOutput(TraedeClient, TraedeClient.batch_size, stdout) if settings.traede or both else None
    report = SyncReport(ledger=Ledger() if args.report else None,
                        context={"container": settings.storage.container, "partners": settings.partner_urls()})
    log.info("sync started: %s", settings.describe())

    def waiting(line: str) -> None:
        print(line, file=stderr, flush=True)

    stopper = Stopper()
    stopper.install()
    try:
        with Components(settings, stop=stopper.stop, wallie=dry_wallie, traede=dry_traede) as parts, \
                _progress(report, args, stderr):
            stopper.on_abort(parts.abort)
            report.context["storage"] = parts.service.url
            if args.dry_run:
                parts.engine.full_sync(args.item, dry_run=True, empty_sets=args.allow_empty, report=report)
            elif args.item and parts.engine.traede:
                parts.products.sync_now(args.item, empty_sets=args.allow_empty, on_wait=waiting, report=report)
            else:
                parts.products.fenced("CLI sync", lambda withhold, track: parts.engine.full_sync(
                    args.item, withhold=withhold, track=track, empty_sets=args.allow_empty, report=report),
                    wait_seconds=float("inf"), on_wait=waiting)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=stderr)
        return EXIT_CONFIG
    except ImageSyncError as exc:
        print(redact.redact(f"sync failed: {exc}", settings.secrets()), file=stderr)
        return EXIT_PROBLEMS
    finally:
        stopper.uninstall()
    if stopper.stop.is_set():
        report.interrupted = stopper.stop.reason
    _print_report(report, stderr, settings.secrets())
    if args.report:
        try:
            write_report(args.report, report.to_dict(), report.ledger)
        finally:
            report.ledger.close()
    if report.interrupted:
        return stopper.exit_code
    if report.nothing_fits:
        return EXIT_CONFIG
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _flush(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    try:
        with Components(settings) as parts:
            if args.list:
                pending = parts.products.pending()
                for item, age in sorted(pending.items()):
                    print(f"{item}\tpending for {age:.0f} s", file=stdout)
                print(f"{len(pending)} products pending", file=stderr)
                return EXIT_OK
            report = parts.products.flush(on_wait=lambda line: print(line, file=stderr, flush=True))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=stderr)
        return EXIT_CONFIG
    except ImageSyncError as exc:
        print(redact.redact(f"flush failed: {exc}"), file=stderr)
        return EXIT_PROBLEMS
    _print_report(report, stderr, settings.secrets())
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _report_path_problem(path: str | None) -> str | None:
    """``--report`` must be writable before the sync starts: its file is written after the work is done."""
    if not path:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"--report {path}: is a folder; expected a file name, e.g. {os.path.join(path, 'run.json')}"
    if not os.path.isdir(folder):
        return f"--report {path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return f"--report {path}: not writable by this user"
    return None


def _option_problem(args: argparse.Namespace) -> str | None:
    if args.allow_empty and not args.item:
        return "--allow-empty only applies with --item (a full sync never sends a product without images)"
    if args.progress < 0:
        return f"--progress {args.progress:g}: expected a number of seconds >= 0"
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
        print(redact.redact(line, secrets), file=stderr)


def _configure_logging(settings: Settings, stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    redact.install(handler, settings.secrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("shared").setLevel(settings.log_level)
